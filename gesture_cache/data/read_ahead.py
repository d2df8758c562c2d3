"""Shards read ahead on threads for streamed training (numpy only)."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gesture_cache.cache.features import read_features
from gesture_cache.cache.reader import Cache
from gesture_cache.cache.shard import read_shard

# Shards inflated at once, and read ahead of the one in use: inflating a gzip shard costs
# about as much as training on it, and inflating releases the GIL (measured, 2 cores, 30,000
# recordings: a streamed epoch 23.4 s with one reader, 15.8 s with two, 20.8 s with three).
READERS = min(4, os.cpu_count() or 1)


READ_AHEAD = 2 * READERS


@dataclass(frozen=True)
class ShardFiles:
    """Where a cache's shards lie and the first clip of each: what reading features shard
    by shard needs of the cache."""

    paths: list[Path]
    starts: np.ndarray  # each shard's first global clip index, and the clip count at the end
    schema_version: int

    @classmethod
    def of(cls, cache: Cache) -> ShardFiles:
        counts = np.bincount(
            cache.recordings["shard"],
            weights=cache.recordings["clip_count"],
            minlength=len(cache.manifest["shards"]),
        )
        return cls(
            paths=[Path(cache.path) / s["file"] for s in cache.manifest["shards"]],
            starts=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            schema_version=cache.schema_version,
        )

    def read(self, shards: np.ndarray) -> Iterator[tuple[int, int, np.ndarray]]:
        """(shard number, its first global clip index, its features), one shard at a time,
        the next READ_AHEAD read by READERS threads (`cache.stored_features`)."""
        if self.schema_version == 1:
            for shard in shards:
                stored = read_shard(self.paths[shard], 1, features=True).features
                yield int(shard), int(self.starts[shard]), stored
            return
        paths = [self.paths[s] for s in shards]
        with ThreadPoolExecutor(READERS, thread_name_prefix="shard-reader") as pool:
            reads = deque(pool.submit(read_features, p) for p in paths[:READ_AHEAD])
            for i, shard in enumerate(shards):
                if i + READ_AHEAD < len(paths):
                    reads.append(pool.submit(read_features, paths[i + READ_AHEAD]))
                yield int(shard), int(self.starts[shard]), reads.popleft().result()
