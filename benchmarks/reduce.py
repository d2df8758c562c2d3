"""`train --reduce pca:N`: epoch time and held-out accuracy with and without the projection.

    python benchmarks/reduce.py [--cache CACHE] [--components 16,64,256] [--seeds 0,1,2]

Without --cache, the demo's cache is built first (`make demo`'s 64 synthetic videos with
random C3D weights, about a minute of C3D); with it, any cache (e.g. one written by
benchmarks/scale.py). Each setting trains the default `compact` preset with the same seeds
and split; the figures are the median seconds per epoch (after the first, which compiles)
and the mean test accuracy over the seeds. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import keras

from gesture_cache.cli.demo import DEMO_EXTRACT, DEMO_VIDEOS_PER_CLASS
from gesture_cache.extract.extraction import build_cache
from gesture_cache.sources import synth
from gesture_cache.train.config import TrainConfig
from gesture_cache.train.fit import train


class EpochClock(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.started)


def measure(cache: Path, runs: Path, reduce: str | None, seeds: list[int], epochs: int) -> dict:
    accuracies, epoch_seconds = [], []
    for seed in seeds:
        clock = EpochClock()
        config = TrainConfig(seed=seed, reduce=reduce, epochs=epochs, patience=epochs)
        result = train(cache, runs / f"{reduce or 'none'}-{seed}", config, callbacks=[clock])
        accuracies.append(result.metrics["accuracy"])
        epoch_seconds += clock.seconds[1:]
    return {
        "reduce": reduce or "none",
        "seconds_per_epoch": round(statistics.median(epoch_seconds), 3),
        "test_accuracy": round(statistics.mean(accuracies), 3),
        "accuracies": accuracies,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", help="default: build the demo's cache")
    parser.add_argument("--components", default="16,64,256")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = Path(args.cache) if args.cache else tmp / "cache"
        if not args.cache:
            csv = synth.make_dataset(tmp / "videos", per_class=DEMO_VIDEOS_PER_CLASS, seed=0)
            build_cache(csv, cache, DEMO_EXTRACT)
        settings = [None] + [f"pca:{n}" for n in args.components.split(",")]
        results = [measure(cache, tmp / "runs", s, seeds, args.epochs) for s in settings]
    base = results[0]["seconds_per_epoch"]
    for r in results:
        print(
            f"{r['reduce']:>8}: {r['seconds_per_epoch']:.3f} s/epoch "
            f"({base / r['seconds_per_epoch']:.2f}x), test accuracy {r['test_accuracy']:.3f}"
        )
    print(json.dumps({"cache": args.cache or "demo", "results": results,
                      "machine": platform.node()}))  # fmt: skip


if __name__ == "__main__":
    main()
