"""Training throughput: the real cache pipeline vs. tensors in memory, extract-once vs. the
reference way (C3D re-run on every batch of every epoch), and the in-memory path's memory.

    python benchmarks/train.py [--quick]

1. `ratio`: seconds per epoch with the windows already gathered into tensors in memory,
   divided by seconds per epoch fed from the cache through `gesture_cache`'s tf.data
   pipeline (windows drawn per batch, features gathered from the cache's tensor); 1.0 means
   the pipeline costs nothing. The cache for this part holds --videos recordings, written in
   the real format from features of the extracted ones.
2. `speedup`: 5 epochs done the reference way (decode and C3D inside the training loop, every
   batch of every epoch) vs. extracting once into a cache and then training 5 epochs from it.
3. `memory_copies`: peak resident memory added by loading the larger cache and training one
   epoch from it (in a fresh process), divided by the size of its features. `train` keeps
   a cache in memory while MEMORY_PER_FEATURE_BYTE times its feature size, plus
   PROCESS_MB and the model's training state, fits in --memory-limit
   (benchmarks/train_memory.py measures a whole `train` process).
The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from gesture_cache import open_cache
from gesture_cache.cache.manifest import CachedRecording, ExtractorRecord, Segment
from gesture_cache.cache.verify import MEMORY_PER_FEATURE_BYTE, PROCESS_MB
from gesture_cache.cache.writer import CacheWriter
from gesture_cache.data.samples import batch_windows
from gesture_cache.data.windows import Window, windows
from gesture_cache.extract.config import ExtractConfig
from gesture_cache.extract.extraction import build_cache
from gesture_cache.extract.extractor import extractor_from_config
from gesture_cache.sources import synth
from gesture_cache.sources.meta import read_meta
from gesture_cache.train.config import TrainConfig
from gesture_cache.train.fit import compiled_classifier
from gesture_cache.train.model import build_classifier
from gesture_cache.train.prepare import training_data

EPOCHS = 5


def seconds_per_epoch(model, fit_kwargs, epochs: int = 3) -> float:
    model.fit(epochs=1, verbose=0, **fit_kwargs)  # trace and warm up
    started = time.perf_counter()
    model.fit(epochs=epochs, verbose=0, **fit_kwargs)
    return (time.perf_counter() - started) / epochs


def replicate(source, out: Path, recordings: int) -> None:
    """A larger cache in the real format, from the extracted features plus a little noise."""
    rng = np.random.default_rng(0)
    manifest, table = source.manifest, source.recordings
    count = len(table["recording_id"])
    record = ExtractorRecord(manifest["extractor"], manifest["feature_dim"])
    with CacheWriter(out, record, dtype=manifest["dtype"], shard_size=256) as writer:
        for i in range(recordings):
            j = i % count
            lo = table["clip_offset"][j]
            hi = lo + table["clip_count"][j]
            features = source.features[lo:hi].astype(np.float32)
            features = features + rng.normal(0, 0.01, features.shape) * (features > 0)
            label = source.segments["label"][j]
            n_frames = int(table["n_frames"][j])
            writer.add(
                CachedRecording(
                    recording_id=f"copy{i:06d}/{table['recording_id'][j]}",
                    sha256=f"{i:064x}",
                    features=features,
                    clip_start=source.clip_start[lo:hi],
                    clip_valid=source.clip_valid[lo:hi],
                    segments=[Segment(label, 0, n_frames)],
                    n_frames=n_frames,
                    fps=25.0,
                    height=120,
                    width=160,
                )
            )


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


class PeakMemory(threading.Thread):
    """Samples resident memory every 5 ms: the peak of what follows, not of the process."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.running = rss_mb(), True
        self.start()

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss_mb())
            time.sleep(0.005)


def measure_memory(path: str) -> None:
    """In a fresh process: what `train` holds for an in-memory cache, at its peak."""
    config = replace(TrainConfig(epochs=1), memory_limit_mb=1e9)
    warm_up = build_classifier("compact", 2, (8, 4096))  # TensorFlow's own start-up memory
    warm_up.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    warm_up.fit([np.zeros((32, 8, 4096)), np.ones((32, 8), bool)], np.zeros(32), verbose=0)
    before = rss_mb()
    peak = PeakMemory()
    prepared = training_data(path, config)
    rows = np.arange(len(prepared.samples))
    model = compiled_classifier(prepared, rows, config)
    model.fit(prepared.dataset(rows, config.batch_size, True, 0), epochs=1, verbose=0)
    peak.running = False
    peak.join()
    features_mb = prepared.cache.features.nbytes / 2**20
    print(json.dumps({"features_mb": features_mb, "peak_added_mb": peak.peak - before}))


def main() -> None:
    if sys.argv[1:2] == ["--measure-memory"]:
        return measure_memory(sys.argv[2])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 videos, 2048-recording copy")
    parser.add_argument("--real-videos", type=int, default=32)
    parser.add_argument("--videos", type=int, default=8192, help="size of the copied cache")
    args = parser.parse_args()
    n_real, n_copy = (16, 2048) if args.quick else (args.real_videos, args.videos)
    keras.utils.set_random_seed(0)
    config = TrainConfig()
    window = Window(config.window_clips)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        csv = synth.make_dataset(tmp / "videos", per_class=n_real // 4, seed=0)
        extract_config = ExtractConfig(random_weights=0)

        # 2. the reference way: decode and C3D inside the loop, every batch of every epoch
        extractor = extractor_from_config(extract_config)
        rows = read_meta(csv)
        classes = sorted({r.label for r in rows})
        y_all = np.array([classes.index(r.label) for r in rows], np.int32)
        model = build_classifier("compact", len(classes), (window.clips, 4096))
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        started = time.perf_counter()
        for _ in range(EPOCHS):
            for start in range(0, len(rows), config.batch_size):
                batch = rows[start : start + config.batch_size]
                features, masks = [], []
                for row in batch:
                    clips = extractor.features(row.path)
                    count = np.array([len(clips.features)])
                    positions, mask = windows(np.zeros(1, int), count, clips.clip_valid, window)
                    features.append(clips.features[positions[0]])
                    masks.append(mask[0])
                model.train_on_batch(
                    [np.stack(features), np.stack(masks)], y_all[start : start + len(batch)]
                )
        reference_seconds = time.perf_counter() - started
        print(f"reference way, {EPOCHS} epochs: {reference_seconds:.1f} s")

        started = time.perf_counter()
        build_cache(csv, tmp / "cache", extract_config)
        prepared = training_data(tmp / "cache", config)
        everything = np.arange(len(prepared.samples))
        model = compiled_classifier(prepared, everything, config)
        model.fit(
            prepared.dataset(everything, config.batch_size, True, 0), epochs=EPOCHS, verbose=0
        )
        cached_seconds = time.perf_counter() - started
        print(f"extract once + {EPOCHS} epochs from the cache: {cached_seconds:.1f} s")

        # 1. the data pipeline on a larger cache
        replicate(open_cache(tmp / "cache"), tmp / "big", n_copy)
        big = training_data(tmp / "big", config)
        everything = np.arange(len(big.samples))
        pipeline = seconds_per_epoch(
            compiled_classifier(big, everything, config),
            {"x": big.dataset(everything, config.batch_size, True, 0)},
        )
        positions, mask = batch_windows(big.samples, big.cache.clip_valid, big.window)
        features = big.cache.features[positions].astype(np.float32)
        tensors = seconds_per_epoch(
            compiled_classifier(big, everything, config),
            {
                "x": [tf.constant(features), tf.constant(mask)],
                "y": tf.constant(big.y),
                "batch_size": config.batch_size,
                "shuffle": True,
            },
        )
        print(f"{n_copy} recordings, s/epoch: pipeline {pipeline:.3f}, tensors {tensors:.3f}")
        measured = subprocess.run(
            [sys.executable, __file__, "--measure-memory", str(tmp / "big")],
            capture_output=True,
            text=True,
            check=True,
        )
        memory = json.loads(measured.stdout.strip().splitlines()[-1])
        copies = memory["peak_added_mb"] / memory["features_mb"]
        print(
            f"memory: features {memory['features_mb']:.0f} MB, peak added "
            f"{memory['peak_added_mb']:.0f} MB = {copies:.2f} copies (the limit assumes "
            f"{MEMORY_PER_FEATURE_BYTE} per byte + {PROCESS_MB} MB + the model)"
        )

    print(
        json.dumps(
            {
                "pipeline_s_per_epoch": round(pipeline, 4),
                "tensors_s_per_epoch": round(tensors, 4),
                "ratio": round(tensors / pipeline, 3),
                "reference_5_epochs_s": round(reference_seconds, 2),
                "extract_once_plus_5_epochs_s": round(cached_seconds, 2),
                "speedup": round(reference_seconds / cached_seconds, 2),
                "memory_copies": round(copies, 2),
                "videos_timed": n_copy,
                "real_videos": n_real,
                "machine": platform.node(),
            }
        )
    )


if __name__ == "__main__":
    main()
