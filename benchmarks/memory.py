"""Peak memory of extracting one long recording vs. a shorter one (each in a fresh process).

    python benchmarks/memory.py [--quick] [--frames 20000] [--stride 128]

Dense clips stream through a 16-frame ring buffer and a bounded queue, so a recording's
length costs only its features (D floats per clip), not its frames. The stated bound, from
measurement rather than derivation: peak(long) - peak(short) <= 128 MB + clips x 16 KB
(float32 features held until the recording is written); holding the frames would cost
n x 112 x 112 x 3 bytes (718 MB for 20,000). The shorter recording has the same batches
as the long one's last ones (full batches of 16, then the same partial one): C3D's
activations for one batch (about 50 MB per clip at float32) and oneDNN's per-shape kernels
dominate the peak and do not depend on the length. C3D runs on every clip, so --stride
keeps the CPU time short; the frames all pass through the decoder either way. The last
line is JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

CHILD = """
import resource, sys
from gesture_cache.extract.config import ExtractConfig
from gesture_cache.extract.extraction import build_cache
summary = build_cache(sys.argv[1], sys.argv[2], ExtractConfig(random_weights=0,
                         clip_stride=int(sys.argv[3]), decode_workers=2))
print(summary.clips, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def write_recording(path: Path, frames: int) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (160, 120))
    rng = np.random.default_rng(0)
    background = rng.integers(0, 120, (120, 160, 3), np.uint8)
    for i in range(frames):
        frame = background.copy()
        x = i % 120
        frame[40:80, x : x + 40] = 230
        writer.write(frame)
    writer.release()


def peak_mb(folder: Path, frames: int, stride: int) -> tuple[int, float]:
    write_recording(folder / "r.avi", frames)
    (folder / "meta.csv").write_text("file_path,action\nr.avi,wave\n")
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder / "meta.csv"), str(folder / "c"), str(stride)],
        capture_output=True,
        text=True,
        check=True,
    )
    clips, peak = done.stdout.strip().splitlines()[-1].split()
    return int(clips), float(peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5,000 frames")
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--stride", type=int, default=128)
    args = parser.parse_args()
    frames = 5_000 if args.quick else args.frames
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "short").mkdir()
        (Path(tmp) / "long").mkdir()
        # the same number of clips in the last, partial batch as the long one: oneDNN keeps
        # kernels and scratch memory per batch shape (~100 MB on this CPU), not per frame
        long_clips_expected = len(range(0, frames - 16 + 1, args.stride)) + 1
        short_frames = 16 + (16 + long_clips_expected % 16 - 1) * args.stride
        short_clips, short = peak_mb(Path(tmp) / "short", short_frames, args.stride)
        long_clips, long = peak_mb(Path(tmp) / "long", frames, args.stride)
    added = long - short
    bound = 128 + long_clips * 16 / 1024
    print(f"shorter recording ({short_frames} frames, {short_clips} clips): peak {short:.0f} MB")
    print(f"long recording ({frames} frames, {long_clips} clips): peak {long:.0f} MB")
    print(f"added by length: {added:.0f} MB (bound {bound:.0f} MB)")
    print(
        json.dumps(
            {
                "frames": frames,
                "clips": long_clips,
                "short_frames": short_frames,
                "peak_short_mb": round(short),
                "peak_long_mb": round(long),
                "added_mb": round(added),
                "bound_mb": round(bound),
                "within_bound": added <= bound,
                "frames_whole_would_take_mb": round(frames * 112 * 112 * 3 / 2**20),
                "machine": platform.node(),
            }
        )
    )


if __name__ == "__main__":
    main()
