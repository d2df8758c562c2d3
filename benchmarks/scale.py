"""A cache of a real dataset's size: how long the commands take, against the limits of
issue #13, measured in one run.

    python benchmarks/scale.py [--recordings 148092] [--clips 4] [--quick]

The cache is written by the real `CacheWriter` with synthetic features (no C3D): Jester's
shape by default (148,092 recordings x 4 clips, 27 classes, 1,376 groups, float16, 256
recordings a shard). `--quick` writes 10,000. Printed, each with its limit:
- `--help`, `info` and `runs`: seconds, the median of three runs (limit 2 s, whatever the
  size);
- `verify` against `sha256sum` of the same shards, medians of three (limit 2x);
- `train`: seconds until its first batch (limit 30 s; the first run on a cache computes the
  standardisation statistics that a second run reuses; also on the uncompressed copy), and
  the quickest warm epoch (the second or third) in memory and streamed (streamed >= 0.8 of
  in memory), streamed both from the gzip shards and from an uncompressed copy (`merge
  --compression none`), under a --memory-limit of 0.9 of the features' size (the streamed
  runs hold validation's windows after the first epoch);
- the peak memory of a whole `train` process (one epoch, in memory) at half and at the whole
  cache: the slope in bytes of memory per byte of features (limit 1.25);
- one epoch from the cache against the same model fed the same windows as tensors (limit
  0.9), on the cache's first samples up to 3 GB of float32 windows;
- `tune`: trials per hour at one epoch a trial.
The last line is JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np

from gesture_cache.cache.manifest import CachedRecording, ExtractorRecord, Segment
from gesture_cache.cache.merge import merge_caches
from gesture_cache.cache.writer import CacheWriter
from gesture_cache.data.samples import batch_windows
from gesture_cache.train.config import TrainConfig
from gesture_cache.train.fit import compiled_classifier, train
from gesture_cache.train.prepare import resolve, training_data

CLI = [sys.executable, "-m", "gesture_cache.cli"]
sys.path.insert(0, str(Path(__file__).parent))
from common import EXTRACTOR, train_peak  # noqa: E402

SMALL_TRAIN = {"epochs": 3, "units": (16,), "dense": 0, "window_clips": 4, "batch_size": 128}


def write_cache(folder: Path, recordings: int, clips: int, classes: int, groups: int) -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(0.5, 0.5, (64, clips, 4096)).clip(0).astype(np.float32)
    with CacheWriter(
        folder, ExtractorRecord(EXTRACTOR, 4096), dtype="float16", shard_size=256
    ) as writer:
        for i in range(recordings):
            label = i % classes
            features = base[i % 64].copy()
            features[:, label * 16 : label * 16 + 16] += 2.0  # learnable, cheap to make
            n_frames = (clips - 1) * 8 + 16
            writer.add(
                CachedRecording(
                    recording_id=f"20bn-jester-v1/{i + 1}",
                    sha256=f"{i:064x}",
                    features=features,
                    clip_start=np.arange(clips) * 8,
                    clip_valid=np.ones(clips, bool),
                    segments=[Segment(f"class_{label:02d}", 0, n_frames, f"g{i % groups}")],
                    n_frames=n_frames,
                    fps=12.0,
                    height=100,
                    width=176,
                )
            )


def seconds(command: list[str], repeats: int = 3) -> float:
    """The median of a few runs: one run of a 1-second command on this shared machine
    was once 4x the next."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return float(np.median(times))


class Clock(keras.callbacks.Callback):
    """When the first batch starts, and how long each epoch takes."""

    def __init__(self, started: float):
        super().__init__()
        self.started, self.first_batch, self.epochs = started, None, []

    def on_train_batch_begin(self, batch, logs=None):
        if self.first_batch is None:
            self.first_batch = time.perf_counter() - self.started

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(time.perf_counter() - self.epoch_started)

    @property
    def warm(self) -> float:
        """The quickest epoch after the first: one epoch here varies by up to 2x from one
        to the next (a shared machine), while the first also builds the pipeline."""
        return min(self.epochs[1:])


def timed_train(cache: Path, run: Path, memory_limit_mb: float) -> Clock:
    started = time.perf_counter()
    clock = Clock(started)
    config = TrainConfig(**SMALL_TRAIN, memory_limit_mb=memory_limit_mb)
    train(cache, run, config, callbacks=[clock])
    return clock


TENSOR_BYTES = 3 * 2**30  # float32 windows the tensors baseline may hold


def cache_vs_tensors(cache: Path) -> tuple[float, float, int]:
    """Seconds of a warm epoch (`Clock.warm`) from the cache's pipeline and from tensors of
    the same windows, same model, same samples; and how many samples."""
    config = resolve(TrainConfig(**SMALL_TRAIN, memory_limit_mb=1e9))
    prepared = training_data(cache, config)
    per_sample = config.window_clips * prepared.cache.feature_dim * 4
    rows = np.arange(min(len(prepared.samples), TENSOR_BYTES // per_sample))
    clock = Clock(time.perf_counter())
    model = compiled_classifier(prepared, rows, config)
    dataset = prepared.dataset(rows, config.batch_size, True, 0)
    model.fit(dataset, epochs=config.epochs, verbose=0, callbacks=[clock])
    pipeline = clock.warm
    samples = prepared.samples.take(rows)
    positions, mask = batch_windows(samples, prepared.cache.clip_valid, prepared.window)
    windows = prepared.cache.features[positions].astype(np.float32)
    clock = Clock(time.perf_counter())
    model = compiled_classifier(prepared, rows, config)
    model.fit(
        [windows, mask.astype(np.uint8)],
        prepared.y[rows],
        batch_size=config.batch_size,
        shuffle=True,
        epochs=config.epochs,
        verbose=0,
        callbacks=[clock],
    )
    return pipeline, clock.warm, len(rows)


def peak_memory_mb(cache: Path, run: Path) -> float:
    """The peak resident memory of a whole `train` process, one epoch, in memory."""
    peak, _ = train_peak(cache, run, SMALL_TRAIN["batch_size"], "--memory-limit", "1e9")
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recordings", type=int, default=148_092)
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="10,000 recordings")
    parser.add_argument("--folder", help="where to write the caches (default: a temporary one)")
    args = parser.parse_args()
    n = 10_000 if args.quick else args.recordings
    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        write_cache(tmp / "half", n // 2, args.clips, 27, 1376)
        write_cache(tmp / "cache", n, args.clips, 27, 1376)
        write_seconds = time.perf_counter() - started
        shards = sorted(str(p) for p in (tmp / "cache").glob("part-*.h5"))
        feature_mb = n * args.clips * 4096 * 2 / 2**20
        disk_mb = sum(Path(p).stat().st_size for p in shards) / 2**20
        figures = {
            "recordings": n,
            "feature_mb": round(feature_mb),
            "disk_mb": round(disk_mb),
            "help_s": seconds([*CLI, "--help"]),
            "info_s": seconds([*CLI, "info", str(tmp / "cache")]),
            "sha256sum_s": seconds(["sha256sum", *shards]),
            "verify_s": seconds([*CLI, "verify", str(tmp / "cache")]),
        }
        figures["verify_over_sha256sum"] = figures["verify_s"] / figures["sha256sum_s"]
        memory = timed_train(tmp / "cache", tmp / "runs" / "memory", 1e9)
        again = timed_train(tmp / "cache", tmp / "runs" / "memory-again", 1e9)
        figures["train_first_batch_again_s"] = again.first_batch
        streams_mb = 0.9 * feature_mb  # over it: streamed, the validation windows held
        streamed = timed_train(tmp / "cache", tmp / "runs" / "streamed", streams_mb)
        started = time.perf_counter()
        merge_caches([tmp / "cache"], tmp / "plain", compression="none")
        figures["uncompressed_copy_s"] = time.perf_counter() - started
        plain = timed_train(tmp / "plain", tmp / "runs" / "streamed-plain", streams_mb)
        plain_memory = timed_train(tmp / "plain", tmp / "runs" / "memory-plain", 1e9)
        figures["train_first_batch_plain_s"] = plain_memory.first_batch
        figures["epoch_streamed_plain_s"] = plain.warm
        figures["streamed_plain_speed_of_in_memory"] = memory.warm / plain.warm
        figures["runs_s"] = seconds([*CLI, "runs", str(tmp / "runs")])
        figures["train_first_batch_s"] = memory.first_batch
        figures["epoch_in_memory_s"] = memory.warm
        figures["epoch_streamed_s"] = streamed.warm
        figures["streamed_speed_of_in_memory"] = memory.warm / streamed.warm
        half_mb = peak_memory_mb(tmp / "half", tmp / "runs" / "peak-half")
        whole_mb = peak_memory_mb(tmp / "cache", tmp / "runs" / "peak-whole")
        figures["peak_memory_half_mb"], figures["peak_memory_mb"] = half_mb, whole_mb
        figures["memory_bytes_per_feature_byte"] = (whole_mb - half_mb) / (feature_mb / 2)
        pipeline_s, tensors_s, samples = cache_vs_tensors(tmp / "cache")
        gc.collect()  # its models' reference cycles hold the cache's features
        figures["epoch_cache_s"], figures["epoch_tensors_s"] = pipeline_s, tensors_s
        figures["cache_vs_tensors_samples"] = samples
        figures["cache_speed_of_tensors"] = tensors_s / pipeline_s
        started = time.perf_counter()
        subprocess.run(
            [*CLI, "tune", str(tmp / "cache"), "--out", str(tmp / "search"), "--trials", "2",
             "--epochs", "1"],
            check=True, capture_output=True,
        )  # fmt: skip
        figures["tune_trials_per_hour"] = 2 * 3600 / (time.perf_counter() - started)
    limits = [
        ("--help", "help_s", 2.0, "<="),
        ("info", "info_s", 2.0, "<="),
        ("runs", "runs_s", 2.0, "<="),
        ("verify / sha256sum", "verify_over_sha256sum", 2.0, "<="),
        ("train until its first batch (s)", "train_first_batch_s", 30.0, "<="),
        ("  again: statistics reused", "train_first_batch_again_s", 30.0, "<="),
        ("  uncompressed shards", "train_first_batch_plain_s", 30.0, "<="),
        ("streamed epoch speed / in memory", "streamed_speed_of_in_memory", 0.8, ">="),
        ("  the same, uncompressed shards", "streamed_plain_speed_of_in_memory", 0.8, ">="),
        ("memory bytes per feature byte", "memory_bytes_per_feature_byte", 1.25, "<="),
        ("epoch from cache / tensors speed", "cache_speed_of_tensors", 0.9, ">="),
    ]
    print(
        f"{n} recordings x {args.clips} clips: {figures['feature_mb']} MB of features, "
        f"{figures['disk_mb']} MB on disk, written in {write_seconds:.0f} s (both caches)"
    )
    for name, key, limit, sense in limits:
        value = figures[key]
        met = value <= limit if sense == "<=" else value >= limit
        print(f"{name:<34} {value:8.2f}   limit {sense} {limit:<5} {'met' if met else 'NOT MET'}")
    print(
        f"{'epoch in memory / streamed (s)':<34} {figures['epoch_in_memory_s']:8.1f} / "
        f"{figures['epoch_streamed_s']:.1f} (uncompressed {figures['epoch_streamed_plain_s']:.1f}; "
        f"copied in {figures['uncompressed_copy_s']:.0f} s)"
    )
    print(
        f"{'epoch from cache / tensors (s)':<34} {figures['epoch_cache_s']:8.1f} / "
        f"{figures['epoch_tensors_s']:.1f} on {figures['cache_vs_tensors_samples']} samples"
    )
    print(f"{'tune trials per hour':<34} {figures['tune_trials_per_hour']:8.1f}")
    print(json.dumps({**figures, "machine": platform.node()}))


if __name__ == "__main__":
    main()
