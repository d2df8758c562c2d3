"""Exported bundles vs. Keras on this CPU: ms per clip for the backbone, ms per window for the
head (a batch of 64, and one at a time as live detection calls it) and the detection
real-time factor at 30 fps, per runtime and precision, measured in one run.

    python benchmarks/export.py [--quick]

A small detection run is trained on synthetic recordings (speed, not accuracy, is measured)
and exported: float32 in every format, and with --quantize int8 for the ONNX and the LiteRT
head, each on its own (an int8 head that misses its parity bound is reported, not timed).
Only the heads of the int8 bundles are timed. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from gesture_cache.common.errors import RunError
from gesture_cache.deploy.bundle import (
    BundleBackbone,
    BundleClassifier,
    bundle_extractor,
    open_bundle,
)
from gesture_cache.deploy.export import export_run
from gesture_cache.deploy.settings import DetectSettings
from gesture_cache.deploy.trained import load_trained
from gesture_cache.detect.detector import detect_offline, detector_of, load_detector
from gesture_cache.extract.config import ExtractConfig
from gesture_cache.extract.extraction import build_cache
from gesture_cache.extract.extractor import extractor_from_spec
from gesture_cache.sources import synth
from gesture_cache.train.config import TrainConfig
from gesture_cache.train.fit import train
from gesture_cache.train.run_folder import load_best_model, read_run_config

FPS = 30.0


def median_ms(call, repeats: int, per: int) -> float:
    call()  # warm up: compile, allocate
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return round(1000 * statistics.median(times) / per, 3)


def realtime_factor(detector, extractor, source: str) -> float:
    extractor.features(source)  # build and warm up
    detection = detect_offline(detector, extractor, source, DetectSettings())
    ms_per_frame = 1000 * sum(detection.seconds.values()) / detection.n_frames
    return round(1000 / ms_per_frame / FPS, 2)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    rng = np.random.default_rng(0)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        csv = synth.make_recordings(folder / "train", 2, gestures=3, seed=0)
        unseen = synth.make_recordings(folder / "unseen", 1, gestures=3, seed=1)
        build_cache(csv, folder / "cache", ExtractConfig(random_weights=0))
        config = TrainConfig(background=True, window_clips=4, window_step=1, epochs=30, units=(16,))
        train(folder / "cache", folder / "run", config)
        source = str(next(unseen.parent.glob("*.avi")))
        started = time.perf_counter()
        export_run(folder / "run", folder / "float32", random_weights=0)
        export_seconds = time.perf_counter() - started
        quantized = []
        for fmt in ("onnx", "litert"):  # each on its own: one may miss its parity bound
            try:
                export_run(folder / "run", folder / f"int8_{fmt}", [fmt], "int8", random_weights=0)
                quantized.append(fmt)
            except RunError as error:
                print(f"int8 {fmt}: export refused: {error}")

        spec = read_run_config(folder / "run")["extractor"]
        keras_extractor = extractor_from_spec(spec, random_seed=0)
        model = load_best_model(folder / "run")
        window = read_run_config(folder / "run")["window"]["clips"]
        clips = rng.integers(0, 255, (8, 16, 112, 112, 3), dtype=np.uint8)
        windows = rng.normal(size=(64, window, 4096)).astype(np.float32)
        masks = np.ones((64, window), bool)
        keras_row = {
            "runtime": "keras",
            "precision": "float32",
            "backbone_ms_per_clip": median_ms(
                lambda: keras_extractor.backbone.forward(clips), repeats, len(clips)
            ),
            "head_ms_per_window_batch64": median_ms(
                lambda: model.predict([windows, masks], verbose=0), repeats, 64
            ),
            "head_ms_per_window_live": median_ms(
                lambda: model.predict([windows[:1], masks[:1]], verbose=0), repeats, 1
            ),
            "realtime_factor_at_30fps": realtime_factor(
                load_detector(folder / "run"), keras_extractor, source
            ),
        }
        results.append(keras_row)
        runtime_of = {"onnx": "onnxruntime", "litert": "litert"}
        for bundle_name, runtimes in (
            ("float32", ("onnxruntime", "openvino", "litert")),
            *((f"int8_{fmt}", (runtime_of[fmt],)) for fmt in quantized),
        ):
            precision = bundle_name.split("_")[0]
            found = open_bundle(folder / bundle_name)
            for runtime in runtimes:
                head = BundleClassifier(found, runtime)
                row = {"runtime": runtime, "precision": precision}
                if precision == "float32" and runtime != "litert":  # int8: only heads are timed
                    backbone = BundleBackbone(found, runtime)
                    frames = rng.integers(0, 255, (8, *backbone.frame_shape), dtype=np.uint8)
                    row["backbone_ms_per_clip"] = median_ms(
                        lambda b=backbone, f=frames: b.forward(f), repeats, len(frames)
                    )
                row["head_ms_per_window_batch64"] = median_ms(
                    lambda h=head: h(windows, masks), repeats, 64
                )
                row["head_ms_per_window_live"] = median_ms(
                    lambda h=head: h(windows[:1], masks[:1]), repeats, 1
                )
                trained = load_trained(folder / bundle_name, runtime=runtime, with_extractor=False)
                if precision == "float32":
                    row["realtime_factor_at_30fps"] = realtime_factor(
                        detector_of(trained, bundle_name), bundle_extractor(found, runtime), source
                    )
                results.append(row)
    for row in results:
        print(
            f"{row['runtime']:<12} {row['precision']:<8} backbone "
            f"{row.get('backbone_ms_per_clip', '-')} ms/clip, head "
            f"{row['head_ms_per_window_batch64']} ms/window (batch 64), "
            f"{row['head_ms_per_window_live']} ms (one window), real-time factor at 30 fps "
            f"{row.get('realtime_factor_at_30fps', '-')}"
        )
    print(f"export of every format: {export_seconds:.1f} s")
    summary = {"results": results, "export_seconds": round(export_seconds, 1)}
    print(json.dumps({**summary, "machine": platform.node()}))


if __name__ == "__main__":
    main()
