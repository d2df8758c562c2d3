"""A trained recogniser, from a run folder (its Keras model, TensorFlow) or from an exported
bundle (its runtime, no TensorFlow): what `predict` and `detect` use of either."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gesture_cache.common.errors import ConfigError
from gesture_cache.data.windows import Window
from gesture_cache.deploy.bundle import BundleClassifier, bundle_extractor, is_bundle, open_bundle
from gesture_cache.train.run_folder import (
    check_weights,
    load_best_model,
    read_run_config,
    run_file,
)

RUNTIMES = ("keras", "onnxruntime", "openvino", "litert")


@dataclass
class Trained:
    classify: Callable[[np.ndarray, np.ndarray], np.ndarray]  # windows, masks -> probabilities
    classes: list[str]
    window: Window | None  # None: a schema-1 run, whose windows are each video's fixed clips
    dtype: str  # features are rounded to the cache's storage type, as training saw them
    background_label: str | None  # None: trained without a background class
    background_asked: bool  # trained with --background (a run of an old version may lack it)
    extractor: object | None  # extractor.Extractor: the cache's features from video
    fingerprint: str  # the cache's extractor
    clip_len: int  # frames a clip spans
    inputs: list[Path]  # the files it was read from, which no output may replace
    source: str  # "run" or "bundle"


def load_trained(
    path: str | Path,
    *,
    weights: str | None = None,
    random_weights: int | None = None,
    files: dict | None = None,
    runtime: str | None = None,
    with_extractor: bool = True,
    allow_other_weights: bool = False,
    overridable: bool = False,
    backend: str | None = None,
) -> Trained:
    """A run folder or a bundle, checked: a run's weights and other files (`files`: a
    backbone's file options, C3D's mean cube) must be the cache's (by sha256; `overridable`:
    the command offers --allow-other-weights); a bundle's files must match its manifest and
    it carries its own backbone.
    `runtime`: keras for a run folder; onnxruntime (default), openvino or litert for a
    bundle. `backend`: the Keras backend of a run folder's model and C3D."""
    from gesture_cache.backbones.keras_backends import use_backend
    from gesture_cache.extract.extractor import extractor_from_spec

    path = Path(path)
    if runtime is not None and runtime not in RUNTIMES:
        raise ConfigError(f"--runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    if is_bundle(path):
        runtime = runtime or "onnxruntime"
        if runtime == "keras":
            raise ConfigError(f"{path} is a bundle: --runtime onnxruntime, openvino or litert")
        if backend:
            raise ConfigError(f"bundle {path} runs on --runtime {runtime}; drop --backend")
        given = [
            name
            for name, value in (("--weights", weights), ("--random-weights", random_weights))
            if value is not None
        ] + ["--" + name.replace("_", "-") for name in files or {}]
        if given:
            raise ConfigError(f"bundle {path} carries its own backbone; drop {', '.join(given)}")
        found = open_bundle(path)
        manifest = found.manifest
        return Trained(
            classify=BundleClassifier(found, runtime),
            classes=manifest["classes"],
            window=found.window,
            dtype=manifest["feature_dtype"],
            background_label=manifest["background_label"],
            background_asked=manifest["background_label"] is not None,
            extractor=bundle_extractor(found, runtime) if with_extractor else None,
            fingerprint=manifest["fingerprint"],
            clip_len=manifest["clip_len"],
            inputs=[path / name for a in manifest["artifacts"] for name in a["files"]],
            source="bundle",
        )
    if runtime not in (None, "keras"):
        raise ConfigError(f"--runtime {runtime} runs an exported bundle; {path} is a run folder")
    saved = read_run_config(path)
    recorded = saved["extractor"].get("backend")  # a reduced-precision cache's backend
    use_backend(backend or (recorded if with_extractor else None))
    extractor = None
    if with_extractor:
        spec, names = saved["extractor"], saved.get("files", {})
        check_weights(spec, names, weights, random_weights, allow_other_weights, overridable)
        extractor = extractor_from_spec(
            spec, weights=weights, random_seed=random_weights, files=files, backend=backend
        )
    model = load_best_model(path)
    hparams = saved["hparams"]
    classes = saved.get("classes", saved["cache"]["classes"])
    background = hparams["background_label"] if hparams.get("background") else None
    return Trained(
        classify=batched(model),
        classes=classes,
        window=Window(**saved["window"]) if "window" in saved else None,
        dtype=saved["cache"]["dtype"],
        background_label=background if background in classes else None,
        background_asked=background is not None,
        extractor=extractor,
        fingerprint=saved["cache"]["fingerprint"],
        clip_len=saved["extractor"]["clip_len"],
        inputs=[run_file(path, n) for n in ("config.json", "model.keras")],
        source="run",
    )


def batched(model, batch_size: int = 256) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The model on windows and masks, `batch_size` at a time. `predict_on_batch`, not
    `predict`: live detection classifies one window a frame, and `predict` spends 45 ms on
    each call around a model that takes 1 ms (measured on a hands run)."""

    def classify(windows: np.ndarray, masks: np.ndarray) -> np.ndarray:
        parts = [
            np.asarray(
                model.predict_on_batch([windows[i : i + batch_size], masks[i : i + batch_size]])
            )
            for i in range(0, len(windows), batch_size)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, model.output_shape[-1]), np.float32)

    return classify
