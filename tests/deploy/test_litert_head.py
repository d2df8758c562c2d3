"""The LiteRT head of every preset matches Keras on masked windows, stacked recurrent layers
included (Keras' own unrolled backward layer does not: keras-team/keras#17596)."""

from __future__ import annotations

import numpy as np
import pytest

from gesture_cache.deploy.heads import checked_head
from gesture_cache.deploy.litert_head import export_litert_head, unrolled_head
from gesture_cache.train.model import PRESETS, build_classifier

pytest.importorskip("ai_edge_litert")


def windows(count: int = 24, steps: int = 8, dim: int = 32):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(count, steps, dim)).astype(np.float32)
    masks = np.zeros((count, steps), bool)
    for row, valid in zip(masks, rng.integers(1, steps + 1, count)):
        row[:valid] = True  # right-padded, as training and detection give them
    return features, masks


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_presets_litert_head_keeps_its_parity(preset, tmp_path):
    features, masks = windows()
    rng = np.random.default_rng(1)
    model = build_classifier(preset, 5, features.shape[1:], mean=rng.normal(size=32),
                             variance=rng.uniform(0.5, 2, 32))  # fmt: skip
    reference = model.predict_on_batch([features, masks])
    assert np.abs(unrolled_head(model).predict_on_batch([features, masks]) - reference).max() < 1e-5
    export_litert_head(model, tmp_path / "head.tflite", None)
    parity = checked_head(tmp_path, "litert", "head.tflite", "float32", features, masks, reference)
    assert parity["parity"]["top_class_agreement"] == 1.0
