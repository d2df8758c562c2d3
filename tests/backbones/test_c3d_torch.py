"""C3D on the torch backend runs as one PyTorch module made from the Keras network
(backbones/c3d/torch_network.py): the Keras model's features within 1e-5 in float32, for
every preprocessing, mean and layer, and within bf16's rounding in mixed_bfloat16."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gesture_cache.backbones import keras_backends

# Run under KERAS_BACKEND=torch (Keras picks one backend a process): for each setting, the
# largest difference between the module and the Keras model, relative to the largest value.
COMPARE = """
import json, sys
import numpy as np
from gesture_cache.backbones.c3d.backbone import C3D
from gesture_cache.backbones.c3d.network import feature_extractor
from gesture_cache.backbones.c3d.options import Options

clips = np.random.default_rng(0).integers(0, 256, (3, 16, 112, 112, 3), np.uint8)
np.save(sys.argv[1], np.random.default_rng(1).uniform(60, 120, (16, 128, 171, 3)))
settings = {
    "c3d fc7": Options(),
    "reference fc6": Options(preprocess="reference", layer="fc6"),
    "mean cube": Options(mean_file=sys.argv[1]),
    "mixed_bfloat16": Options(precision="mixed_bfloat16"),
}
errors = {}
for name, options in settings.items():
    c3d = C3D(options, random_seed=0, backend="torch", batch_clips=2)
    ours = c3d.forward(clips)
    keras_model = feature_extractor(c3d.network("float32"), c3d.layer, c3d.preprocessing,
                                    c3d.mean_cube())
    expected = keras_model.predict_on_batch(clips)
    assert ours.dtype == np.float32 and ours.shape == expected.shape, (ours.shape, name)
    errors[name] = float(np.abs(ours - expected).max() / np.abs(expected).max())
print(json.dumps(errors))
"""


@pytest.mark.slow
@pytest.mark.skipif(not keras_backends.installed("torch"), reason="PyTorch is not installed")
def test_the_torch_module_computes_the_keras_models_features(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    done = subprocess.run(
        [sys.executable, "-c", COMPARE, str(tmp_path / "mean.npy")],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    errors = json.loads(done.stdout.strip().splitlines()[-1])
    for name in ("c3d fc7", "reference fc6", "mean cube"):
        assert errors[name] < 1e-5, errors
    assert 1e-5 < errors["mixed_bfloat16"] < 3e-2, errors  # computed in bf16, not float32
