"""The on-disk cache: manifest, shards, reading (schema 2, and schema 1 read-only).

    CACHE/manifest.json   what the cache is; the only file a reader must trust first
    CACHE/part-00000.h5   shards, immutable once named
    CACHE/failures.jsonl  one line per recording or row that could not be used

A schema-2 shard holds recordings whole, the way ragged arrays are stored: `features`
(clips, D) and `clip_start`/`clip_valid` (clips,), per recording `clip_offset`/`clip_count`
and its provenance, and a segment table (`segments/...`): recording_id, label, start_frame,
end_frame (exclusive), group, row, and the CSV's other columns. Schema-1 shards (a fixed
(T, D) per video and one label each) are read as recordings of T clips with one segment.

Writing lives in `writer.py`; verify, merge and repair in `integrity.py`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from h5py._objects import phil
from isal import isal_zlib

from gesture_cache.errors import CacheError, GestureCacheError
from gesture_cache.files import file_sha256, inside, read_json

FORMAT = "gesture-cache"
SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)
MANIFEST = "manifest.json"
TABLES_SHA256 = "tables_sha256"  # a shard's attribute and its manifest entry: see shard_image
FAILURES = "failures.jsonl"
SHARD_NAME = re.compile(r"^part-(\d{5,})\.h5$")
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

log = logging.getLogger(__name__)


@dataclass
class Segment:
    """A labelled stretch [start_frame, end_frame) of a recording (a whole video is one)."""

    label: str
    start_frame: int
    end_frame: int
    group: str = ""
    row: int = 0  # the CSV row it came from (0: unknown)
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class CachedRecording:
    """One recording's entry in a shard: its clips' features and its segments."""

    recording_id: str
    sha256: str
    features: np.ndarray  # (K, D) float32
    clip_start: np.ndarray  # (K,) frame index of each clip's first frame
    clip_valid: np.ndarray  # (K,) bool
    segments: list[Segment]
    n_frames: int
    fps: float
    height: int
    width: int
    claimed_frames: int = -1  # what the container said; -1: unknown
    file_size: int = -1  # when it was hashed, to skip re-hashing on resume
    file_mtime: float = -1.0


def fingerprint_of(extractor: dict) -> str:
    """sha256 of the canonical JSON of the extractor settings (content only, no file names)."""
    canonical = json.dumps(extractor, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def extractor_differences(one: dict, other: dict) -> list[str]:
    """The extractor fields (and, inside the preprocessing or weights, their own fields)
    whose values differ between two caches' extractors."""
    one, other = json.loads(json.dumps(one)), json.loads(json.dumps(other))  # tuples as lists
    differ = []
    for key in sorted({*one, *other}):
        a, b = one.get(key), other.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            differ += [f"{key}.{k}" for k in sorted({*a, *b}) if a.get(k) != b.get(k)]
        elif a != b:
            differ.append(key)
    return differ


# --- the manifest's schema ------------------------------------------------------------

COMMON_FIELDS = {
    "format": str,
    "schema_version": int,
    "extractor": dict,
    "fingerprint": str,
    "dtype": str,
    "classes": list,
    "class_counts": dict,
    "shards": list,
}
VERSION_FIELDS = {
    1: ({"feature_shape": list, "videos": int}, {"file": str, "videos": int, "sha256": str}),
    2: (
        {"feature_dim": int, "recordings": int, "clips": int, "segments": int},
        {"file": str, "recordings": int, "clips": int, "segments": int, "sha256": str},
    ),
}


def _expect(value: object, kind: type, where: str) -> None:
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise CacheError(f"{where} is {value!r}, expected a {kind.__name__}")


def validate_manifest(manifest: object, path: Path) -> dict:
    """Every field a reader uses, present and of the right type; the message names it."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CacheError(f"{path}: not a {FORMAT} manifest")
    version = manifest.get("schema_version")
    if version not in READABLE_SCHEMAS:
        raise CacheError(
            f"{path}: schema_version {version!r} is not one this version of gesture_cache "
            f"reads (it reads {', '.join(map(str, READABLE_SCHEMAS))})"
        )
    top, per_shard = VERSION_FIELDS[version]
    for name, kind in {**COMMON_FIELDS, **top}.items():
        if name not in manifest:
            raise CacheError(f"{path}: field {name!r} is missing")
        _expect(manifest[name], kind, f"{path}: field {name!r}")
    if version == 1:
        shape = manifest["feature_shape"]
        if len(shape) != 2 or not all(isinstance(n, int) and n > 0 for n in shape):
            raise CacheError(f"{path}: field 'feature_shape' is {shape!r}, expected [T, D]")
    elif manifest["feature_dim"] < 1:
        raise CacheError(f"{path}: field 'feature_dim' is {manifest['feature_dim']!r}")
    if manifest["dtype"] not in ("float16", "float32"):
        raise CacheError(f"{path}: field 'dtype' is {manifest['dtype']!r}")
    if not all(isinstance(c, str) for c in manifest["classes"]):
        raise CacheError(f"{path}: field 'classes' must be a list of names")
    for name, count in manifest["class_counts"].items():
        _expect(count, int, f"{path}: class_counts[{name!r}]")
    for i, shard in enumerate(manifest["shards"]):
        _expect(shard, dict, f"{path}: shards[{i}]")
        for name, kind in per_shard.items():
            if name not in shard:
                raise CacheError(f"{path}: shards[{i}] has no field {name!r}")
            _expect(shard[name], kind, f"{path}: shards[{i}].{name}")
        if TABLES_SHA256 in shard:
            _expect(shard[TABLES_SHA256], str, f"{path}: shards[{i}].{TABLES_SHA256}")
        shard_path(path.parent, shard["file"])  # a name or a link leaving the cache
    weights = manifest["extractor"].get("weights")
    if not isinstance(weights, dict) or not ({"sha256", "random_seed"} & set(weights)):
        raise CacheError(f"{path}: extractor.weights is {weights!r}, expected sha256/random_seed")
    return manifest


def feature_dim(manifest: dict) -> int:
    if manifest["schema_version"] == 1:
        return manifest["feature_shape"][1]
    return manifest["feature_dim"]


def shard_recordings(manifest: dict, shard: dict) -> int:
    return shard["videos"] if manifest["schema_version"] == 1 else shard["recordings"]


def total_recordings(manifest: dict) -> int:
    return manifest["videos"] if manifest["schema_version"] == 1 else manifest["recordings"]


# --- reading -------------------------------------------------------------------------


def read_manifest(folder: str | Path, check_hashes: bool = True) -> dict:
    """The validated manifest; with `check_hashes`, every shard's sha256 is checked too."""
    folder = Path(folder)
    path = shard_path(folder, MANIFEST)
    if not path.is_file():
        raise CacheError(f"{folder} is not a gesture cache: no {MANIFEST}")
    try:
        manifest = validate_manifest(read_json(path, "manifest"), path)
    except CacheError:
        raise
    except GestureCacheError as error:
        raise CacheError(str(error)) from None
    if check_hashes:
        for shard in manifest["shards"]:
            check_shard_hash(folder, shard)
    return manifest


def check_shard_hash(folder: Path, shard: dict) -> None:
    path = shard_path(folder, shard["file"])
    if not path.is_file():
        raise CacheError(f"{folder / MANIFEST}: shard {shard['file']} is missing")
    actual = file_sha256(path)
    if actual != shard["sha256"]:
        raise CacheError(
            f"shard {path} is corrupt: sha256 {actual[:16]}..., "
            f"the manifest says {shard['sha256'][:16]}..."
        )


def shard_path(folder: Path, name: str) -> Path:
    """A file of the cache, refusing names and links that leave it."""
    try:
        return inside(folder, name)
    except GestureCacheError as error:
        raise CacheError(str(error)) from None


def read_failures(folder: str | Path) -> dict[str, dict]:
    """Recorded failures by key (the last line for a key wins); a line cut short by a crash
    is skipped with a warning. A key is a recording id, or `id#row` for one bad row."""
    path = shard_path(Path(folder), FAILURES)
    if not path.is_file():
        return {}
    failures = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            failures[str(record["key"] if "key" in record else record["video_id"])] = record
        except (json.JSONDecodeError, KeyError, TypeError):
            log.warning("%s line %d is not a failure record; skipped", path, number)
    return failures


@dataclass
class ShardContent:
    """One shard's tables in memory, schema 1 converted to schema 2's form."""

    recordings: dict[str, np.ndarray]  # RECORDING_TEXT and RECORDING_NUMBERS columns
    segments: dict[str, np.ndarray]  # SEGMENT_TEXT, SEGMENT_NUMBERS and extra/<column>
    clip_start: np.ndarray
    clip_valid: np.ndarray
    features: np.ndarray | None  # (clips, D), the stored dtype; None unless asked for
    tables_sha256: str | None = None  # the checksum its tables were checked against


def read_shard(path: Path, schema_version: int, features: bool = False) -> ShardContent:
    """A shard's tables (and features); a missing or unreadable part, or tables that do not
    match their checksum, is a CacheError naming the shard."""
    with shard_errors(path), h5py.File(path, "r") as f:
        return _read_v1(f, features) if schema_version == 1 else _read_v2(f, features, path)


@contextmanager
def shard_errors(path: Path) -> Iterator[None]:
    """A missing or unreadable part of shard `path` as a CacheError naming it."""
    try:
        yield
    except KeyError as error:
        raise CacheError(f"shard {path} lacks {error}") from None
    except (OSError, ValueError, TypeError, isal_zlib.error) as error:
        raise CacheError(f"shard {path} cannot be read: {error}") from None


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


def _read_v1(f: h5py.File, features: bool) -> ShardContent:
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
        with h5py.File(path, "r") as f:
            if f.attrs.get("fingerprint") != manifest["fingerprint"]:
                attributes = "its fingerprint differs from the manifest's"
            elif f.attrs.get("schema_version") != version:
                attributes = f"schema_version {f.attrs.get('schema_version')}"
            else:
                attributes = None
    except OSError as error:
        return f"cannot be read ({error})", None
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


def open_cache(path: str | Path, load_features: bool = True, check_hashes: bool = True) -> Cache:
    """Check the manifest and every shard's sha256, then load the cache into memory (all but
    the features with `load_features=False`, for streaming). `check_hashes=False` only for
    a cache `verify_cache` has just passed."""
    folder = Path(path)
    manifest = read_manifest(folder, check_hashes)
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


@dataclass
class RawFeatures:
    """A shard's features as their compressed chunks, read but not inflated yet."""

    shape: tuple[int, int]
    dtype: np.dtype
    rows: int  # rows a chunk
    chunks: list[bytes]  # each a zlib stream (its own adler32 checks what it inflates to)

    def inflate(self, out: np.ndarray | None = None) -> np.ndarray:
        """ISA-L's inflate (`isal`, zlib's format and adler32 check): 1.6x zlib's speed
        here (27 vs 43 ms for an 8 MB shard), and it releases the GIL, so threads inflate in
        parallel."""
        out = np.empty(self.shape, self.dtype) if out is None else out
        for i, raw in enumerate(self.chunks):
            first = i * self.rows
            chunk = np.frombuffer(isal_zlib.decompress(raw), self.dtype).reshape(self.rows, -1)
            out[first : first + self.rows] = chunk[: len(out) - first]  # the last is padded
        return out


def raw_features(dataset: h5py.Dataset) -> RawFeatures | None:
    """The chunks of a features dataset as the writer makes them (gzip, then HDF5's
    fletcher32 checksum, whole rows a chunk), or None for any other layout (read it with
    h5py). h5py's own filter pipeline holds the GIL while it inflates; reading the chunks
    raw and inflating them with ISA-L lets threads read shards in parallel (verify on every
    core, streaming a shard ahead while the model trains): measured 2x on 2 cores. The
    fletcher32 sum of the compressed bytes is dropped, not checked: inflate checks each chunk
    by the adler32 of what it inflates to, and `verify` hashes every shard whole."""
    rows = dataset.chunks[0] if dataset.chunks else 0
    plain = (
        dataset.compression == "gzip"
        and not dataset.shuffle
        and dataset.scaleoffset is None
        and dataset.ndim == 2
        and rows > 0
        and dataset.chunks[1] == dataset.shape[1]
        and dataset.shape[0] > 0
    )
    if not plain:
        return None
    # under h5py's global lock: h5py 3.14's read_direct_chunk runs without it, and two
    # threads calling it failed (H5Dread_chunk errors, once a segfault)
    with phil:
        chunks = [
            dataset.id.read_direct_chunk((first, 0)) for first in range(0, dataset.shape[0], rows)
        ]
    if any(skipped for skipped, _ in chunks):  # a chunk stored unfiltered
        return None
    checksum = 4 if dataset.fletcher32 else 0  # fletcher32 appends 4 bytes to each chunk
    return RawFeatures(
        dataset.shape, dataset.dtype, rows, [raw[: len(raw) - checksum] for _, raw in chunks]
    )


def stored_features(dataset: h5py.Dataset) -> np.ndarray:
    raw = raw_features(dataset)
    return raw.inflate() if raw is not None else dataset[()]


def read_features(path: Path) -> np.ndarray:
    """A schema-2 shard's features alone (what streaming reads, a shard ahead), inflated
    after the file is closed."""
    with shard_errors(path):
        with h5py.File(path, "r") as f:
            raw = raw_features(f["features"])
            if raw is None:
                return f["features"][()]
        return raw.inflate()


def read_features_into(path: Path, out: np.ndarray) -> None:
    """A schema-2 shard's features, read into `out` (its rows of the whole cache's array)."""
    with shard_errors(path):
        with h5py.File(path, "r") as f:
            stored = f["features"]
            if stored.shape != out.shape or stored.dtype != out.dtype:
                raise CacheError(
                    f"shard {path} holds {stored.dtype} features of shape {stored.shape}, "
                    f"its tables and the manifest say {out.dtype} {out.shape}"
                )
            raw = raw_features(stored)
            if raw is None:
                if len(out):
                    stored.read_direct(out)
                return
        raw.inflate(out)


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
