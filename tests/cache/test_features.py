"""Reading a shard's features raw: the same values as h5py, and damage caught."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from gesture_cache.cache.features import read_features
from gesture_cache.common.errors import CacheError


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
