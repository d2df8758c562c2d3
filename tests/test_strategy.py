"""`train --strategy`: data parallelism over two logical CPU devices (as over two GPUs)."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from gesture_cache.config import TrainConfig
from gesture_cache.errors import ConfigError

TWO_CPUS = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from gesture_cache.config import TrainConfig
from gesture_cache.train import train
cache, out, strategy = sys.argv[1:]
train(cache, out, TrainConfig(epochs=4, batch_size=8, val_size=0.25, strategy=strategy))
"""


@pytest.mark.slow
@pytest.mark.parametrize(("strategy", "replicas"), [("mirrored", 2), ("auto", 1)])
def test_training_mirrors_over_two_devices_when_asked(small_cache, tmp_path, strategy, replicas):
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-c", TWO_CPUS, str(small_cache), str(run), strategy],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    config = json.loads((run / "config.json").read_text())
    assert config["replicas"] == replicas  # auto mirrors GPUs only: none here
    assert config["status"] == "finished" and (run / "model.keras").exists()
    history = pd.read_csv(run / "history.csv")
    assert len(history) == 4 and history.loss.iloc[-1] < history.loss.iloc[0]
    assert json.loads((run / "metrics.json").read_text())["accuracy"] >= 0


def test_an_unknown_strategy_names_the_setting():
    with pytest.raises(ConfigError, match="strategy = 'multiworker'"):
        TrainConfig(strategy="multiworker")
