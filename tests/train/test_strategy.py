"""`train --strategy`: data parallelism over two logical CPU devices (as over two GPUs)."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from gesture_cache.common.errors import ConfigError
from gesture_cache.train.config import TrainConfig
from gesture_cache.train.prepare import check_even_first_batches, resolve, training_data

TWO_CPUS = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from gesture_cache.train.config import TrainConfig
from gesture_cache.train.fit import train
cache, out, strategy, batch = sys.argv[1:]
train(cache, out, TrainConfig(epochs=4, batch_size=int(batch), val_size=0.25, strategy=strategy))
"""


@pytest.mark.slow
@pytest.mark.parametrize(("strategy", "replicas"), [("mirrored", 2), ("auto", 1)])
def test_training_mirrors_over_two_devices_when_asked(small_cache, tmp_path, strategy, replicas):
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-c", TWO_CPUS, str(small_cache), str(run), strategy, "8"],
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


@pytest.mark.slow
def test_a_batch_that_cannot_split_evenly_is_refused_before_any_file(small_cache, tmp_path):
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-c", TWO_CPUS, str(small_cache), str(run), "mirrored", "3"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode != 0, done.stderr[-2000:]
    assert "--batch-size 3 does not split evenly over 2 replicas" in done.stderr
    assert not run.exists()


def test_an_uneven_first_batch_is_refused(small_cache):
    """Keras averages the first batch over the replicas: 3 samples cannot split in 2."""
    two = SimpleNamespace(num_replicas_in_sync=2)
    in_memory = training_data(small_cache, resolve(TrainConfig()))
    split = np.array(["train"] * 4 + ["val"] * 3 + ["test"] * (len(in_memory.samples) - 7))
    with pytest.raises(ConfigError, match="first val batch of 3 samples"):
        check_even_first_batches(in_memory, split, 4, two)
    check_even_first_batches(in_memory, split, 2, two)  # [2, 1]: the first is even
    check_even_first_batches(in_memory, split, 4, SimpleNamespace(num_replicas_in_sync=1))
    streamed = training_data(small_cache, resolve(TrainConfig(memory_limit_mb=0)))
    # two shards of 3 recordings (which recordings share a shard depends on the order the
    # decode workers finish them)
    shards, counts = np.unique(streamed.samples.shard, return_counts=True)
    split = np.where(np.isin(streamed.samples.shard, shards[counts == 3][:2]), "train", "test")
    assert (split == "train").sum() == 6
    with pytest.raises(ConfigError, match="first train batch of 3"):  # batches stay in a shard
        check_even_first_batches(streamed, split, 8, two)


def test_an_unknown_strategy_names_the_setting():
    with pytest.raises(ConfigError, match="strategy = 'multiworker'"):
        TrainConfig(strategy="multiworker")
