"""Resident memory after each of several `train()` calls in one process (what `tune` does):
it must stay flat, not grow by the cache's features each time.

    python benchmarks/leak.py CACHE [--runs 3] [--memory-limit MB]

(a --memory-limit under the features' size: the streamed path)
"""

from __future__ import annotations

import argparse
import gc
import tempfile
from pathlib import Path

from scale import SMALL_TRAIN

from gesture_cache.train.config import TrainConfig
from gesture_cache.train.fit import train


def resident_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cache")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--memory-limit", type=float, default=1e9, help="MB (in memory)")
    args = parser.parse_args()
    print(f"before: {resident_gb():.2f} GB resident")
    with tempfile.TemporaryDirectory() as runs:
        for run in range(args.runs):
            train(
                args.cache,
                Path(runs) / f"run-{run}",
                TrainConfig(**SMALL_TRAIN, memory_limit_mb=args.memory_limit),
            )
            gc.collect()
            print(f"after train {run + 1}: {resident_gb():.2f} GB resident")


if __name__ == "__main__":
    main()
