"""Schema-1 shards, read-only: a fixed (T, D) per video and one label each, read as
recordings of T clips with one segment."""

from __future__ import annotations

import h5py
import numpy as np

from gesture_cache.cache.manifest import ShardContent


def read_schema1(f: h5py.File, features: bool) -> ShardContent:
    """Schema 1: each video a recording of T clips (its mask as validity), one segment."""
    n, T = f["mask"].shape
    ids = f["video_id"].asstr()[()]
    n_frames = f["n_frames"][()]
    unknown = np.full(n, -1)
    recordings = {
        "recording_id": ids,
        "sha256": f["video_sha256"].asstr()[()],
        "clip_offset": np.arange(n) * T,
        "clip_count": np.full(n, T),
        "n_frames": n_frames,
        "fps": f["fps"][()],
        "height": f["height"][()],
        "width": f["width"][()],
    }
    for column in ("claimed_frames", "file_size", "file_mtime"):
        recordings[column] = f[column][()] if column in f else unknown
    segments = {
        "recording_id": ids,
        "label": f["label"].asstr()[()],
        "group": f["group"].asstr()[()],
        "start_frame": np.zeros(n, np.int64),
        "end_frame": n_frames.astype(np.int64),
        "row": np.zeros(n, np.int64),
    }
    for column in f.get("extra", {}):
        segments[f"extra/{column}"] = f["extra"][column].asstr()[()]
    stored = f["features"][()].reshape(n * T, -1) if features else None
    return ShardContent(
        recordings, segments, np.full(n * T, -1, np.int64), f["mask"][()].ravel(), stored
    )
