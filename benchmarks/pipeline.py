"""The extraction pipeline against decoding alone, with a backbone that costs nothing.

    python benchmarks/pipeline.py [--quick] [--sizes 320x240,640x480] [--workers N]
                                  [--recordings 8] [--frames 600] [--codec h264|mp4v]
                                  [--shard-size 256] [--model-ms 0]
                                  [--decoder auto|opencv|nvdec]

A GPU runs the network in a fraction of what decoding takes, so what `extract` adds around
decode and model (batching clips across recordings, the model's thread, HDF5 shard writes
with gzip) decides whether the pipeline keeps up with the decoders. The `free` backbone
(benchmarks/free_backbone: C3D's preprocessing and clip size, 4096 C3D-like values a clip)
takes the network out, so on any machine: pipeline clips/s / decoding-alone clips/s on the
same workers is that ratio (target 0.9), and the difference per clip is the overhead.
`--model-ms` makes the free backbone a stand-in for a GPU, slower than decoding: each batch
waits that long a clip with the GIL released, as the model's thread does while a device
computes. The pipeline then runs at the model's pace only if nothing else (shard writes,
batching) runs on the model's thread: pipeline clips/s / model clips/s is printed, and the
time a clip costs the model's thread beyond the model.
Recordings are H.264 (ffmpeg's libx264) when ffmpeg is installed, else MPEG-4 (mp4v); clips
are dense, 16 frames every 8. Each figure is the best of --repeats runs (page cache warm).
The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))  # free_backbone
sys.path.insert(0, str(ROOT.parent))

import free_backbone  # noqa: E402
from decode import clips_per_second, write_recording  # noqa: E402
from free_backbone.backbone import Free  # noqa: E402

from gesture_cache.extract.config import ExtractConfig  # noqa: E402
from gesture_cache.extract.extraction import build_cache  # noqa: E402
from gesture_cache.extract.extractor import extractor_from_config, resolved  # noqa: E402
from gesture_cache.extract.job import Job  # noqa: E402
from gesture_cache.sources.meta import read_meta  # noqa: E402
from gesture_cache.video.nvdec import DECODERS  # noqa: E402


def h264_recording(path: Path, frames: int, width: int, height: int, seed: int) -> None:
    """decode.py's recording (a square moving over a noisy background), re-encoded as H.264."""
    mpeg4 = path.with_suffix(".mp4v.mp4")
    write_recording(mpeg4, frames, width, height, seed)
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-i", str(mpeg4), "-c:v", "libx264",
         "-pix_fmt", "yuv420p", "-preset", "veryfast", str(path)],
        check=True,
    )  # fmt: skip
    mpeg4.unlink()


def whole_pipeline(csv: Path, config: ExtractConfig, out: Path) -> tuple[int, float, float]:
    """Clips, seconds from the first decode to the last write, and seconds in the model."""
    shutil.rmtree(out, ignore_errors=True)
    summary = build_cache(csv, out, config)
    return summary.clips, summary.pipeline_seconds, summary.model_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 recordings of 300 frames, 320x240")
    parser.add_argument("--sizes", default="320x240,640x480", help="WIDTHxHEIGHT, comma-separated")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decode workers")
    parser.add_argument("--recordings", type=int, default=8)
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--codec", choices=("h264", "mp4v"), default=None)
    parser.add_argument("--shard-size", type=int, default=ExtractConfig.shard_size)
    parser.add_argument("--model-ms", type=float, default=0.0, help="the model's ms a clip")
    parser.add_argument("--decoder", choices=DECODERS, default=ExtractConfig.decoder)
    args = parser.parse_args()
    codec = args.codec or ("h264" if shutil.which("ffmpeg") else "mp4v")
    sizes = "320x240" if args.quick else args.sizes
    recordings, frames = (4, 300) if args.quick else (args.recordings, args.frames)
    free_backbone.register()
    Free.seconds_per_clip = args.model_ms / 1000
    config = ExtractConfig(
        backbone="free",
        decode_workers=args.workers,
        shard_size=args.shard_size,
        decoder=args.decoder,
    )
    config = resolved(config)
    extractor = extractor_from_config(config)
    print(f"decoding: {extractor.decoding}", flush=True)
    write = h264_recording if codec == "h264" else write_recording
    results = {}
    for size in sizes.split(","):
        width, height = map(int, size.lower().split("x"))
        with tempfile.TemporaryDirectory() as tmp:
            rows = []
            for i in range(recordings):
                path = Path(tmp) / f"r{i}.mp4"
                write(path, frames, width, height, seed=i)
                rows.append((path, "move"))
            csv = Path(tmp) / "recordings.csv"
            pd.DataFrame(rows, columns=["file_path", "action"]).to_csv(csv, index=False)
            jobs = [Job(r.recording_id, r.path, [r], None) for r in read_meta(csv)]
            clips_per_second(jobs, extractor, args.workers)  # warm: page cache, OpenCV
            decode, pipeline, model = [], [], []
            for _ in range(args.repeats):  # alternated, so both see the same machine
                decode.append(clips_per_second(jobs, extractor, args.workers))
                clips, seconds, in_model = whole_pipeline(csv, config, Path(tmp) / "cache")
                pipeline.append(clips / seconds)
                model.append(in_model / clips)
        best_decode, best_pipeline = max(decode), max(pipeline)
        overhead_ms = 1000 * (1 / best_pipeline - 1 / best_decode)
        results[size] = {
            "decode_clips_per_s": round(best_decode, 1),
            "pipeline_clips_per_s": round(best_pipeline, 1),
            "ratio": round(best_pipeline / best_decode, 3),
            "overhead_ms_per_clip": round(overhead_ms, 3),
            "model_ms_per_clip": round(1000 * min(model), 3),
            "clips": clips,
        }
        print(
            f"{size} {codec}, {args.workers} decode workers, {clips} clips: decoding alone "
            f"{best_decode:.1f} clips/s, whole pipeline {best_pipeline:.1f} clips/s "
            f"(ratio {best_pipeline / best_decode:.3f}); overhead outside decoding "
            f"{overhead_ms:.2f} ms a clip, of which the model {1000 * min(model):.3f}",
            flush=True,
        )
        if args.model_ms:
            model_pace = 1000 / args.model_ms
            beyond_ms = 1000 / best_pipeline - args.model_ms
            results[size] |= {
                "model_clips_per_s": round(model_pace, 1),
                "ratio_to_model": round(best_pipeline / model_pace, 3),
                "beyond_model_ms_per_clip": round(beyond_ms, 3),
            }
            print(
                f"  the model alone {model_pace:.1f} clips/s: pipeline / model "
                f"{best_pipeline / model_pace:.3f}; each clip costs the model's thread "
                f"{beyond_ms:.3f} ms beyond the model",
                flush=True,
            )
    print(json.dumps({"by_size": results, "codec": codec, "workers": args.workers,
                      "recordings": recordings, "frames": frames, "cpus": os.cpu_count(),
                      "shard_size": args.shard_size, "model_ms": args.model_ms,
                      "decoding": extractor.decoding,
                      "machine": platform.node()}))  # fmt: skip


if __name__ == "__main__":
    main()
