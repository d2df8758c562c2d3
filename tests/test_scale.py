"""What keeps a large cache quick: verify on every core, a verification that later loads
trust while nothing changed, standardisation statistics kept per cache and split, and the
in-memory path holding the features once."""

from __future__ import annotations

import logging
import re

import h5py
import numpy as np
import pytest

from gesture_cache.cache import verify
from gesture_cache.cache.features import read_features
from gesture_cache.cache.manifest import read_manifest
from gesture_cache.cache.reader import open_cache
from gesture_cache.cache.verify import (
    PARALLEL_SHARDS,
    VERIFIED,
    last_verified,
    load_verified_cache,
    verify_cache,
)
from gesture_cache.cli.main import main
from gesture_cache.common.errors import CacheError
from gesture_cache.data.pipeline import shared_tensor, window_dataset
from gesture_cache.data.samples import cache_samples, sample_clips
from gesture_cache.data.statistics import STATS_FOLDER, standardisation, training_standardisation
from gesture_cache.data.windows import Window
from gesture_cache.train.config import TrainConfig
from gesture_cache.train.prepare import resolve, training_data
from tests.helpers import write_continuous_cache


@pytest.fixture
def many_shards(tmp_path, small_cache):
    """40 recordings, one a shard: over PARALLEL_SHARDS, so verify uses a process per core."""
    extractor = read_manifest(small_cache)["extractor"]
    ids = [f"r{i:02d}" for i in range(40)]
    return write_continuous_cache(tmp_path / "cache", extractor, ids, clips=8, shard_size=1)


def flip_a_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_verify_on_every_core_finds_what_one_process_finds(many_shards, monkeypatch):
    assert len(read_manifest(many_shards)["shards"]) >= PARALLEL_SHARDS
    parallel = verify_cache(many_shards)
    assert parallel.problems == [] and parallel.recordings == 40
    flip_a_byte(sorted(many_shards.glob("part-*.h5"))[7])
    found = verify_cache(many_shards).problems
    monkeypatch.setattr(verify, "PARALLEL_SHARDS", 10**6)
    assert verify_cache(many_shards).problems == found
    assert len(found) == 1 and "part-00007.h5 is corrupt" in found[0]


def test_a_verified_unchanged_cache_is_not_hashed_again(many_shards, monkeypatch, caplog, capsys):
    assert main(["info", str(many_shards)]) == 0
    assert "not since it last changed" in capsys.readouterr().out
    assert main(["verify", str(many_shards)]) == 0
    assert main(["info", str(many_shards)]) == 0
    assert re.search(r"verified +\d{4}-\d\d-\d\dT.*unchanged since", capsys.readouterr().out)

    checked = []
    real_verify = verify_cache

    def counted(path, manifest=None):
        checked.append(path)
        return real_verify(path, manifest)

    monkeypatch.setattr(verify, "verify_cache", counted)
    with caplog.at_level(logging.INFO):
        load_verified_cache(many_shards, 1e9)
    assert checked == [] and "not hashed again" in caplog.text

    # a shard that changed since (here: a byte flipped, which moves its time) is checked
    flip_a_byte(sorted(many_shards.glob("part-*.h5"))[3])
    with pytest.raises(CacheError, match="part-00003.h5 is corrupt"):
        load_verified_cache(many_shards, 1e9)
    assert checked == [many_shards]
    assert last_verified(many_shards, read_manifest(many_shards)) is None


def test_a_stamp_that_cannot_be_written_costs_nothing(many_shards):
    """A cache folder where the stamp cannot be written (read-only; here its name is taken
    by a folder, which stops root too) still verifies, and is simply checked every time."""
    (many_shards / VERIFIED).mkdir()
    assert verify_cache(many_shards).problems == []
    assert (many_shards / VERIFIED).is_dir()
    assert last_verified(many_shards, read_manifest(many_shards)) is None


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


def test_features_read_raw_are_what_h5py_reads_and_damage_is_caught(many_shards):
    """Shards' features are inflated with zlib outside h5py (so threads read in parallel):
    the same arrays as h5py's, and a damaged chunk is an error naming the shard."""
    shard = sorted(many_shards.glob("part-*.h5"))[5]
    with h5py.File(shard) as f:
        expected = f["features"][()]
        chunk = f["features"].id.get_chunk_info(0)
    np.testing.assert_array_equal(read_features(shard), expected)
    content = bytearray(shard.read_bytes())
    content[chunk.byte_offset + chunk.size // 2] ^= 0x55
    shard.write_bytes(bytes(content))
    with pytest.raises(CacheError, match=f"shard {shard} cannot be read"):
        read_features(shard)


def test_a_copy_without_compression_holds_the_same_features_and_verifies(many_shards, tmp_path):
    """`merge --compression none` of one cache: larger shards with the same features, which
    verify, load and stream like gzip ones."""
    plain = tmp_path / "plain"
    assert main(["merge", str(many_shards), "--out", str(plain), "--compression", "none"]) == 0
    shard = plain / read_manifest(plain)["shards"][0]["file"]
    with h5py.File(shard) as f:
        assert f["features"].compression is None
    assert main(["verify", str(plain)]) == 0
    np.testing.assert_array_equal(open_cache(plain).features, open_cache(many_shards).features)
    np.testing.assert_array_equal(
        read_features(shard), open_cache(plain).features[: len(read_features(shard))]
    )
    assert (
        main(["merge", str(many_shards), "--out", str(tmp_path / "x"), "--compression", "lz4"]) == 2
    )
