"""Opening a cache: every shard verified and loaded into one in-memory `Cache`."""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gesture_cache.cache.features import read_features_into
from gesture_cache.cache.manifest import (
    check_shard_hashes,
    feature_dim,
    read_manifest,
    shard_path,
    shard_recordings,
)
from gesture_cache.cache.shard import RECORDING_TEXT, _join, _join_tables, read_shard
from gesture_cache.common.errors import CacheError


@dataclass
class Cache:
    """A cache loaded into memory: every clip, every recording, every segment.

    `recordings` and `segments` are tables (column name -> array); a recording's clips are
    `clip_offset` to `clip_offset + clip_count` of the clip arrays, and `shard` says which
    shard holds it."""

    path: Path
    manifest: dict
    features: np.ndarray | None  # (clips, D), the stored dtype; None when not loaded
    clip_start: np.ndarray
    clip_valid: np.ndarray
    recordings: dict[str, np.ndarray]
    segments: dict[str, np.ndarray]

    @property
    def schema_version(self) -> int:
        return self.manifest["schema_version"]

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def feature_dim(self) -> int:
        return feature_dim(self.manifest)

    @property
    def random_weights(self) -> bool:
        return "random_seed" in self.manifest["extractor"]["weights"]

    @property
    def fixed_clips(self) -> int | None:
        """T for a schema-1 cache (every video is its T stored clips), else None."""
        return self.manifest["feature_shape"][0] if self.schema_version == 1 else None

    @property
    def content_digest(self) -> str:
        """sha256 over the sorted recordings (id, file sha256) and segments: which data, not
        how it was extracted."""
        recordings = sorted(zip(*(self.recordings[c].tolist() for c in RECORDING_TEXT)))
        columns = ("recording_id", "label", "start_frame", "end_frame")
        segments = sorted(zip(*(self.segments[c].tolist() for c in columns)))
        return hashlib.sha256(json.dumps([recordings, segments]).encode()).hexdigest()


def open_cache(
    path: str | Path,
    load_features: bool = True,
    check_hashes: bool = True,
    manifest: dict | None = None,
) -> Cache:
    """Check the manifest and every shard's sha256, then load the cache into memory (all but
    the features with `load_features=False`, for streaming). `check_hashes=False` only for
    a cache `verify_cache` has just passed; `manifest`: the one read already."""
    folder = Path(path)
    manifest = manifest or read_manifest(folder)
    if check_hashes:
        check_shard_hashes(folder, manifest)
    # schema 2: tables first, then every shard's features read straight into one array,
    # so the features are held once (a list of shards joined afterwards held them twice)
    direct = load_features and manifest["schema_version"] != 1
    contents = []
    for number, shard in enumerate(manifest["shards"]):
        content = read_shard(
            shard_path(folder, shard["file"]),
            manifest["schema_version"],
            load_features and not direct,
        )
        if len(content.recordings["recording_id"]) != shard_recordings(manifest, shard):
            raise CacheError(f"shard {shard['file']} holds another number of recordings")
        content.recordings["shard"] = np.full(len(content.recordings["recording_id"]), number)
        contents.append(content)
    clip_counts = [len(c.clip_valid) for c in contents]
    starts = np.concatenate([[0], np.cumsum(clip_counts)])
    for content, start in zip(contents, starts):
        content.recordings["clip_offset"] = content.recordings["clip_offset"] + start
    dim = feature_dim(manifest)
    features = None
    if direct:  # shards inflate in parallel (ISA-L releases the GIL), each into its rows
        features = aligned_empty((int(starts[-1]), dim), manifest["dtype"])
        paths = [shard_path(folder, shard["file"]) for shard in manifest["shards"]]
        parts = [features[lo:hi] for lo, hi in zip(starts[:-1], starts[1:])]
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            list(pool.map(read_features_into, paths, parts))
    elif load_features:
        features = _join([c.features for c in contents], np.empty((0, dim), manifest["dtype"]))
    return Cache(
        folder,
        manifest,
        features,
        _join([c.clip_start for c in contents], np.empty(0, np.int64)),
        _join([c.clip_valid for c in contents], np.empty(0, bool)),
        _join_tables([c.recordings for c in contents]),
        _join_tables([c.segments for c in contents]),
    )


ALIGNMENT = 64  # bytes: TensorFlow's CPU kernels need this to use an array's memory as theirs


def aligned_empty(shape: tuple[int, ...], dtype: str | np.dtype) -> np.ndarray:
    """`np.empty` whose data starts on an ALIGNMENT boundary, so that training can wrap the
    features in a tensor without copying them (`data.shared_tensor`)."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    buffer = np.empty(size + ALIGNMENT, np.uint8)
    skip = -buffer.ctypes.data % ALIGNMENT
    return buffer[skip : skip + size].view(dtype).reshape(shape)
