"""Preparing training data: `--background` without background stretches is refused."""

from __future__ import annotations

import json
import shutil

import pytest

from gesture_cache.common.errors import RunError
from gesture_cache.detect.detector import load_detector
from gesture_cache.train.config import TrainConfig
from gesture_cache.train.fit import train


def test_background_without_background_stretches_is_refused(small_cache, tmp_path, detector):
    run = tmp_path / "run"
    with pytest.raises(RunError, match="no background stretches"):
        train(small_cache, run, TrainConfig(background=True, epochs=1))
    assert not run.exists()
    old = tmp_path / "old"  # a run written before this check: no background class in it
    shutil.copytree(detector.run, old)
    config = json.loads((old / "config.json").read_text())
    config["classes"] = [c for c in config["classes"] if c != "no_gesture"]
    (old / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunError, match="no background class"):
        load_detector(old)
