"""One shard's format and how it is read (schema 2).

A schema-2 shard holds recordings whole, the way ragged arrays are stored: `features`
(clips, D) and `clip_start`/`clip_valid` (clips,), per recording `clip_offset`/`clip_count`
and its provenance, and a segment table (`segments/...`): recording_id, label, start_frame,
end_frame (exclusive), group, row, and the CSV's other columns. Its numeric tables carry
HDF5's fletcher32 checksum and their SHA-256 (`tables_sha256`), checked on every read.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import h5py
import numpy as np

from gesture_cache.cache.features import shard_errors, stored_features
from gesture_cache.cache.manifest import (
    FORMAT,
    SCHEMA_VERSION,
    TABLES_SHA256,
    CachedRecording,
    Segment,
    ShardContent,
    feature_dim,
    shard_path,
)
from gesture_cache.cache.schema1 import read_schema1
from gesture_cache.common.errors import CacheError
from gesture_cache.common.hdf5 import IndirectionError, open_plain

COMPRESSIONS = ("gzip", "none")  # how shards store features (`cache.shard_image`)


STRING = h5py.string_dtype("utf-8")


RECORDING_TEXT = ("recording_id", "sha256")


RECORDING_NUMBERS = {
    "clip_offset": np.int64,
    "clip_count": np.int64,
    "n_frames": np.int64,
    "fps": np.float32,
    "height": np.int32,
    "width": np.int32,
    "claimed_frames": np.int64,
    "file_size": np.int64,
    "file_mtime": np.float64,
}


SEGMENT_TEXT = ("recording_id", "label", "group")


SEGMENT_NUMBERS = {"start_frame": np.int64, "end_frame": np.int64, "row": np.int64}


def read_shard(path: Path, schema_version: int, features: bool = False) -> ShardContent:
    """A shard's tables (and features); a missing or unreadable part, or tables that do not
    match their checksum, is a CacheError naming the shard."""
    with shard_errors(path), open_plain(path, f"shard {path}") as f:
        return read_schema1(f, features) if schema_version == 1 else _read_v2(f, features, path)


def _read_v2(f: h5py.File, features: bool, path: Path) -> ShardContent:
    names = ["clip_start", "clip_valid", *RECORDING_TEXT, *RECORDING_NUMBERS]
    names += [f"segments/{c}" for c in (*SEGMENT_TEXT, *SEGMENT_NUMBERS)]
    names += [f"segments/extra/{c}" for c in f["segments"].get("extra", {})]
    tables = {name: _read_table(f[name]) for name in names}
    expected = f.attrs.get(TABLES_SHA256)
    if expected is not None and tables_digest(tables) != expected:
        raise CacheError(
            f"shard {path}: its tables (clip starts, recordings, segments) do not match their "
            f"checksum: damaged since it was written; `gesture-cache repair` sets it aside"
        )
    segments = {
        name.removeprefix("segments/"): values
        for name, values in tables.items()
        if name.startswith("segments/")
    }
    return ShardContent(
        {c: tables[c] for c in (*RECORDING_TEXT, *RECORDING_NUMBERS)},
        segments,
        tables["clip_start"],
        tables["clip_valid"],
        stored_features(f["features"]) if features else None,
        None if expected is None else str(expected),
    )


def _read_table(dataset: h5py.Dataset) -> np.ndarray:
    if h5py.check_string_dtype(dataset.dtype) is not None:
        return dataset.asstr()[()]
    return dataset[()]


def tables_digest(tables: dict[str, np.ndarray]) -> str:
    """sha256 over every table of a shard (name, type, values; text as JSON): HDF5's
    fletcher32 filter checks numbers, but not variable-length strings."""
    digest = hashlib.sha256()
    for name in sorted(tables):
        values = np.asarray(tables[name])
        if values.dtype == object:
            data = json.dumps([str(v) for v in values.tolist()], ensure_ascii=False).encode()
        else:
            data = np.ascontiguousarray(values).tobytes()
        digest.update(f"{name}\0{values.dtype.str}\0{len(values)}\0{len(data)}\n".encode())
        digest.update(data)
    return digest.hexdigest()


def shard_tables(recordings: list[CachedRecording]) -> dict[str, np.ndarray]:
    """Every dataset of a schema-2 shard but its features, by its path in the file: the clip
    arrays, the recording table and the segment table (text as object arrays)."""
    counts = np.array([len(r.features) for r in recordings], np.int64)
    segments = [(r.recording_id, s) for r in recordings for s in r.segments]

    def text(values: list[str]) -> np.ndarray:
        return np.array(values, dtype=object)

    tables = {
        "clip_start": np.concatenate([r.clip_start for r in recordings]).astype(np.int64),
        "clip_valid": np.concatenate([r.clip_valid for r in recordings]).astype(bool),
        "recording_id": text([r.recording_id for r in recordings]),
        "sha256": text([r.sha256 for r in recordings]),
        "clip_offset": np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64),
        "clip_count": counts,
    }
    for column, dtype in RECORDING_NUMBERS.items():
        if column not in tables:
            tables[column] = np.asarray([getattr(r, column) for r in recordings], dtype)
    tables["segments/recording_id"] = text([rid for rid, _ in segments])
    for column in ("label", "group"):
        tables[f"segments/{column}"] = text([getattr(s, column) for _, s in segments])
    for column, dtype in SEGMENT_NUMBERS.items():
        tables[f"segments/{column}"] = np.array([getattr(s, column) for _, s in segments], dtype)
    for column in sorted({c for _, s in segments for c in s.extra}):
        tables[f"segments/extra/{column}"] = text([s.extra.get(column, "") for _, s in segments])
    return tables


def shard_image(
    recordings: list[CachedRecording], manifest: dict, software: dict, compression: str = "gzip"
) -> tuple[bytes, str]:
    """A schema-2 shard as bytes, and the checksum of its tables: built in memory, so that a
    full disk fails a plain write (with a message) instead of failing inside HDF5.
    `compression` "gzip" stores the features in about 0.4-0.8 of their size (0.4 for fc7 with
    70 % zeros), "none" reads them about 10x faster: what streaming a cache larger than
    memory needs on few cores. Features and number tables carry HDF5's fletcher32 chunk
    checksums; every table, text included, is covered by `tables_sha256`."""
    features = np.concatenate([r.features for r in recordings]).astype(manifest["dtype"])
    tables = shard_tables(recordings)
    digest = tables_digest(tables)
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["fingerprint"] = manifest["fingerprint"]
        f.attrs["extractor"] = json.dumps(manifest["extractor"], sort_keys=True)
        f.attrs["software"] = json.dumps(software, sort_keys=True)
        f.attrs[TABLES_SHA256] = digest
        f.create_dataset(
            "features",
            data=features,
            chunks=(min(len(features), 64), features.shape[1]),
            compression="gzip" if compression == "gzip" else None,
            compression_opts=4 if compression == "gzip" else None,
            fletcher32=True,
        )
        f.require_group("segments/extra")
        for name, values in tables.items():
            if values.dtype == object:
                f.create_dataset(name, data=values.tolist(), dtype=STRING)
            else:
                f.create_dataset(name, data=values, fletcher32=len(values) > 0)
    return buffer.getvalue(), digest


def read_shard_recordings(path: Path) -> list[CachedRecording]:
    """A schema-2 shard back as CachedRecordings (for merge and repair)."""
    content = read_shard(path, SCHEMA_VERSION, features=True)
    recordings, segments = content.recordings, content.segments
    extras = [c for c in segments if c.startswith("extra/")]
    result = []
    for i, recording_id in enumerate(recordings["recording_id"]):
        lo = int(recordings["clip_offset"][i])
        hi = lo + int(recordings["clip_count"][i])
        mine = np.flatnonzero(segments["recording_id"] == recording_id)
        result.append(
            CachedRecording(
                recording_id=str(recording_id),
                sha256=str(recordings["sha256"][i]),
                features=content.features[lo:hi],
                clip_start=content.clip_start[lo:hi],
                clip_valid=content.clip_valid[lo:hi],
                segments=[
                    Segment(
                        label=str(segments["label"][j]),
                        start_frame=int(segments["start_frame"][j]),
                        end_frame=int(segments["end_frame"][j]),
                        group=str(segments["group"][j]),
                        row=int(segments["row"][j]),
                        extra={c.removeprefix("extra/"): str(segments[c][j]) for c in extras},
                    )
                    for j in mine
                ],
                **{c: recordings[c][i].item() for c in RECORDING_NUMBERS if "clip_" not in c},
            )
        )
    return result


def inspect_shard(path: Path, manifest: dict) -> tuple[str | None, ShardContent | None]:
    """What is wrong with one shard against the manifest (None: nothing), and its content
    with features as read for the checks (None when it cannot be read): attributes, every
    table present and consistent, features of the right size and type and finite."""
    version = manifest["schema_version"]
    try:
        with open_plain(path, f"shard {path}") as f:
            if f.attrs.get("fingerprint") != manifest["fingerprint"]:
                attributes = "its fingerprint differs from the manifest's"
            elif f.attrs.get("schema_version") != version:
                attributes = f"schema_version {f.attrs.get('schema_version')}"
            else:
                attributes = None
    except OSError as error:
        return f"cannot be read ({error})", None
    except IndirectionError as error:
        return str(error).removeprefix(f"shard {path}: "), None
    try:
        content = read_shard(path, version, features=True)
    except CacheError as error:
        return attributes or str(error), None
    return attributes or _content_problem(content, manifest), content


def all_finite(features: np.ndarray) -> bool:
    """No inf or NaN. float16 by its exponent bits (all ones: inf or NaN), 7x faster than
    np.isfinite, which converts each value."""
    if features.dtype == np.float16:
        return bool(((features.view(np.uint16) & 0x7C00) != 0x7C00).all())
    return bool(np.isfinite(features).all())


def _content_problem(content: ShardContent, manifest: dict) -> str | None:
    features, recordings, segments = content.features, content.recordings, content.segments
    if features.ndim != 2 or features.shape[1] != feature_dim(manifest):
        return f"features of shape {features.shape}, the manifest says {feature_dim(manifest)} wide"
    if features.dtype != np.dtype(manifest["dtype"]):
        return f"features are {features.dtype}, the manifest says {manifest['dtype']}"
    if not all_finite(features):
        return "features hold inf or NaN"
    clips = len(features)
    if len(content.clip_start) != clips or len(content.clip_valid) != clips:
        return f"clip_start/clip_valid do not have {clips} rows"
    for table in (recordings, segments):
        lengths = {len(v) for v in table.values()}
        if len(lengths) > 1:
            return f"columns of unequal length {sorted(lengths)}"
    ends = recordings["clip_offset"] + recordings["clip_count"]
    starts = np.concatenate([[0], ends[:-1]])
    if (recordings["clip_count"] < 1).any() or (recordings["clip_offset"] != starts).any():
        return "clip_offset/clip_count do not tile the clips"
    if len(ends) and ends[-1] != clips or not len(ends) and clips:
        return "clip_offset/clip_count do not cover every clip"
    if not set(segments["recording_id"]) <= set(recordings["recording_id"]):
        return "segments name recordings the shard does not hold"
    if (segments["start_frame"] >= segments["end_frame"]).any() or (
        segments["start_frame"] < 0
    ).any():
        return "a segment has start_frame >= end_frame or a negative start"
    return None


def frame_shortfalls(folder: str | Path, manifest: dict) -> list[tuple[str, int, int]]:
    """(recording id, claimed, decoded) for recordings that decode fewer frames than they
    claim: from the manifest (written since each shard lists them), else from the shards."""
    if all(isinstance(s.get("short"), list) for s in manifest["shards"]):
        return [(str(v), int(c), int(d)) for s in manifest["shards"] for v, c, d in s["short"]]
    found = []
    for shard in manifest["shards"]:
        path = shard_path(Path(folder), shard["file"])
        recordings = read_shard(path, manifest["schema_version"]).recordings
        claimed, decoded = recordings["claimed_frames"], recordings["n_frames"]
        for i in np.flatnonzero(claimed > decoded):
            found.append((str(recordings["recording_id"][i]), int(claimed[i]), int(decoded[i])))
    return found


def _join(arrays: list[np.ndarray], empty: np.ndarray) -> np.ndarray:
    return np.concatenate(arrays) if arrays else empty


def _join_tables(tables: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate tables; a column some shards lack (an extra CSV column) is blank there."""
    if not tables:  # an empty cache still has every column
        names = (*RECORDING_TEXT, *SEGMENT_TEXT, *RECORDING_NUMBERS, *SEGMENT_NUMBERS, "shard")
        return {
            c: np.empty(0, object if c in (*RECORDING_TEXT, *SEGMENT_TEXT) else np.int64)
            for c in names
        }
    columns = sorted({c for t in tables for c in t})
    joined = {}
    for column in columns:
        parts = [
            t[column] if column in t else np.full(len(next(iter(t.values()))), "", object)
            for t in tables
        ]
        joined[column] = np.concatenate(parts)
    return joined
