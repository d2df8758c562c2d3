"""Extraction on Ray vs. the local pipeline, on the same videos in one run.

    python benchmarks/ray_extract.py [--quick] [--videos 32] [--actors 1]

Both build a fresh cache from the same CSV with the same settings (random weights). Times
are whole runs, as a user waits for them: the local run includes building C3D; the Ray run
includes starting a local Ray instance and its actors (each builds C3D). The Ray cache is
checked against the local one (fingerprint, recordings, features within float rounding).
The last line is JSON: {"local_clips_per_s", "ray_clips_per_s", "ratio", ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import ray

from gesture_cache.cache.reader import open_cache
from gesture_cache.extract.config import ExtractConfig
from gesture_cache.extract.extraction import build_cache
from gesture_cache.sources import synth


def timed_extraction(csv: Path, out: Path, config: ExtractConfig) -> tuple[float, int]:
    started = time.perf_counter()
    summary = build_cache(csv, out, config)
    return time.perf_counter() - started, summary.clips


def max_feature_difference(a, b) -> float:
    """Largest |a - b| over every clip of every recording (matched by id)."""

    def by_id(cache):
        r = cache.recordings
        return {
            i: cache.features[o : o + n].astype(np.float32)
            for i, o, n in zip(r["recording_id"], r["clip_offset"], r["clip_count"])
        }

    mine, theirs = by_id(a), by_id(b)
    if sorted(mine) != sorted(theirs):
        return float("inf")
    return max(float(np.abs(mine[k] - theirs[k]).max()) for k in mine)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 videos (about 90 clips)")
    parser.add_argument("--videos", type=int, default=32)
    parser.add_argument("--actors", type=int, default=1, help="backbone actors on Ray")
    args = parser.parse_args()
    n_videos = 8 if args.quick else args.videos

    with tempfile.TemporaryDirectory() as tmp:
        csv = synth.make_dataset(Path(tmp) / "videos", per_class=max(1, n_videos // 4), seed=0)
        local_seconds, clips = timed_extraction(
            csv, Path(tmp) / "local", ExtractConfig(random_weights=0)
        )
        ray_config = ExtractConfig(random_weights=0, engine="ray", actors=args.actors)
        ray_seconds, ray_clips = timed_extraction(csv, Path(tmp) / "ray", ray_config)
        ray.shutdown()
        local, on_ray = open_cache(Path(tmp) / "local"), open_cache(Path(tmp) / "ray")
        difference = max_feature_difference(local, on_ray)
        same = local.fingerprint == on_ray.fingerprint and ray_clips == clips

    result = {
        "videos": n_videos,
        "clips": clips,
        "local_seconds": round(local_seconds, 2),
        "ray_seconds": round(ray_seconds, 2),
        "local_clips_per_s": round(clips / local_seconds, 2),
        "ray_clips_per_s": round(clips / ray_seconds, 2),
        "ratio": round(local_seconds / ray_seconds, 3),
        "actors": args.actors,
        "same_cache": same,
        "max_feature_difference": difference,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }
    print(f"local: {clips} clips in {local_seconds:.1f} s = {result['local_clips_per_s']} clips/s")
    print(f"ray:   {clips} clips in {ray_seconds:.1f} s = {result['ray_clips_per_s']} clips/s")
    print(f"ray/local throughput ratio {result['ratio']}")
    print(f"same fingerprint and clips: {same}; largest feature difference {difference:.3g}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
