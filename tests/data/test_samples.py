"""Samples, splits and windows: segments and background as samples, stratified and grouped
splits, window placement."""

from __future__ import annotations

import numpy as np
import pytest

from gesture_cache import open_cache
from gesture_cache.common.errors import ConfigError
from gesture_cache.data.pipeline import window_dataset
from gesture_cache.data.samples import cache_samples
from gesture_cache.data.splits import split_videos
from gesture_cache.data.statistics import standardisation
from gesture_cache.data.windows import Window, window_positions, windows


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


def test_standardisation_treats_constant_features_as_spread_one():
    rng = np.random.default_rng(0)
    features = rng.normal(5, 2, (150, 4)).astype(np.float32)
    features[:, 1] = 0  # a ReLU unit that never fires in training
    features[100:] = 1000  # clips not asked for must not count
    mean, variance = standardisation(features, np.arange(100), chunk=7)
    assert variance[1] == 1 and mean[1] == 0
    assert abs(mean[0] - 5) < 0.5 and abs(variance[0] - 4) < 1.5


def test_uniform_windows_spread_over_the_sample():
    lo, hi = np.array([0, 100]), np.array([16, 104])
    positions, inside = window_positions(lo, hi, Window(4))
    assert positions[0].tolist() == [1, 5, 9, 13]  # the middle of each of 4 bins
    assert positions[1].tolist() == [100, 101, 102, 103] and inside.all()
    short, inside = window_positions(np.array([10]), np.array([12]), Window(4))
    assert short[0].tolist() == [10, 11, 11, 11] and inside[0].tolist() == [1, 1, 0, 0]


def test_center_and_stepped_windows():
    lo, hi = np.array([0]), np.array([20])
    assert window_positions(lo, hi, Window(4, sampling="center"))[0][0].tolist() == [8, 9, 10, 11]
    stepped, _ = window_positions(lo, hi, Window(3, step=5))
    assert stepped[0].tolist() == [4, 9, 14]  # span 11 centred in 20 clips
    too_long, inside = window_positions(lo, np.array([6]), Window(3, step=5))
    assert too_long[0].tolist() == [0, 5, 5] and inside[0].tolist() == [1, 1, 0]


def test_random_windows_move_every_draw_and_stay_inside():
    rng = np.random.default_rng(0)
    lo, hi = np.zeros(50, np.int64), np.full(50, 40)
    draws = [window_positions(lo, hi, Window(4, sampling="random"), rng=rng)[0] for _ in range(3)]
    assert not np.array_equal(draws[0], draws[1])
    for positions in draws:
        assert positions.min() >= 0 and positions.max() < 40
        assert (np.diff(positions, axis=1) > 0).all()  # one per bin, in order
    fixed = window_positions(lo, hi, Window(4, sampling="random"))[0]  # no rng: deterministic
    assert np.array_equal(fixed, window_positions(lo, hi, Window(4))[0])


def test_masks_put_valid_clips_first():
    valid = np.array([True, False, True, False, True])
    positions, mask = windows(np.array([0]), np.array([5]), valid, Window(5), fixed=True)
    assert positions[0].tolist()[:3] == [0, 2, 4] and mask[0].tolist() == [1, 1, 1, 0, 0]


def test_segments_become_samples_with_their_clips(small_cache):
    cache = open_cache(small_cache)
    samples = cache_samples(cache)
    assert len(samples) == 8 and set(samples.ids) == set(cache.recordings["recording_id"])
    assert ((samples.hi - samples.lo) == cache.recordings["clip_count"]).all()


def test_in_memory_and_streaming_datasets_agree(small_cache):

    cache = open_cache(small_cache)
    lazy = open_cache(small_cache, load_features=False)
    assert lazy.features is None
    samples = cache_samples(cache).take(np.array([0, 2, 3, 5, 7]))
    y = np.arange(len(samples), dtype=np.int32)
    window = Window(3)
    memory = window_dataset(cache, cache.features, samples, y, window, 2, False, 0)
    streamed = window_dataset(lazy, None, samples, y, window, 2, True, 0)

    def collect(dataset):
        seen = {}
        for (features, mask), labels in dataset:
            assert features.dtype.name == "float32" and mask.dtype.name == "uint8"
            for f, m, label in zip(features.numpy(), mask.numpy(), labels.numpy()):
                seen[int(label)] = (f, m)
        return seen

    a, b = collect(memory), collect(streamed)
    assert sorted(a) == sorted(b) == list(range(5))
    for key in a:
        np.testing.assert_array_equal(a[key][0], b[key][0])
        np.testing.assert_array_equal(a[key][1], b[key][1])


def test_a_dataset_used_and_dropped_frees_the_cache(small_cache):
    """tf.data keeps every from_generator's generator for the life of the process: one that
    held the cache kept its features (2.3 GB a run measured, so `tune` and repeated training
    in one process ran out of memory)."""
    import gc
    import weakref

    cache = open_cache(small_cache)
    samples = cache_samples(cache)
    y = np.zeros(len(samples), np.int32)
    dataset = window_dataset(cache, cache.features, samples, y, Window(3), 4, True, 0)
    for _ in dataset.take(2):
        pass
    held = weakref.ref(cache)
    del cache, dataset
    gc.collect()
    assert held() is None
