"""`gesture-cache export RUN --out DIR`: a trained run as a bundle that runs without
TensorFlow (see `bundle.py` for its layout), each artifact checked against Keras in its own
runtime before it is written.

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
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np

from gesture_cache import __version__, bundle
from gesture_cache.errors import ConfigError, GestureCacheError, RunError
from gesture_cache.files import built_beside, refuse_inputs, refuse_link, write_json
from gesture_cache.run import (
    check_mean_file,
    check_same_cache,
    check_weights,
    load_best_model,
    read_run_config,
    read_split,
)

log = logging.getLogger(__name__)
FORMATS = ("litert", "onnx", "openvino", "saved_model")
QUANTIZE = ("float16", "int8")
# the heads each quantization is done for (dynamic range); backbones stay float32
QUANTIZED_FORMATS = {"int8": ("onnx", "litert"), "float16": ("litert",)}
HEAD_BOUND = 1e-5
BACKBONE_BOUND = 1e-4
QUANTIZED_AGREEMENT = 0.98
PARITY_WINDOWS = 128
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
    mean_file: str | None = None,
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
    spec, files = saved["extractor"], saved.get("files", {})
    check_weights(spec, files, weights, random_weights, allow_other=False)
    check_mean_file(spec["preprocessing"], files, mean_file)
    if spec["sampling"] != "dense":
        raise RunError(f"run {run_dir} was trained on fixed clips; a bundle streams dense clips")
    model = load_best_model(run_dir)
    windows, masks = parity_windows(run_dir, saved, cache_path)
    reference = model.predict([windows, masks], verbose=0, batch_size=64)

    with built_beside(out, "bundle") as building, HeldInterrupts() as interrupts:
        artifacts = export_heads(
            model, building, formats, quantize, windows, masks, reference, interrupts.step
        )
        backbone = backbone_of(spec, weights, random_weights, mean_file)
        artifacts += export_backbones(backbone, building, formats, interrupts.step)
        manifest = bundle_manifest(saved, run_dir, artifacts, quantize)
        write_json(building / bundle.MANIFEST, manifest)
    return manifest


def parity_windows(run_dir: Path, saved: dict, cache_path) -> tuple[np.ndarray, np.ndarray]:
    """Windows of the run's own test split as training read them (stored precision, uniform
    placement), and the same windows with half of each mask padded."""
    from gesture_cache.data import batch_windows, cache_samples
    from gesture_cache.integrity import load_verified_cache
    from gesture_cache.windows import Window

    path = cache_path or saved["cache"]["path"]
    try:
        cache = load_verified_cache(path, 1e12)
    except GestureCacheError as error:
        raise RunError(
            f"export checks parity on the run's test windows, read from its cache: {error} "
            "(give the cache with --cache)"
        ) from None
    check_same_cache(cache, path, saved)
    hparams = saved["hparams"]
    samples = cache_samples(cache, hparams["background"], hparams["background_label"])
    split = read_split(run_dir, samples)
    rows = np.flatnonzero(split == "test") if (split == "test").any() else np.arange(len(split))
    rows = rows[:PARITY_WINDOWS]
    window = Window(**{**saved["window"], "sampling": "uniform"})
    positions, mask = batch_windows(samples.take(rows), cache.clip_valid, window)
    features = cache.features[positions].astype(np.float32)
    half = mask.copy()
    for row in half:
        valid = int(row.sum())
        row[max(valid // 2, 1) :] = False
    return np.concatenate([features, features]), np.concatenate([mask, half])


# --- heads --------------------------------------------------------------------------------


def head_cell(model) -> str:
    return "gru" if any(layer.name.startswith("bigru_") for layer in model.layers) else "lstm"


class HeldInterrupts:
    """Ctrl-C held until the artifact being converted is done, then the export stops (and
    leaves nothing). A signal arriving inside the converters' native code crashed the
    process with SIGSEGV (measured, during the backbone's conversion), leaving the
    half-built folder behind: so SIGINT is blocked in this thread (and in the threads the
    runtimes start from it) and only noted, by whichever thread receives it."""

    def __init__(self):
        self.asked, self.previous = False, None

    def __enter__(self) -> HeldInterrupts:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._hold)
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        return self

    def _hold(self, *_) -> None:
        self.asked = True

    def step(self) -> None:
        if self.asked:
            raise KeyboardInterrupt

    def __exit__(self, exc_type, *_) -> None:
        if self.previous is None:
            return
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # a pending one runs _hold
        signal.signal(signal.SIGINT, self.previous)
        if self.asked and exc_type is None:
            raise KeyboardInterrupt


def export_heads(
    model, folder: Path, formats, quantize, windows, masks, reference, step: Callable
) -> list:
    import onnx

    from gesture_cache.onnx_graphs import head_graph

    artifacts = []
    graph = head_graph(model, head_cell(model)) if {"onnx", "openvino"} & set(formats) else None
    if "onnx" in formats:
        onnx.save(graph, folder / "head.onnx")
        if quantize == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            float_head = folder / ".head.float32.onnx"
            (folder / "head.onnx").rename(float_head)
            quantize_dynamic(
                str(float_head), str(folder / "head.onnx"), weight_type=QuantType.QInt8
            )
            float_head.unlink()
        precision = "int8" if quantize == "int8" else "float32"
        artifacts.append(
            checked_head(folder, "onnx", "head.onnx", precision, windows, masks, reference)
        )
        step()
    if "openvino" in formats:
        import openvino

        with tempfile.TemporaryDirectory() as scratch:
            onnx.save(graph, Path(scratch) / "head.onnx")
            converted = openvino.convert_model(str(Path(scratch) / "head.onnx"))
        openvino.save_model(converted, str(folder / "head.xml"), compress_to_fp16=False)
        artifacts.append(
            checked_head(folder, "openvino", "head.xml", "float32", windows, masks, reference)
        )
        step()
    if "litert" in formats:
        export_litert_head(model, folder / "head.tflite", quantize)
        precision = quantize or "float32"
        artifacts.append(
            checked_head(folder, "litert", "head.tflite", precision, windows, masks, reference)
        )
        step()
    if "saved_model" in formats:
        model.export(str(folder / "head_saved_model"), format="tf_saved_model", verbose=False)
        artifacts.append(
            checked_head(
                folder, "saved_model", "head_saved_model", "float32", windows, masks, reference
            )
        )
        step()
    return artifacts


def export_litert_head(model, path: Path, quantize: str | None) -> None:
    """The head rebuilt unrolled (same weights): the rolled LSTM converts to Flex
    TensorList ops that neither LiteRT nor TensorFlow >= 2.20 can run. Builtin operators
    only: a model that would need Flex fails here instead of shipping."""
    import tensorflow as tf

    from gesture_cache.model import build_classifier

    names = {layer.name: layer for layer in model.layers}
    recurrent = [layer for layer in model.layers if layer.name.startswith("bi")]
    dense = names["dense"].units if "dense" in names else 0
    standardize = names.get("standardize")
    unrolled = build_classifier(
        "compact",
        model.outputs[0].shape[-1],
        tuple(model.inputs[0].shape[1:]),
        units=tuple(layer.forward_layer.units for layer in recurrent),
        cell=head_cell(model),
        dense=dense,
        dropout=0.0,
        mean=None if standardize is None else np.asarray(standardize.mean).reshape(-1),
        variance=None if standardize is None else np.asarray(standardize.variance).reshape(-1),
        unroll=True,
        projection=tuple(names["reduce"].get_weights()) if "reduce" in names else None,
    )
    unrolled.set_weights(model.get_weights())
    target = {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}
    options = {}
    if quantize:
        options["optimizations"] = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        target["supported_types"] = [tf.float16]
    try:
        unrolled.export(str(path), format="litert", verbose=False, target_spec=target, **options)
    except Exception as error:  # noqa: BLE001 - the converter raises its own kinds
        raise RunError(
            f"the LiteRT head does not convert with builtin operators only: "
            f"{str(error).splitlines()[0][:300]}"
        ) from None


def head_outputs(folder: Path, fmt: str, name: str, windows, masks, batch: int) -> np.ndarray:
    """The artifact's probabilities in its own runtime, `batch` windows at a time."""
    if fmt == "saved_model":
        import tensorflow as tf

        loaded = tf.saved_model.load(str(folder / name))  # kept: it owns the variables
        run = lambda f, m: loaded.serve([tf.constant(f), tf.constant(m)]).numpy()  # noqa: E731
    else:
        session = bundle.Session(folder / name, fmt, "head")
        run = lambda f, m: session.run({"features": f, "mask": m})  # noqa: E731
    parts = [
        run(windows[i : i + batch], masks[i : i + batch]) for i in range(0, len(windows), batch)
    ]
    return np.concatenate(parts)


def checked_head(folder, fmt, name, precision, windows, masks, reference) -> dict:
    one = min(8, len(windows))  # batch 1 on a few windows, then every window as one batch
    singles = head_outputs(folder, fmt, name, windows[:one], masks[:one], 1)
    batched = head_outputs(folder, fmt, name, windows, masks, len(windows))
    difference = float(
        max(np.abs(singles - reference[:one]).max(), np.abs(batched - reference).max())
    )
    agreement = float((batched.argmax(1) == reference.argmax(1)).mean())
    parity = {
        "windows": len(windows),
        "max_abs_difference": difference,
        "top_class_agreement": agreement,
    }
    if precision == "float32":
        parity["bound"] = HEAD_BOUND
        ok = difference <= HEAD_BOUND
    else:
        parity["bound_agreement"] = QUANTIZED_AGREEMENT
        ok = agreement >= QUANTIZED_AGREEMENT
    if not ok:
        raise RunError(
            f"the {fmt} head ({precision}) misses its parity bound on {len(windows)} test "
            f"windows: max difference {difference:.3g}, top class agrees on {agreement:.1%}"
        )
    log.info(
        "head %s %s: max difference %.2g, top class %.1f%%",
        fmt,
        precision,
        difference,
        100 * agreement,
    )
    return artifact_entry(folder, "head", fmt, name, precision, parity)


# --- backbones ----------------------------------------------------------------------------


def backbone_of(spec: dict, weights, random_weights, mean_file):
    from gesture_cache.extractor import extractor_from_spec

    return extractor_from_spec(spec, weights, random_weights, mean_file).backbone


def parity_clips(backbone) -> np.ndarray:
    """Two clips of a synthetic gesture video, decoded and resized as the cache's frames were
    (not cropped: the crop is inside the bundle's graph)."""
    from dataclasses import replace

    from gesture_cache import synth
    from gesture_cache.clips import stream_clips
    from gesture_cache.video import Frames

    width, height = backbone.preprocessing.resize
    resize_only = replace(backbone.preprocessing, crop=(0, height, 0, width))
    with tempfile.TemporaryDirectory() as scratch:
        video = Path(scratch) / "gesture.avi"
        synth.write_video(video, "Shake_Hand", np.random.default_rng(0))
        clips = [clip for _, clip in stream_clips(Frames(video, resize_only), 8)][:2]
    return np.stack(clips)


def export_backbones(backbone, folder: Path, formats, step: Callable) -> list:
    import onnx

    from gesture_cache.c3d import POOL5_PADDING, feature_extractor
    from gesture_cache.onnx_graphs import c3d_graph

    if not {"onnx", "openvino"} & set(formats):
        return []
    if backbone.precision != "float32":
        log.warning(
            "the cache's C3D ran in %s; the bundle's backbone computes in float32",
            backbone.precision,
        )
    network = backbone.network("float32")
    cube = backbone.mean_cube()
    pre = backbone.preprocessing
    mean = cube if cube is not None else np.asarray(pre.mean_bgr or (0, 0, 0), np.float32)
    graph = c3d_graph(
        network, backbone.layer, pre.resize, pre.crop, mean, pre.scale,
        POOL5_PADDING[backbone.pool5_pad], backbone.clip_len,
    )  # fmt: skip
    clips = parity_clips(backbone)
    r0, r1, c0, c1 = pre.crop
    keras_model = feature_extractor(network, backbone.layer, pre, cube)
    reference = keras_model.predict(clips[:, :, r0:r1, c0:c1], verbose=0)
    artifacts = []
    with tempfile.TemporaryDirectory() as scratch:
        onnx_path = Path(scratch) / "backbone.onnx"
        onnx.save(graph, onnx_path)
        del graph
        if "onnx" in formats:
            shutil.copyfile(onnx_path, folder / "backbone.onnx")
            artifacts.append(checked_backbone(folder, "onnx", "backbone.onnx", clips, reference))
            step()
        if "openvino" in formats:
            import openvino

            converted = openvino.convert_model(str(onnx_path))
            openvino.save_model(converted, str(folder / "backbone.xml"), compress_to_fp16=False)
            artifacts.append(checked_backbone(folder, "openvino", "backbone.xml", clips, reference))
            step()
    return artifacts


def checked_backbone(folder: Path, fmt: str, name: str, clips, reference) -> dict:
    session = bundle.Session(folder / name, fmt, "backbone")
    singles = np.concatenate([session.run({"frames": clips[i : i + 1]}) for i in range(len(clips))])
    batched = session.run({"frames": clips})
    scale = float(np.abs(reference).max()) or 1.0
    difference = float(max(np.abs(singles - reference).max(), np.abs(batched - reference).max()))
    relative = difference / scale
    parity = {"clips": len(clips), "max_relative_difference": relative, "bound": BACKBONE_BOUND}
    if relative > BACKBONE_BOUND:
        raise RunError(
            f"the {fmt} backbone misses its parity bound on {len(clips)} clips: max difference "
            f"{relative:.3g} of the largest feature (bound {BACKBONE_BOUND})"
        )
    log.info("backbone %s: max relative difference %.2g", fmt, relative)
    return artifact_entry(folder, "backbone", fmt, name, "float32", parity)


# --- the manifest -------------------------------------------------------------------------


def artifact_entry(
    folder: Path, role: str, fmt: str, main: str, precision: str, parity: dict
) -> dict:
    names = [main, main.removesuffix(".xml") + ".bin"] if main.endswith(".xml") else [main]
    return {
        "role": role,
        "format": fmt,
        "precision": precision,
        "main": main,
        "files": {n: bundle.entry_sha256(folder / n) for n in names},
        "parity": parity,
    }


def bundle_manifest(saved: dict, run_dir: Path, artifacts: list, quantize: str | None) -> dict:
    from gesture_cache.config import DetectSettings

    hparams, spec = saved["hparams"], saved["extractor"]
    detector = bool(hparams.get("background")) and saved["window"].get("step") is not None
    pre = spec["preprocessing"]
    return {
        "format": bundle.FORMAT,
        "version": bundle.VERSION,
        "created_by": software_versions(),
        "run": {"path": str(run_dir.resolve()), "package_version": saved.get("package_version")},
        "classes": saved["classes"],
        "background_label": hparams["background_label"] if hparams.get("background") else None,
        "detector": detector,
        "detection": DetectSettings().__dict__ if detector else None,
        "window": saved["window"],
        "clip_len": spec["clip_len"],
        "clip_stride": spec["clip_stride"],
        "frames": {
            "layout": "uint8 BGR (N, clip_len, height, width, 3)",
            "frame_size": pre["resize"],
            "resize_interpolation": pre["interpolation"],
            "crop_inside": pre["crop"],
        },
        "feature_dim": saved["cache"]["feature_dim"],
        "feature_dtype": saved["cache"]["dtype"],
        "extractor": spec,
        "fingerprint": saved["cache"]["fingerprint"],
        "weights": spec["weights"],
        "quantize": quantize,
        "artifacts": artifacts,
    }


def software_versions() -> dict:
    names = (
        "numpy",
        "opencv-python-headless",
        "onnx",
        "onnxruntime",
        "openvino",
        "ai-edge-litert",
        "tensorflow",
        "keras",
    )
    versions = {"gesture_cache": __version__}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


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
        else:
            agreement, bound = p["top_class_agreement"], p["bound_agreement"]
            figure = f"top class agrees on {agreement:.1%} (bound {bound:.0%})"
        lines.append(
            f"{a['role']:<9} {a['format']:<12} {a['precision']:<8} {a['main']:<18} {figure}"
        )
    return "\n".join(lines)
