"""Standardisation statistics: kept beside the cache per cache and split, recomputed when
they do not fit."""

from __future__ import annotations

import logging

import numpy as np

from gesture_cache.cache.reader import open_cache
from gesture_cache.data.samples import cache_samples, sample_clips
from gesture_cache.data.statistics import STATS_FOLDER, standardisation, training_standardisation


def test_standardisation_is_kept_per_cache_and_split(many_shards, caplog):
    cache = open_cache(many_shards)
    samples = cache_samples(cache)
    train_part, other_part = samples.take(np.arange(30)), samples.take(np.arange(10, 40))
    clips = sample_clips(train_part, cache.clip_valid)
    expected = standardisation(cache.features, clips)

    first = training_standardisation(cache, train_part)
    saved = sorted((many_shards / STATS_FOLDER).glob("*.npz"))
    assert len(saved) == 1
    with caplog.at_level(logging.INFO):
        again = training_standardisation(cache, train_part)
    assert "reused" in caplog.text
    for a, b, c in zip(first, again, expected):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, c)

    training_standardisation(cache, other_part)  # another split: its own file
    assert len(list((many_shards / STATS_FOLDER).glob("*.npz"))) == 2

    # a file that claims to be these statistics but holds others is recomputed
    np.savez(saved[0], key=np.array("another cache"), mean=first[0] + 1, variance=first[1])
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        recomputed = training_standardisation(cache, train_part)
    assert "does not match" in caplog.text
    np.testing.assert_array_equal(recomputed[0], expected[0])

    # streamed (features on disk) gives the same statistics, from the same file
    streamed = open_cache(many_shards, load_features=False)
    np.testing.assert_array_equal(training_standardisation(streamed, train_part)[0], expected[0])
