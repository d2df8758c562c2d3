"""The demo: synthetic videos -> cache (random weights) -> train -> evaluate, in minutes."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from gesture_cache import synth
from gesture_cache.config import ExtractConfig, TrainConfig
from gesture_cache.extract import ExtractSummary, run_extraction
from gesture_cache.train import TrainResult, train

# 64 videos of 2 clips: about 130 clips of C3D, a minute or two on a 2-core CPU.
DEMO_VIDEOS_PER_CLASS = 16
DEMO_EXTRACT = ExtractConfig(random_weights=0, frames=32, clip_stride=16)


@dataclass
class DemoResult:
    csv: Path
    cache: Path
    run: Path
    extraction: ExtractSummary
    training: TrainResult


def run_demo(out: str | Path, per_class: int = DEMO_VIDEOS_PER_CLASS, seed: int = 0) -> DemoResult:
    """Every step of the workflow on synthetic data; re-running reuses what is done."""
    out = Path(out)
    csv = out / "videos" / "meta.csv"
    if not csv.exists():
        synth.make_dataset(csv.parent, per_class=per_class, seed=seed)
    extraction = run_extraction(csv, out / "cache", DEMO_EXTRACT)
    run = out / "run"
    shutil.rmtree(run, ignore_errors=True)  # the demo trains afresh each time
    training = train(out / "cache", run, TrainConfig(seed=seed))
    return DemoResult(csv, out / "cache", run, extraction, training)
