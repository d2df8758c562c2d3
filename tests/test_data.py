from __future__ import annotations

import numpy as np
import pytest

from gesture_cache import open_cache
from gesture_cache.data import (
    cache_tensors,
    in_memory_dataset,
    split_videos,
    standardisation,
    streaming_dataset,
    valid_first,
)
from gesture_cache.errors import ConfigError


def make_ids(n: int = 80, classes: int = 4):
    ids = np.array([f"v{i:03d}.avi" for i in range(n)])
    labels = np.array([f"c{i % classes}" for i in range(n)])
    return ids, labels


def test_split_is_deterministic_stratified_and_independent_of_row_order():
    ids, labels = make_ids()
    groups = np.full(len(ids), "")
    split = split_videos(ids, labels, groups, 0.25, 0.15, seed=3)
    assert (split == "test").sum() == 20 and (split == "val").sum() == 12
    for c in np.unique(labels):
        assert (split[labels == c] == "test").sum() == 5  # stratified
    shuffled = np.random.default_rng(0).permutation(len(ids))
    again = split_videos(ids[shuffled], labels[shuffled], groups, 0.25, 0.15, seed=3)
    assert dict(zip(ids[shuffled], again)) == dict(zip(ids, split))
    other = split_videos(ids, labels, groups, 0.25, 0.15, seed=4)
    assert (other != split).any()


def test_grouped_split_keeps_each_group_in_one_split():
    ids, labels = make_ids(96)
    groups = np.array([f"subject{i // 4}" for i in range(96)])  # 24 subjects, 4 videos each
    split = split_videos(ids, labels, groups, 0.25, 0.15, seed=0)
    for group in np.unique(groups):
        assert len(set(split[groups == group])) == 1, group
    assert 0.15 < (split == "test").mean() < 0.35 and (split == "val").any()


def test_bad_split_sizes_are_refused():
    ids, labels = make_ids()
    with pytest.raises(ConfigError, match="--test-size"):
        split_videos(ids, labels, np.full(80, ""), 0.7, 0.4, seed=0)


def test_valid_clips_move_to_the_front_in_order():
    features = np.arange(4, dtype=np.float32).reshape(1, 4, 1) + 1
    mask = np.array([[False, True, False, True]])
    moved, moved_mask = valid_first(features, mask)
    assert moved[0, :, 0].tolist()[:2] == [2, 4] and moved_mask.tolist() == [[1, 1, 0, 0]]


def test_standardisation_treats_constant_features_as_spread_one():
    rng = np.random.default_rng(0)
    features = rng.normal(5, 2, (50, 3, 4)).astype(np.float32)
    features[:, :, 1] = 0  # a ReLU unit that never fires in training
    mask = np.ones((50, 3), bool)
    mask[:, 2] = False
    features[:, 2] = 1000  # padded clips must not count
    mean, variance = standardisation(features, mask, np.arange(50), chunk=7)
    assert variance[1] == 1 and mean[1] == 0
    assert abs(mean[0] - 5) < 0.5 and abs(variance[0] - 4) < 1.5


def test_in_memory_and_streaming_datasets_agree(small_cache):
    cache = open_cache(small_cache)
    lazy = open_cache(small_cache, load_features=False)
    assert lazy.features is None
    rows = np.array([0, 2, 3, 5, 7])
    y = np.arange(len(cache), dtype=np.int32)
    features, mask = cache_tensors(cache)
    memory = in_memory_dataset(features, mask, rows, y[rows], 2, False, 0)
    streamed = streaming_dataset(lazy, rows, y[rows], 2, True, 0)

    def collect(dataset):
        seen = {}
        for (features, mask), labels in dataset:
            assert features.dtype.name == "float32" and mask.dtype.name == "bool"
            for f, label in zip(features.numpy(), labels.numpy()):
                seen[int(label)] = f
        return seen

    a, b = collect(memory), collect(streamed)
    assert sorted(a) == sorted(b) == rows.tolist()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
