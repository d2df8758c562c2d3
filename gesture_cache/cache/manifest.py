"""The cache's manifest: what a cache is, checked field by field before anything is read.

CACHE/manifest.json   what the cache is; the only file a reader must trust first
CACHE/part-00000.h5   shards, immutable once named
CACHE/failures.jsonl  one line per recording or row that could not be used
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gesture_cache.common.errors import CacheError, GestureCacheError
from gesture_cache.common.files import file_sha256, inside, read_json

log = logging.getLogger(__name__)


FORMAT = "gesture-cache"


SCHEMA_VERSION = 2


READABLE_SCHEMAS = (1, 2)


MANIFEST = "manifest.json"


TABLES_SHA256 = "tables_sha256"  # a shard's attribute and its manifest entry: see shard_image


FAILURES = "failures.jsonl"


# A shard's file name: `part-NNNNN.h5` as the writer names it, or with the first 16 digits of
# its sha256 in front (`1f3a...-part-NNNNN.h5`) as it is stored at a URL and pulled from one.
SHARD_NAME = re.compile(r"^(?:[0-9a-f]{16}-)?part-(\d{5,})\.h5$")


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
        if not SHARD_NAME.match(shard["file"]):
            raise CacheError(f"{path}: shards[{i}].file {shard['file']!r} is not a shard's name")
    repeated = [v for v, n in Counter(s["file"] for s in manifest["shards"]).items() if n > 1]
    if repeated:
        raise CacheError(f"{path}: shard file {repeated[0]!r} is listed twice")
    validate_extractor(manifest["extractor"], path)
    return manifest


# What readers take from a cache's extractor record (info, predict, detect, export, resume).
EXTRACTOR_FIELDS = {
    "model": str,
    "weights": dict,
    "preprocessing": dict,
    "precision": str,
    "sampling": str,
    "clip_stride": int,
    "pad": str,
}
PREPROCESSING_FIELDS = ("name", "resize", "interpolation", "crop", "scale", "mean_bgr")


def validate_extractor(extractor: dict, path: Path) -> None:
    """The extractor record's fields that readers use, each present and of its type."""
    for name, kind in EXTRACTOR_FIELDS.items():
        if name not in extractor:
            raise CacheError(f"{path}: field 'extractor.{name}' is missing")
        _expect(extractor[name], kind, f"{path}: field 'extractor.{name}'")
    weights = extractor["weights"]
    if not {"sha256", "random_seed"} & set(weights):
        raise CacheError(f"{path}: extractor.weights is {weights!r}, expected sha256/random_seed")
    missing = [n for n in PREPROCESSING_FIELDS if n not in extractor["preprocessing"]]
    if missing:
        raise CacheError(f"{path}: field 'extractor.preprocessing.{missing[0]}' is missing")


def feature_dim(manifest: dict) -> int:
    if manifest["schema_version"] == 1:
        return manifest["feature_shape"][1]
    return manifest["feature_dim"]


def shard_recordings(manifest: dict, shard: dict) -> int:
    return shard["videos"] if manifest["schema_version"] == 1 else shard["recordings"]


def total_recordings(manifest: dict) -> int:
    return manifest["videos"] if manifest["schema_version"] == 1 else manifest["recordings"]


def read_manifest(folder: str | Path) -> dict:
    """The validated manifest (no shard is read: `check_shard_hashes` hashes them)."""
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
    return manifest


def check_shard_hashes(folder: str | Path, manifest: dict) -> None:
    """Every shard the manifest lists is there with its sha256."""
    for shard in manifest["shards"]:
        check_shard_hash(Path(folder), shard)


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


@dataclass(frozen=True)
class ExtractorRecord:
    """What a cache records of the extractor that fills it: `spec` (the fingerprinted
    settings), the feature size, the names of the files it read and the software versions
    (neither fingerprinted)."""

    spec: dict
    feature_dim: int
    files: dict = field(default_factory=dict)
    software: dict = field(default_factory=dict)
