"""`train --reduce pca:N`: a fixed projection onto the training clips' principal components,
inside the model (so predict, detect and export apply it), fitted on the training part only."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime
import pytest

from gesture_cache.cache.manifest import read_manifest
from gesture_cache.cache.reader import open_cache
from gesture_cache.common.errors import ConfigError
from gesture_cache.data.samples import cache_samples
from gesture_cache.data.statistics import pca_projection, training_standardisation
from gesture_cache.deploy.onnx_head import head_graph
from gesture_cache.train.config import TrainConfig
from gesture_cache.train.fit import train
from gesture_cache.train.model import trainable_parameters
from gesture_cache.train.prepare import resolve, training_data
from gesture_cache.train.run_folder import load_best_model, read_split_table
from tests.helpers import write_continuous_cache

SMALL = {"epochs": 3, "patience": 3, "units": (8,), "dense": 0, "window_clips": 3, "lr": 3e-3}


@pytest.fixture(scope="module")
def cache(tmp_path_factory, small_cache):
    extractor = read_manifest(small_cache)["extractor"]
    ids = [f"r{i:02d}" for i in range(24)]
    return write_continuous_cache(tmp_path_factory.mktemp("reduce") / "cache", extractor, ids)


@pytest.mark.slow
def test_the_projection_is_fitted_on_training_clips_and_stored_in_the_model(cache, tmp_path):
    run = tmp_path / "run"
    train(cache, run, TrainConfig(**SMALL, reduce="pca:6"))
    model = load_best_model(run)
    reduce = model.get_layer("reduce")
    assert reduce.units == 6 and not reduce.trainable
    assert json.loads((run / "config.json").read_text())["hparams"]["reduce"] == "pca:6"

    # the same projection, recomputed from the run's training part alone
    prepared = training_data(cache, resolve(TrainConfig(**SMALL)))
    part = read_split_table(run / "split.csv")
    rows = np.flatnonzero([part[i] == "train" for i in prepared.samples.ids])
    assert 0 < len(rows) < len(prepared.samples)
    samples = prepared.samples.take(rows)
    mean, variance = training_standardisation(prepared.cache, samples)
    kernel, bias = pca_projection(prepared.cache, samples, mean, variance, 6, 0)
    stored_kernel, stored_bias = reduce.get_weights()
    np.testing.assert_allclose(stored_kernel, kernel, atol=1e-5)
    np.testing.assert_allclose(stored_bias, bias, atol=1e-4)

    # far fewer weights to learn than without the projection
    full = tmp_path / "full"
    train(cache, full, TrainConfig(**SMALL))
    assert trainable_parameters(model) < trainable_parameters(load_best_model(full)) / 50

    # the exported head applies it: ONNX Runtime agrees with Keras
    rng = np.random.default_rng(0)
    windows = rng.normal(0, 1, (5, 3, 4096)).astype(np.float32)
    mask = np.ones((5, 3), bool)
    mask[1, 2] = False
    graph = head_graph(model, "lstm").SerializeToString()
    session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {"features": windows, "mask": mask})
    keras_out = model.predict([windows, mask], verbose=0)
    np.testing.assert_allclose(onnx_out, keras_out, atol=1e-5)


def test_a_projection_that_cannot_be_fitted_is_refused(cache, tmp_path):
    for setting in ("pca:0", "svd:4", "pca", "pca:x"):
        with pytest.raises(ConfigError, match="pca:N"):
            TrainConfig(reduce=setting)
    with pytest.raises(ConfigError, match="give at most"):
        train(cache, tmp_path / "big", TrainConfig(**SMALL, reduce="pca:5000"))
    assert not (tmp_path / "big").exists()  # refused before the run folder is written


def test_streamed_and_in_memory_fit_the_same_projection(cache):
    memory, streamed = open_cache(cache), open_cache(cache, load_features=False)
    samples = cache_samples(memory).take(np.arange(10))
    mean, variance = training_standardisation(memory, samples)
    a = pca_projection(memory, samples, mean, variance, 4, 1)
    b = pca_projection(streamed, samples, mean, variance, 4, 1)
    np.testing.assert_array_equal(a[0], b[0])
