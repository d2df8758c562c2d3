"""Peak memory of a whole `gesture-cache train` process, per byte of cached features.

    python benchmarks/train_memory.py [--sizes 468,1875] [--batch-size 256] [--keep DIR]

For each size (MB of float16 features) a cache is written by the real `CacheWriter` with
synthetic features (4 clips a recording, 4096 values a clip), then `gesture-cache train
CACHE --epochs 1` runs in a process of its own, in memory (the default --memory-limit), and
its peak resident memory is read when it ends (getrusage of a wrapper's only child). Its
resident memory is also sampled every 0.2 s, so the printed timeline shows where it grows.
The slope between the two sizes is the memory a byte of features costs the whole process
(issue #23's target: at most 1.25); the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gesture_cache.cache.manifest import CachedRecording, ExtractorRecord, Segment
from gesture_cache.cache.writer import CacheWriter

sys.path.insert(0, str(Path(__file__).parent))
from common import EXTRACTOR, train_peak  # noqa: E402

CLIPS, DIM = 4, 4096


def write_cache(folder: Path, megabytes: float, classes: int = 8) -> float:
    """A cache of about `megabytes` of float16 features; returns its exact size in MB."""
    recordings = int(megabytes * 2**20 / (CLIPS * DIM * 2))
    rng = np.random.default_rng(0)
    base = rng.normal(0.5, 0.5, (64, CLIPS, DIM)).clip(0).astype(np.float32)
    n_frames = (CLIPS - 1) * 8 + 16
    with CacheWriter(
        folder, ExtractorRecord(EXTRACTOR, DIM), dtype="float16", shard_size=256
    ) as writer:
        for i in range(recordings):
            features = base[i % 64].copy()
            features[:, (i % classes) * 16 : (i % classes) * 16 + 16] += 2.0
            writer.add(
                CachedRecording(
                    recording_id=f"r{i:07d}",
                    sha256=f"{i:064x}",
                    features=features,
                    clip_start=np.arange(CLIPS) * 8,
                    clip_valid=np.ones(CLIPS, bool),
                    segments=[Segment(f"class_{i % classes}", 0, n_frames, f"g{i % 500}")],
                    n_frames=n_frames,
                    fps=12.0,
                    height=100,
                    width=176,
                )
            )
    return recordings * CLIPS * DIM * 2 / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="468,1875", help="MB of features, two of them")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--keep", type=Path, help="write the caches here (and keep them)")
    args = parser.parse_args()
    sizes = [float(s) for s in args.sizes.split(",")]
    folder = args.keep or Path(tempfile.mkdtemp(prefix="train-memory-"))
    results = []
    for size in sizes:
        cache = folder / f"cache-{size:g}"
        exact = write_cache(cache, size) if not cache.exists() else size
        run = folder / f"run-{size:g}-{time.time():.0f}"
        peak, samples = train_peak(cache, run, args.batch_size)
        print(f"{exact:7.0f} MB of features: peak {peak:7.0f} MB ({peak / exact:.2f} per byte)")
        step = max(1, len(samples) // 12)
        print("   resident MB over time (s, MB):", samples[::step] + samples[-1:])
        results.append({"features_mb": round(exact), "peak_mb": round(peak)})
    slope = (results[1]["peak_mb"] - results[0]["peak_mb"]) / (
        results[1]["features_mb"] - results[0]["features_mb"]
    )
    print(f"slope: {slope:.2f} bytes of memory per byte of features (target <= 1.25)")
    print(json.dumps({"machine": platform.node(), "slope": round(slope, 3), "runs": results}))


if __name__ == "__main__":
    main()
