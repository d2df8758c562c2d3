"""The tf.data pipelines: features held once in memory and shared with the tensor that
gathers from them, streamed batches equal to the in-memory ones, a dropped dataset frees
the cache."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from gesture_cache.cache.manifest import read_manifest
from gesture_cache.cache.reader import open_cache
from gesture_cache.data.pipeline import shared_tensor, window_dataset
from gesture_cache.data.samples import cache_samples
from gesture_cache.data.windows import Window
from gesture_cache.train.config import TrainConfig
from gesture_cache.train.prepare import resolve, training_data


def test_the_in_memory_path_holds_the_features_once(many_shards):
    """One array read shard by shard into place, and training gathers from that same array
    (no tensor copy)."""
    prepared = training_data(many_shards, resolve(TrainConfig(memory_limit_mb=1e9)))
    assert prepared.features is prepared.cache.features
    shards = [s["file"] for s in read_manifest(many_shards)["shards"]]
    stored = []
    for name in shards:
        with h5py.File(many_shards / name) as f:
            stored.append(f["features"][()])
    np.testing.assert_array_equal(prepared.features, np.concatenate(stored))


def test_the_tensor_training_gathers_from_shares_the_cache_array(many_shards):
    """tf.data gathers from a tensor over the cache's own memory: a change to the array shows
    in the tensor (a copy would not), and an unaligned array is copied rather than crashing
    TensorFlow's kernels."""
    import tensorflow as tf

    features = open_cache(many_shards).features
    tensor = shared_tensor(features)
    positions = tf.constant([[0, 5], [9, 3]], tf.int64)
    np.testing.assert_array_equal(tf.gather(tensor, positions).numpy(), features[[[0, 5], [9, 3]]])
    features[5, :3] = [1.5, -2.0, 7.0]
    np.testing.assert_array_equal(tensor.numpy()[5, :3], [1.5, -2.0, 7.0])

    unaligned = np.frombuffer(b"  " + features.tobytes(), np.uint8)[2:].view(features.dtype)
    unaligned = unaligned.reshape(features.shape)
    assert unaligned.ctypes.data % 64
    copied = shared_tensor(unaligned)
    np.testing.assert_array_equal(tf.gather(copied, positions).numpy(), features[[[0, 5], [9, 3]]])


@pytest.mark.parametrize("shuffle", [False, True])
def test_streamed_batches_are_the_in_memory_batches_across_shards(many_shards, shuffle):
    """Streaming gathers each shard's windows inside tf.data: unshuffled, it yields the
    in-memory path's batches in the same order; shuffled, the same windows. Every batch is
    full but the last, though batches straddle shards (one recording a shard, batch 3)."""
    cache = open_cache(many_shards)
    lazy = open_cache(many_shards, load_features=False)
    samples = cache_samples(cache)
    y = np.arange(len(samples), dtype=np.int32)
    window = Window(3)

    def batches(dataset):
        return [(f.numpy(), m.numpy(), c.numpy()) for (f, m), c in dataset]

    memory = batches(window_dataset(cache, cache.features, samples, y, window, 3, False, 0))
    streamed = batches(window_dataset(lazy, None, samples, y, window, 3, shuffle, 0))
    full, rest = divmod(len(samples), 3)
    assert len(samples) > 40 and rest  # more samples than shards, and a partial last batch
    assert [len(c) for *_, c in streamed] == [3] * full + [rest]
    if not shuffle:
        for (f, m, c), (g, n, d) in zip(memory, streamed, strict=True):
            np.testing.assert_array_equal(c, d)
            np.testing.assert_array_equal(m, n)
            np.testing.assert_array_equal(f, g)
    else:  # a window is known by its sample's label
        features = {int(c): (f, m) for fs, ms, cs in memory for f, m, c in zip(fs, ms, cs)}
        labels = np.concatenate([c for *_, c in streamed])
        assert sorted(labels.tolist()) == list(range(len(samples)))
        assert labels.tolist() != sorted(labels.tolist())
        for fs, ms, cs in streamed:
            for f, m, c in zip(fs, ms, cs):
                np.testing.assert_array_equal(m, features[int(c)][1])
                assert np.isin(f[m == 1], cache.features[samples.lo[c] : samples.hi[c]]).all()


def test_a_streamed_dataset_used_and_dropped_frees_the_cache(many_shards):
    """tf.data keeps every generator for the process' life: the streamed one must hold the
    shards' paths, not the cache's tables (or each `tune` trial would keep them)."""
    import gc
    import weakref

    cache = open_cache(many_shards, load_features=False)
    samples = cache_samples(cache)
    y = np.zeros(len(samples), np.int32)
    dataset = window_dataset(cache, None, samples, y, Window(3), 4, True, 0)
    for _ in dataset.take(2):
        pass
    held = [weakref.ref(cache.recordings["recording_id"]), weakref.ref(cache.clip_start)]
    del cache, dataset
    gc.collect()
    assert [ref() for ref in held] == [None, None]
