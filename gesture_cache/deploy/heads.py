"""The head of a bundle in each format (LiteRT, ONNX, OpenVINO, SavedModel), each checked
against Keras on windows of the run's own test split before it is written."""

from __future__ import annotations

import logging
import signal
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gesture_cache.common.errors import GestureCacheError, RunError
from gesture_cache.deploy import bundle
from gesture_cache.deploy.litert_head import export_litert_head
from gesture_cache.deploy.parity import (
    HEAD_BOUND,
    PARITY_WINDOWS,
    QUANTIZED_AGREEMENT,
    artifact_entry,
)
from gesture_cache.train.run_folder import (
    check_same_cache,
    read_split,
)

log = logging.getLogger(__name__)


def parity_windows(run_dir: Path, saved: dict, cache_path) -> tuple[np.ndarray, np.ndarray]:
    """Windows of the run's own test split as training read them (stored precision, uniform
    placement), and the same windows with half of each mask padded."""
    from gesture_cache.cache.verify import load_verified_cache
    from gesture_cache.data.samples import batch_windows, cache_samples
    from gesture_cache.data.windows import Window

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

    from gesture_cache.deploy.onnx_head import head_graph

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
