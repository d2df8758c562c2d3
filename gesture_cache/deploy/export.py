"""`gesture-cache export RUN --out DIR`: a trained run as a bundle that runs without
TensorFlow (see `bundle.py` for its layout), each artifact checked against Keras in its own
runtime before it is written.

import logging
Parity, measured at export and recorded in the manifest:
- heads: float32 probabilities within HEAD_BOUND of Keras on windows of the run's own test
  split, one at a time and as one batch, with their masks and with half of each mask padded;
  a quantized head must agree with Keras on the top class for QUANTIZED_AGREEMENT of them;
- backbones: features within BACKBONE_BOUND (relative to the largest feature) of Keras on
  the frames of a synthetic gesture video, decoded and resized as the cache's were.
An artifact that misses its bound fails the export with the numbers; nothing is written.
"""

from __future__ import annotations

import logging
from pathlib import Path

from gesture_cache import __version__
from gesture_cache.common.errors import ConfigError, RunError
from gesture_cache.common.files import built_beside, refuse_inputs, refuse_link, write_json
from gesture_cache.common.versions import installed_versions
from gesture_cache.deploy import bundle
from gesture_cache.deploy.backbone_export import backbone_of, export_backbones
from gesture_cache.deploy.heads import HeldInterrupts, export_heads, parity_windows
from gesture_cache.train.run_folder import (
    check_weights,
    load_best_model,
    read_run_config,
)

log = logging.getLogger(__name__)


FORMATS = ("litert", "onnx", "openvino", "saved_model")


QUANTIZE = ("float16", "int8")


# the heads each quantization is done for (dynamic range); backbones stay float32
QUANTIZED_FORMATS = {"int8": ("onnx", "litert"), "float16": ("litert",)}


MODULES = {"litert": "ai_edge_litert", "onnx": "onnxruntime", "openvino": "openvino"}


def installed_formats() -> list[str]:
    """The formats whose runtime (and converter) is installed here."""
    import importlib.util

    found = [f for f, m in MODULES.items() if importlib.util.find_spec(m)]
    if "onnx" in found and not importlib.util.find_spec("onnx"):
        found.remove("onnx")
    return sorted({*found, "saved_model"} & set(FORMATS), key=FORMATS.index)


def parse_formats(text: str | None, quantize: str | None = None) -> list[str]:
    """The formats `--format` names (default: every installed one, or with `--quantize`
    those of them whose head it quantizes); a format the quantization does not apply to is
    refused, never exported at another precision than the manifest would say."""
    if quantize is not None and quantize not in QUANTIZE:
        raise ConfigError(f"--quantize {quantize!r}: choose float16 or int8")
    quantized = QUANTIZED_FORMATS[quantize] if quantize else FORMATS
    if text is None:
        formats = [f for f in installed_formats() if f in quantized]
        if not formats:
            raise ConfigError(
                f"--quantize {quantize} applies to the {' and '.join(quantized)} heads, and no "
                "runtime for them is installed: pip install ai-edge-litert"
            )
        return formats
    formats = [f.strip() for f in text.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ConfigError(f"--format {text!r}: choose from {', '.join(FORMATS)}")
    missing = [f for f in formats if f not in installed_formats()]
    if missing:
        packages = {"litert": "ai-edge-litert", "onnx": "onnx onnxruntime", "openvino": "openvino"}
        need = " ".join(packages[f] for f in missing)
        raise ConfigError(
            f"--format {','.join(missing)} needs its runtime: pip install {need} "
            "(or pip install 'gesture_cache[export]')"
        )
    if "openvino" in formats and "onnx" not in installed_formats():
        raise ConfigError("--format openvino is converted from ONNX: pip install onnx onnxruntime")
    unquantized = [f for f in formats if f not in quantized]
    if unquantized:
        raise ConfigError(
            f"--quantize {quantize} applies to the {' and '.join(quantized)} heads, not to "
            f"{', '.join(unquantized)}: drop {', '.join(unquantized)} from --format (or export "
            "them in a bundle of their own without --quantize)"
        )
    return formats


def export_run(
    run_dir: str | Path,
    out: str | Path,
    formats: list[str] | None = None,
    quantize: str | None = None,
    weights: str | None = None,
    random_weights: int | None = None,
    files: dict | None = None,
    cache_path: str | Path | None = None,
) -> dict:
    """Write the bundle of a finished run into the new folder `out`; returns its manifest."""
    run_dir, out = Path(run_dir), Path(out)
    formats = parse_formats(",".join(formats) if formats else None, quantize)
    refuse_link(out, "--out")
    if out.exists():
        raise ConfigError(f"--out {out} already exists; give a new folder (nothing was written)")
    saved = read_run_config(run_dir)
    refuse_inputs([out], [Path(cache_path or saved["cache"]["path"])])  # a folder it reads
    if saved.get("status") != "finished":
        raise RunError(
            f"run {run_dir} is {saved.get('status', 'incomplete')}, not finished; "
            "finish it (train --resume) before exporting"
        )
    if saved.get("package_version") != __version__:
        log.warning("run %s was trained by gesture_cache %s", run_dir, saved.get("package_version"))
    spec = saved["extractor"]
    check_weights(spec, saved.get("files", {}), weights, random_weights, allow_other=False)
    if spec["sampling"] != "dense":
        raise RunError(f"run {run_dir} was trained on fixed clips; a bundle streams dense clips")
    model = load_best_model(run_dir)
    windows, masks = parity_windows(run_dir, saved, cache_path)
    reference = model.predict([windows, masks], verbose=0, batch_size=64)

    with built_beside(out, "bundle") as building, HeldInterrupts() as interrupts:
        artifacts = export_heads(
            model, building, formats, quantize, windows, masks, reference, interrupts.step
        )
        backbone = backbone_of(spec, weights, random_weights, files or {})
        artifacts += export_backbones(backbone, building, formats, interrupts.step)
        manifest = bundle_manifest(saved, run_dir, artifacts, quantize)
        write_json(building / bundle.MANIFEST, manifest)
    return manifest


def bundle_manifest(saved: dict, run_dir: Path, artifacts: list, quantize: str | None) -> dict:
    from gesture_cache.deploy.settings import DetectSettings

    hparams, spec = saved["hparams"], saved["extractor"]
    detector = bool(hparams.get("background")) and saved["window"].get("step") is not None
    pre = spec["preprocessing"]
    return {
        "format": bundle.FORMAT,
        "version": bundle.VERSION,
        "created_by": {"gesture_cache": __version__, **installed_versions(*BUNDLE_SOFTWARE)},
        "run": {"path": str(run_dir.resolve()), "package_version": saved.get("package_version")},
        "classes": saved["classes"],
        "background_label": hparams["background_label"] if hparams.get("background") else None,
        "detector": detector,
        "detection": DetectSettings().__dict__ if detector else None,
        "window": saved["window"],
        "clip_len": spec["clip_len"],
        "clip_stride": spec["clip_stride"],
        "frames": {
            "layout": "uint8 BGR (N, clip_len, height, width, 3)"
            if pre["resize"]
            else "uint8 BGR frames as decoded, one at a time (the backbone's models run on them)",
            "frame_size": pre["resize"],
            "resize_interpolation": pre["interpolation"],
            "crop_inside": pre["crop"],
        },
        "feature_dim": saved["cache"]["feature_dim"],
        "feature_dtype": saved["cache"]["dtype"],
        # the feature layout is the extractor's (hands: spec["layout"], 1 when absent); the
        # groups the model reads are chosen inside it (a fixed selection layer)
        "feature_groups": hparams.get("features"),
        "extractor": spec,
        "fingerprint": saved["cache"]["fingerprint"],
        "weights": spec["weights"],
        "quantize": quantize,
        "artifacts": artifacts,
    }


# What a bundle records the version of: the libraries it was exported and checked with.
BUNDLE_SOFTWARE = (
    "numpy", "opencv-python-headless", "onnx", "onnxruntime", "openvino", "ai-edge-litert",
    "tensorflow", "keras",
)  # fmt: skip


def summary(manifest: dict) -> str:
    """One line per artifact with its parity figures, for the command's output."""
    lines = []
    for a in manifest["artifacts"]:
        p = a["parity"]
        if "max_relative_difference" in p:
            figure = (
                f"max relative difference {p['max_relative_difference']:.2g} (bound {p['bound']:g})"
            )
        elif "bound" in p:
            figure = f"max difference {p['max_abs_difference']:.2g} (bound {p['bound']:g})"
        elif p.get("same_files"):
            figure = "the cache's own model files (sha256 as in its fingerprint)"
        else:
            agreement, bound = p["top_class_agreement"], p["bound_agreement"]
            figure = f"top class agrees on {agreement:.1%} (bound {bound:.0%})"
        lines.append(
            f"{a['role']:<9} {a['format']:<12} {a['precision']:<8} {a['main']:<18} {figure}"
        )
    return "\n".join(lines)
