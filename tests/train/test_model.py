"""Classifier presets: layer sizes, parameter counts, masks."""

from __future__ import annotations

import numpy as np
import pytest

from gesture_cache.common.errors import ConfigError
from gesture_cache.train.model import build_classifier, trainable_parameters


def test_reference_preset_is_the_reference_architecture():
    model = build_classifier("reference", 4, (8, 4096))
    assert trainable_parameters(model) == 46_971_556
    names = [layer.name for layer in model.layers]
    assert names[-5:] == ["bilstm_1", "bilstm_2", "bilstm_3", "dense", "classes"]


def test_compact_preset_and_overrides():
    compact = build_classifier("compact", 4, (8, 4096))
    assert trainable_parameters(compact) < 3_000_000
    gru = build_classifier("compact", 5, (3, 64), units=(8, 4), cell="gru", dense=0)
    assert [layer.name for layer in gru.layers if "bigru" in layer.name] == ["bigru_1", "bigru_2"]
    assert gru.output.shape[-1] == 5
    with pytest.raises(ConfigError, match="unknown preset"):
        build_classifier("huge", 4, (8, 4096))


def test_a_padded_clip_changes_nothing():
    rng = np.random.default_rng(0)
    model = build_classifier("compact", 4, (6, 32), mean=np.zeros(32), variance=np.ones(32))
    features = rng.normal(size=(3, 6, 32)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0]], bool)
    before = model.predict([features, mask], verbose=0)
    features[~mask] = rng.normal(0, 100, size=features[~mask].shape)
    after = model.predict([features, mask], verbose=0)
    np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-7)
    mask[0, 3] = True  # a clip that counts does change the answer
    assert not np.allclose(model.predict([features, mask], verbose=0)[0], before[0])


def test_standardisation_is_inside_the_model():
    mean, variance = np.full(8, 3.0), np.full(8, 4.0)
    model = build_classifier("compact", 2, (2, 8), mean=mean, variance=variance)
    layer = model.get_layer("standardize")
    out = layer(np.full((1, 2, 8), 5.0, np.float32))
    np.testing.assert_allclose(np.asarray(out), 1.0)


@pytest.mark.parametrize(
    "units, cell, dense, classes",
    [((1024, 256, 64), "lstm", 32, 4), ((64,), "gru", 0, 7), ((128, 64), "lstm", 0, 27)],
)
def test_the_parameter_count_is_keras_own(units, cell, dense, classes):
    """What the memory budget counts before building a model is what Keras builds."""
    from gesture_cache.train.model import parameter_count

    model = build_classifier("compact", classes, (8, 512), units=units, cell=cell, dense=dense)
    assert parameter_count(units, cell, dense, 512, classes) == trainable_parameters(model)
