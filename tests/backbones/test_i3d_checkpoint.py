"""Hostile I3D checkpoints are refused in bounded time and memory, by name."""

from __future__ import annotations

import pickle
import time

import numpy as np
import pytest

from gesture_cache.backbones.i3d.backbone import I3D
from gesture_cache.backbones.i3d.checkpoint import CheckpointError, read_checkpoint
from gesture_cache.backbones.i3d.options import Options
from gesture_cache.common.errors import ConfigError


def write(path, value):
    path.write_bytes(pickle.dumps(value, protocol=4))
    return path


def test_a_checkpoint_holding_itself_is_refused(tmp_path):
    loop: dict = {"batch_stats": {}}
    loop["params"] = loop
    path = write(tmp_path / "loop.ckpt", loop)
    assert path.stat().st_size < 100
    with pytest.raises(CheckpointError, match="appears twice"):
        read_checkpoint(path)


def test_shared_references_cannot_multiply_an_array(tmp_path):
    node: dict = {"kernel": np.zeros(1000, np.float32)}
    for _ in range(30):  # 2**30 paths to one array, in a file of a few kB
        node = {"left": node, "right": node}
    path = write(tmp_path / "bomb.ckpt", {"params": node, "batch_stats": {}})
    assert path.stat().st_size < 10_000
    started = time.monotonic()
    with pytest.raises(CheckpointError, match="appears twice"):
        read_checkpoint(path)
    assert time.monotonic() - started < 5


def test_a_deep_checkpoint_is_refused(tmp_path):
    node: dict = {"kernel": np.zeros(2, np.float32)}
    for _ in range(200):
        node = {"deeper": node}
    with pytest.raises(CheckpointError, match="deeper than"):
        read_checkpoint(write(tmp_path / "deep.ckpt", {"params": node, "batch_stats": {}}))


def test_weights_that_name_a_folder_say_so(tmp_path):
    with pytest.raises(ConfigError, match="is a folder"):
        I3D(Options(), weights=tmp_path)
