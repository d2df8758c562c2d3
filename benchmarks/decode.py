"""Decoding alone: clips/s the decode workers deliver with no model, for 1, 2, 4, ... workers
up to the core count, at each frame size, with the efficiency per worker.

    python benchmarks/decode.py [--quick] [--sizes 320x240,640x480] [--max-workers N]

This is the ceiling the machine's CPUs put on extraction: a GPU that runs C3D faster than
this waits for decoding. Recordings are written as MPEG-4 (mp4v) of --frames frames each;
clips are dense, 16 frames every --stride. Efficiency is clips/s per worker against one
worker's (1.0: perfect scaling). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from gesture_cache.extract.config import ExtractConfig
from gesture_cache.extract.extractor import extractor_from_config
from gesture_cache.extract.job import Job
from gesture_cache.extract.local_engine import DecodeWorkers


def write_recording(path: Path, frames: int, width: int, height: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (width, height))
    background = rng.integers(0, 120, (height, width, 3), np.uint8)
    for i in range(frames):
        frame = background.copy()
        x = int((width - 40) * i / frames)
        frame[height // 3 : height // 3 + 40, x : x + 40] = 230
        writer.write(frame)
    writer.release()


def clips_per_second(jobs: list[Job], extractor, workers: int) -> float:
    started = time.perf_counter()
    pipeline = DecodeWorkers(jobs, extractor, workers, capacity=64)
    clips = sum(1 for item in pipeline if item[0] == "clip")
    pipeline.close()
    return clips / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 recordings of 300 frames")
    parser.add_argument(
        "--sizes", default="320x240,640x480", help="comma-separated WIDTHxHEIGHT of recordings"
    )
    parser.add_argument("--recordings", type=int, default=8)
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--stride", type=int, default=8)
    parser.add_argument("--max-workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    recordings, frames = (4, 300) if args.quick else (args.recordings, args.frames)
    extractor = extractor_from_config(ExtractConfig(random_weights=0, clip_stride=args.stride))
    counts = sorted({*(2**i for i in range(args.max_workers.bit_length())), args.max_workers})
    results = {}
    for size in args.sizes.split(","):
        width, height = map(int, size.lower().split("x"))
        with tempfile.TemporaryDirectory() as tmp:
            jobs = []
            for i in range(recordings):
                path = Path(tmp) / f"r{i}.mp4"
                write_recording(path, frames, width, height, seed=i)
                jobs.append(Job(path.name, path, [], None))
            rates = {n: clips_per_second(jobs, extractor, n) for n in counts}
        efficiency = {n: rates[n] / (n * rates[1]) for n in counts}
        for n in counts:
            print(f"{size}: {n:2d} decode workers {rates[n]:7.1f} clips/s, "
                  f"efficiency {efficiency[n]:.2f}")  # fmt: skip
        results[size] = {
            "clips_per_s_by_workers": {n: round(rates[n], 1) for n in counts},
            "efficiency_by_workers": {n: round(efficiency[n], 2) for n in counts},
        }
    print(
        json.dumps(
            {
                "by_size": results,
                "recordings": recordings,
                "frames": frames,
                "stride": args.stride,
                "cpus": os.cpu_count(),
                "machine": platform.node(),
            }
        )
    )


if __name__ == "__main__":
    main()
