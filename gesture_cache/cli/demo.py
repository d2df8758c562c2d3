"""The demos: synthetic videos -> cache (random weights) -> train -> evaluate, and the same
with continuous recordings -> detect -> score, in minutes on a CPU."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from gesture_cache.cli.tables import metrics_table
from gesture_cache.deploy.settings import DetectSettings
from gesture_cache.detect.detection import DetectionRun, detect_sources
from gesture_cache.extract.config import ExtractConfig
from gesture_cache.extract.extraction import build_cache
from gesture_cache.extract.job import ExtractSummary
from gesture_cache.sources import synth
from gesture_cache.train.config import TrainConfig
from gesture_cache.train.fit import TrainResult, train

# 64 videos of 24-48 frames, dense clips every 8 frames: about 250 clips of C3D, under a
# minute on a 2-core CPU.
DEMO_VIDEOS_PER_CLASS = 16


DEMO_EXTRACT = ExtractConfig(random_weights=0)


@dataclass
class DemoResult:
    csv: Path
    cache: Path
    run: Path
    extraction: ExtractSummary
    training: TrainResult


def classification_demo(
    out: str | Path,
    per_class: int = DEMO_VIDEOS_PER_CLASS,
    seed: int = 0,
    extract: ExtractConfig = DEMO_EXTRACT,
) -> DemoResult:
    """Every step of the workflow on synthetic data; re-running reuses what is done.
    `extract`: the extraction settings (the demo's: C3D with random weights)."""
    out = Path(out)
    csv = out / "videos" / "meta.csv"
    if not csv.exists():
        synth.make_dataset(csv.parent, per_class=per_class, seed=seed)
    extraction = build_cache(csv, out / "cache", extract)
    run = out / "run"
    shutil.rmtree(run, ignore_errors=True)  # the demo trains afresh each time
    training = train(out / "cache", run, TrainConfig(seed=seed))
    return DemoResult(csv, out / "cache", run, extraction, training)


def demo_summary(result: DemoResult) -> str:
    training = result.training
    return "\n".join(
        [
            metrics_table(training.metrics),
            "",
            f"videos      {result.csv.parent} ({result.csv.name})",
            f"cache       {result.cache} ({result.extraction.recordings_in_cache} recordings, "
            f"extracted in {result.extraction.seconds:.0f} s)",
            f"run         {result.run} ({training.epochs} epochs): model.keras, metrics.json, "
            "history.csv, learning_curves.png, confusion_matrix.png",
            f"next        gesture-cache train {result.cache} --out runs/try1 --units 128 --lr 3e-4",
        ]
    )


# The detection demo: continuous recordings, a run with a background class and windows of
# 4 consecutive clips (40 frames at stride 8, about one gesture), scored on unseen recordings.
DETECT_TRAIN = TrainConfig(
    background=True, window_clips=4, window_step=1, window_sampling="random", epochs=60
)


@dataclass
class DetectDemoResult:
    cache: Path
    run: Path
    extraction: ExtractSummary
    training: TrainResult
    detection: DetectionRun


def detection_demo(
    out: str | Path,
    recordings: int = 16,
    unseen: int = 3,
    gestures: int = 4,
    seed: int = 0,
    extract: ExtractConfig = DEMO_EXTRACT,
) -> DetectDemoResult:
    """synth recordings -> extract -> train with background -> detect on unseen recordings
    -> score; re-running reuses the recordings and the cache. `extract`: as for the
    classification demo."""
    out = Path(out)
    train_csv, test_csv = out / "recordings" / "segments.csv", out / "unseen" / "segments.csv"
    if not train_csv.exists():
        synth.make_recordings(train_csv.parent, recordings, gestures, seed=seed)
    if not test_csv.exists():
        synth.make_recordings(test_csv.parent, unseen, gestures, seed=seed + 1000)
    extraction = build_cache(train_csv, out / "cache", extract)
    run = out / "run"
    shutil.rmtree(run, ignore_errors=True)
    training = train(out / "cache", run, replace(DETECT_TRAIN, seed=seed))
    sources = sorted(str(p) for p in test_csv.parent.glob("*.avi"))
    detection = detect_sources(
        run,
        sources,
        out / "detections",
        DetectSettings(),
        random_weights=extract.random_weights,
        weights=extract.weights,
        truth=str(test_csv),
    )
    return DetectDemoResult(out / "cache", run, extraction, training, detection)
