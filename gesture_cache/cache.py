"""The on-disk cache (schema version 1): shards, manifest, failures, verify, merge, repair.

    CACHE/manifest.json   what the cache is; rewritten atomically after each shard
    CACHE/part-00000.h5   shards, immutable once named
    CACHE/failures.jsonl  one line per video that could not be used (appended)

A shard is built in memory, written under a temporary name, fsynced, hashed and only then
renamed, and the manifest is replaced the same way: a SIGKILL at any moment leaves the cache
as it was after the last complete shard (plus, at worst, a named shard the manifest does
not list yet, which the next writer adopts).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from gesture_cache.errors import CacheError, GestureCacheError
from gesture_cache.files import (
    atomic_write,
    file_sha256,
    fsync_dir,
    inside,
    read_json,
    write_json,
)

FORMAT = "gesture-cache"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
FAILURES = "failures.jsonl"
LOCK = ".lock"
SHARD_NAME = re.compile(r"^part-(\d{5,})\.h5$")
OWN_TEMPORARY = re.compile(r"^\.(part-\d{5,}\.h5|manifest\.json|failures\.jsonl)\.tmp$")
STRING = h5py.string_dtype("utf-8")
TEXT_COLUMNS = ("label", "video_id", "video_sha256", "group")
NUMBER_COLUMNS = {"n_frames": np.int32, "fps": np.float32, "height": np.int32, "width": np.int32}
# Added after the first caches were written: absent in those, read as "unknown" (-1).
OPTIONAL_COLUMNS = {"claimed_frames": np.int32, "file_size": np.int64, "file_mtime": np.float64}

log = logging.getLogger(__name__)


@dataclass
class CachedVideo:
    """One video's entry in a shard."""

    video_id: str
    label: str
    group: str
    video_sha256: str
    features: np.ndarray  # (T, D) float32
    mask: np.ndarray  # (T,) bool
    n_frames: int
    fps: float
    height: int
    width: int
    claimed_frames: int = -1  # what the container said; -1: unknown
    file_size: int = -1  # of the file when it was hashed, to skip re-hashing on resume
    file_mtime: float = -1.0
    extra: dict[str, str] = field(default_factory=dict)


def fingerprint_of(extractor: dict) -> str:
    """sha256 of the canonical JSON of the extractor settings (content only, no file names)."""
    canonical = json.dumps(extractor, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- the manifest's schema ------------------------------------------------------------

MANIFEST_FIELDS = {
    "format": str,
    "schema_version": int,
    "extractor": dict,
    "fingerprint": str,
    "feature_shape": list,
    "dtype": str,
    "classes": list,
    "class_counts": dict,
    "shards": list,
    "videos": int,
}
SHARD_FIELDS = {"file": str, "videos": int, "sha256": str}


def _expect(value: object, kind: type, where: str) -> None:
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise CacheError(f"{where} is {value!r}, expected a {kind.__name__}")


def validate_manifest(manifest: object, path: Path) -> dict:
    """Every field a reader uses, present and of the right type; the message names it."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CacheError(f"{path}: not a {FORMAT} manifest")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise CacheError(
            f"{path}: schema_version {version!r} is not one this version of gesture_cache "
            f"reads (it reads {SCHEMA_VERSION})"
        )
    for name, kind in MANIFEST_FIELDS.items():
        if name not in manifest:
            raise CacheError(f"{path}: field {name!r} is missing")
        _expect(manifest[name], kind, f"{path}: field {name!r}")
    shape = manifest["feature_shape"]
    if len(shape) != 2 or not all(isinstance(n, int) and n > 0 for n in shape):
        raise CacheError(f"{path}: field 'feature_shape' is {shape!r}, expected [T, D]")
    if manifest["dtype"] not in ("float16", "float32"):
        raise CacheError(f"{path}: field 'dtype' is {manifest['dtype']!r}")
    if not all(isinstance(c, str) for c in manifest["classes"]):
        raise CacheError(f"{path}: field 'classes' must be a list of names")
    for name, count in manifest["class_counts"].items():
        _expect(count, int, f"{path}: class_counts[{name!r}]")
    for i, shard in enumerate(manifest["shards"]):
        _expect(shard, dict, f"{path}: shards[{i}]")
        for name, kind in SHARD_FIELDS.items():
            if name not in shard:
                raise CacheError(f"{path}: shards[{i}] has no field {name!r}")
            _expect(shard[name], kind, f"{path}: shards[{i}].{name}")
        inside(path.parent, shard["file"])  # a name or a link leaving the cache is refused
    weights = manifest["extractor"].get("weights")
    if not isinstance(weights, dict) or not ({"sha256", "random_seed"} & set(weights)):
        raise CacheError(f"{path}: extractor.weights is {weights!r}, expected sha256/random_seed")
    return manifest


# --- reading -------------------------------------------------------------------------


def read_manifest(folder: str | Path, check_hashes: bool = True) -> dict:
    """The validated manifest; with `check_hashes`, every shard's sha256 is checked too."""
    folder = Path(folder)
    try:
        path = inside(folder, MANIFEST)
        if not path.is_file():
            raise CacheError(f"{folder} is not a gesture cache: no {MANIFEST}")
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
    shard_path = _shard_path(folder, shard["file"])
    if not shard_path.is_file():
        raise CacheError(f"{folder / MANIFEST}: shard {shard['file']} is missing")
    actual = file_sha256(shard_path)
    if actual != shard["sha256"]:
        raise CacheError(
            f"shard {shard_path} is corrupt: sha256 {actual[:16]}..., "
            f"the manifest says {shard['sha256'][:16]}..."
        )


def _shard_path(folder: Path, name: str) -> Path:
    try:
        return inside(folder, name)
    except GestureCacheError as error:
        raise CacheError(str(error)) from None


def read_failures(folder: str | Path) -> dict[str, dict]:
    """Recorded failures by video id (the last line for an id wins). A line cut short by a
    crash is skipped with a warning."""
    path = _shard_path(Path(folder), FAILURES)
    if not path.is_file():
        return {}
    failures = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            failures[str(record["video_id"])] = record
        except (json.JSONDecodeError, KeyError, TypeError):
            log.warning("%s line %d is not a failure record; skipped", path, number)
    return failures


def read_shard_columns(path: Path, columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Columns of one shard; a missing or unreadable one is a CacheError naming it."""
    try:
        with h5py.File(path, "r") as f:
            values = {}
            for column in columns:
                if column in OPTIONAL_COLUMNS and column not in f:
                    values[column] = np.full(len(f["video_id"]), -1, OPTIONAL_COLUMNS[column])
                elif column not in f:
                    raise CacheError(f"shard {path} has no dataset {column!r}")
                elif column in TEXT_COLUMNS:
                    values[column] = f[column].asstr()[()]
                else:
                    values[column] = f[column][()]
            return values
    except OSError as error:
        raise CacheError(f"shard {path} cannot be read: {error}") from None


def frame_shortfalls(folder: str | Path, manifest: dict) -> list[tuple[str, int, int]]:
    """(video id, claimed, decoded) for videos that decode fewer frames than they claim."""
    found = []
    for shard in manifest["shards"]:
        path = _shard_path(Path(folder), shard["file"])
        columns = read_shard_columns(path, ("video_id", "claimed_frames", "n_frames"))
        for video_id, claimed, decoded in zip(*columns.values()):
            if claimed > decoded:
                found.append((str(video_id), int(claimed), int(decoded)))
    return found


@dataclass
class Cache:
    """A cache loaded into memory."""

    path: Path
    manifest: dict
    features: np.ndarray | None  # (N, T, D), the manifest's dtype; None if not loaded
    mask: np.ndarray  # (N, T) bool
    labels: np.ndarray  # (N,) class names
    video_ids: np.ndarray
    groups: np.ndarray
    video_sha256: np.ndarray

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def random_weights(self) -> bool:
        return "random_seed" in self.manifest["extractor"]["weights"]

    @property
    def content_digest(self) -> str:
        """sha256 over the sorted (video id, file sha256) pairs: which videos, not how."""
        pairs = sorted(zip(self.video_ids.tolist(), self.video_sha256.tolist()))
        return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()

    def __len__(self) -> int:
        return len(self.video_ids)


def open_cache(path: str | Path, load_features: bool = True, check_hashes: bool = True) -> Cache:
    """Check the manifest and every shard's sha256, then load the cache into memory
    (all but the features with `load_features=False`, for streaming). `check_hashes=False`
    only for a cache `verify_cache` has just passed."""
    folder = Path(path)
    manifest = read_manifest(folder, check_hashes)
    T, D = manifest["feature_shape"]
    N = manifest["videos"]
    features = np.empty((N, T, D), manifest["dtype"]) if load_features else None
    mask = np.empty((N, T), bool)
    text: dict[str, list[np.ndarray]] = {c: [] for c in TEXT_COLUMNS}
    start = 0
    for shard in manifest["shards"]:
        shard_path = _shard_path(folder, shard["file"])
        columns = read_shard_columns(shard_path, ("mask", *TEXT_COLUMNS))
        n = len(columns["video_id"])
        if start + n > N or n != shard["videos"]:
            raise CacheError(f"shard {shard_path} holds {n} videos, the manifest says otherwise")
        if load_features:
            with h5py.File(shard_path, "r") as f:
                f["features"].read_direct(features, dest_sel=np.s_[start : start + n])
        mask[start : start + n] = columns["mask"]
        for column in TEXT_COLUMNS:
            text[column].append(columns[column])
        start += n
    joined = {c: np.concatenate(v) if v else np.array([], str) for c, v in text.items()}
    return Cache(
        folder,
        manifest,
        features,
        mask,
        joined["label"],
        joined["video_id"],
        joined["group"],
        joined["video_sha256"],
    )


# --- writing -------------------------------------------------------------------------


class CacheWriter:
    """Appends shards to a cache folder, holding its lock; resumes an existing cache.

    `software` (library versions) is recorded with every shard this writer names.
    """

    def __init__(
        self,
        folder: str | Path,
        extractor: dict,
        feature_shape: tuple[int, int],
        dtype: str,
        shard_size: int,
        files: dict | None = None,
        software: dict | None = None,
    ):
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CacheError(f"cannot create the cache folder {self.folder}: {error}") from None
        self._lock = _acquire_lock(self.folder)
        try:
            self._open(extractor, feature_shape, dtype, files or {}, software or {})
        except BaseException:
            os.close(self._lock)  # a refused cache must not stay locked in this process
            raise
        self.shard_size = shard_size
        self.pending: list[CachedVideo] = []

    def _open(
        self, extractor: dict, feature_shape: tuple[int, int], dtype: str, files: dict, software
    ) -> None:
        self.software = software
        if (self.folder / MANIFEST).exists():
            self.manifest = read_manifest(self.folder)
            self._check_compatible(extractor, feature_shape, dtype)
        else:
            self.manifest = {
                "format": FORMAT,
                "schema_version": SCHEMA_VERSION,
                "created_by": software,
                "extractor": extractor,
                "fingerprint": fingerprint_of(extractor),
                "files": files,
                "feature_shape": list(feature_shape),
                "dtype": dtype,
                "classes": [],
                "class_counts": {},
                "shards": [],
                "videos": 0,
            }
        self.done = self._done_videos()
        self._clean_leftovers()
        self.failures = read_failures(self.folder)
        for video_id in set(self.failures) & set(self.done):
            del self.failures[video_id]

    def _check_compatible(
        self, extractor: dict, feature_shape: tuple[int, int], dtype: str
    ) -> None:
        wanted = fingerprint_of(extractor)
        if self.manifest["fingerprint"] != wanted:
            old = self.manifest["extractor"]
            changed = sorted(k for k in {*extractor, *old} if extractor.get(k) != old.get(k))
            raise CacheError(
                f"{self.folder} holds features from another extractor (differs in: "
                f"{', '.join(changed)}); write to a new --out folder"
            )
        if self.manifest["dtype"] != dtype or self.manifest["feature_shape"] != list(feature_shape):
            raise CacheError(
                f"{self.folder} stores {self.manifest['dtype']} features of shape "
                f"{self.manifest['feature_shape']}, not {dtype} {list(feature_shape)}"
            )

    def _clean_leftovers(self) -> None:
        """What a killed writer leaves: its own temporary files (deleted) and a named shard
        the manifest does not list yet (adopted: its videos are done). Anything else that
        looks like a shard or a temporary file stops the job: it is not ours to delete."""
        listed = {s["file"] for s in self.manifest["shards"]}
        for path in sorted(self.folder.iterdir()):
            if OWN_TEMPORARY.match(path.name):  # a planted link is removed, never followed
                log.warning("removing %s, left by an interrupted extraction", path)
                path.unlink()
            elif SHARD_NAME.match(path.name) and path.name not in listed:
                self._adopt(path)
            elif path.name.endswith(".tmp") or (
                path.name.startswith("part-") and path.name not in listed
            ):
                raise CacheError(
                    f"{path} is not a file this tool wrote; move it out of the cache folder "
                    f"(or run `gesture-cache repair {self.folder}`)"
                )

    def _next_shard_name(self) -> str:
        """One past the highest shard number, listed or lying in the folder."""
        numbers = [_shard_index(s["file"]) for s in self.manifest["shards"]]
        numbers += [_shard_index(p.name) for p in self.folder.iterdir()]
        return f"part-{max(numbers, default=-1) + 1:05d}.h5"

    def _adopt(self, path: Path) -> None:
        """A shard renamed by a writer killed before it updated the manifest."""
        problem = shard_problem(path, self.manifest)
        if problem is None:
            videos = read_shard_columns(path, ("video_id", "video_sha256", "label"))
            if set(videos["video_id"]) & set(self.done):
                problem = "it repeats videos the cache already holds"
        if problem:
            raise CacheError(
                f"{path} is not listed in the manifest and cannot be adopted ({problem}); "
                f"run `gesture-cache repair {self.folder}`"
            )
        log.warning("adopting %s, named by an interrupted extraction", path)
        self._list_shard(path.name, file_sha256(path), list(videos["label"]))
        self.done.update(zip(videos["video_id"], videos["video_sha256"]))

    def _done_videos(self) -> dict[str, str]:
        done = {}
        self.done_labels: dict[str, str] = {}
        self.done_stats: dict[str, tuple[int, float]] = {}
        for shard in self.manifest["shards"]:
            columns = read_shard_columns(
                _shard_path(self.folder, shard["file"]),
                ("video_id", "video_sha256", "label", "file_size", "file_mtime"),
            )
            done.update(zip(columns["video_id"], columns["video_sha256"]))
            self.done_labels.update(zip(columns["video_id"], columns["label"]))
            self.done_stats.update(
                zip(columns["video_id"], zip(columns["file_size"], columns["file_mtime"]))
            )
        return done

    def add(self, video: CachedVideo) -> None:
        self.pending.append(video)
        if len(self.pending) >= self.shard_size:
            self.flush()

    def record_failure(self, record: dict) -> None:
        """Append one line (fsynced with the next shard, or at the end)."""
        self.failures[record["video_id"]] = record
        path = _shard_path(self.folder, FAILURES)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        except OSError as error:
            raise CacheError(f"cannot write {path}: {error}") from None

    def forget_failures(self, video_ids: set[str]) -> None:
        for video_id in video_ids & set(self.failures):
            del self.failures[video_id]
        self.write_failures()

    def write_failures(self) -> None:
        """Rewrite failures.jsonl compactly, one line per video still failed."""
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.failures.values())
        _atomic(self.folder / FAILURES, lines.encode())

    def flush(self) -> None:
        """Write pending videos as one shard, then list it in the manifest.

        The in-memory manifest changes only after the new one is on disk, so an interrupt
        at any point leaves memory and disk agreeing (see `__exit__`)."""
        if not self.pending:
            return
        name = self._next_shard_name()
        image = shard_image(self.pending, self.manifest, self.software)
        sha256 = _atomic(self.folder / name, image)
        self._list_shard(name, sha256, [v.label for v in self.pending])
        self.done.update((v.video_id, v.video_sha256) for v in self.pending)
        self.pending = []

    def _list_shard(self, name: str, sha256: str, labels: list[str]) -> None:
        counts = Counter(self.manifest["class_counts"])
        counts.update(labels)
        manifest = {
            **self.manifest,
            "shards": [
                *self.manifest["shards"],
                {"file": name, "videos": len(labels), "sha256": sha256, "software": self.software},
            ],
            "class_counts": dict(sorted(counts.items())),
            "classes": sorted(counts),
            "videos": self.manifest["videos"] + len(labels),
        }
        write_manifest(self.folder, manifest)
        self.manifest = manifest

    def close(self) -> None:
        try:
            self.flush()
            self.write_failures()
            if not (self.folder / MANIFEST).exists():
                write_manifest(self.folder, self.manifest)
        finally:
            os.close(self._lock)

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if exc_info[0] is None:
            self.close()
        elif exc_info[0] is KeyboardInterrupt:
            # Ctrl-C may have landed inside a flush: trust the disk, then keep what is done.
            self._resync()
            self.close()
        else:
            os.close(self._lock)

    def _resync(self) -> None:
        if (self.folder / MANIFEST).exists():
            self.manifest = read_manifest(self.folder, check_hashes=False)
        self.done = self._done_videos()
        self._clean_leftovers()
        self.pending = [v for v in self.pending if v.video_id not in self.done]


def _atomic(path: Path, data: bytes) -> str:
    try:
        return atomic_write(path, data)
    except GestureCacheError as error:
        raise CacheError(str(error)) from None


def _shard_index(name: str) -> int:
    match = SHARD_NAME.match(name)
    return int(match.group(1)) if match else -1


def write_manifest(folder: Path, manifest: dict) -> None:
    try:
        write_json(folder / MANIFEST, manifest)
    except GestureCacheError as error:
        raise CacheError(str(error)) from None


def shard_image(videos: list[CachedVideo], manifest: dict, software: dict) -> bytes:
    """A shard as bytes: built in memory, so that a full disk fails a plain write (with a
    message) instead of failing inside HDF5."""
    T, D = manifest["feature_shape"]
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["fingerprint"] = manifest["fingerprint"]
        f.attrs["extractor"] = json.dumps(manifest["extractor"], sort_keys=True)
        f.attrs["software"] = json.dumps(software, sort_keys=True)
        f.create_dataset(
            "features",
            data=np.stack([v.features for v in videos]).astype(manifest["dtype"]),
            chunks=(1, T, D),
            compression="gzip",
            compression_opts=4,
            fletcher32=True,
        )
        f.create_dataset("mask", data=np.stack([v.mask for v in videos]).astype(bool))
        for column in TEXT_COLUMNS:
            f.create_dataset(column, data=[getattr(v, column) for v in videos], dtype=STRING)
        for column, dtype in {**NUMBER_COLUMNS, **OPTIONAL_COLUMNS}.items():
            f.create_dataset(column, data=np.array([getattr(v, column) for v in videos], dtype))
        extra = f.create_group("extra")
        for column in sorted({c for v in videos for c in v.extra}):
            extra.create_dataset(
                column, data=[v.extra.get(column, "") for v in videos], dtype=STRING
            )
    return buffer.getvalue()


def _acquire_lock(folder: Path) -> int:
    path = folder / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as error:
        raise CacheError(
            f"cannot take the lock {path} ({error.strerror}); "
            "if it is a link or not a file, remove it"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise CacheError(
            f"{folder} is being written by another process (pid {holder}); wait for it to end"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


# --- verify ---------------------------------------------------------------------------


def shard_problem(path: Path, manifest: dict) -> str | None:
    """What is wrong with one shard against the manifest's extractor, or None."""
    T, D = manifest["feature_shape"]
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("fingerprint") != manifest["fingerprint"]:
                return "its fingerprint differs from the manifest's"
            if f.attrs.get("schema_version") != SCHEMA_VERSION:
                return f"schema_version {f.attrs.get('schema_version')}"
            for column in ("features", "mask", *TEXT_COLUMNS, *NUMBER_COLUMNS):
                if column not in f:
                    return f"dataset {column!r} is missing"
            features = f["features"][()]
            n = features.shape[0]
            if features.shape[1:] != (T, D) or features.dtype != np.dtype(manifest["dtype"]):
                return (
                    f"features {features.dtype} {features.shape[1:]}, "
                    f"manifest says {manifest['dtype']} {(T, D)}"
                )
            if not np.isfinite(features).all():
                return "features hold inf or NaN"
            if f["mask"].shape != (n, T):
                return f"mask shape {f['mask'].shape}, expected {(n, T)}"
            for column in (*TEXT_COLUMNS, *NUMBER_COLUMNS):
                if f[column].shape != (n,):
                    return f"{column} has {f[column].shape} rows, not {n}"
    except (OSError, KeyError, ValueError) as error:
        return f"cannot be read ({error})"
    return None


@dataclass
class Verification:
    problems: list[str]  # the cache must not be used as it is
    warnings: list[str]  # usable, but worth knowing (e.g. one file under two paths)
    videos: int = 0


def verify_cache(path: str | Path) -> Verification:
    """Every problem found, as messages: hashes, fingerprint, shapes, values, counts."""
    folder = Path(path)
    try:
        manifest = read_manifest(folder, check_hashes=False)
    except CacheError as error:
        return Verification([str(error)], [])
    problems: list[str] = []
    if fingerprint_of(manifest["extractor"]) != manifest["fingerprint"]:
        problems.append("manifest fingerprint is not the sha256 of its extractor (edited?)")
    seen: dict[str, str] = {}
    by_content: dict[str, list[str]] = {}
    labels: Counter = Counter()
    for shard in manifest["shards"]:
        name = shard["file"]
        try:
            check_shard_hash(folder, shard)
        except CacheError as error:
            problems.append(str(error))
            continue
        problem = shard_problem(folder / name, manifest)
        if problem:
            problems.append(f"{name}: {problem}")
        try:
            columns = read_shard_columns(folder / name, ("video_id", "video_sha256", "label"))
        except CacheError:
            continue
        n = len(columns["video_id"])
        if n != shard["videos"]:
            problems.append(f"{name}: {n} videos, the manifest says {shard['videos']}")
        for video_id, sha256 in zip(columns["video_id"], columns["video_sha256"]):
            if video_id in seen:
                problems.append(f"video {video_id!r} is in {seen[video_id]} and {name}")
            seen[video_id] = name
            by_content.setdefault(sha256, []).append(video_id)
        labels.update(columns["label"])
    total = sum(labels.values())
    if not problems:
        if total != manifest["videos"]:
            problems.append(f"manifest counts {manifest['videos']} videos, shards hold {total}")
        if dict(sorted(labels.items())) != manifest["class_counts"]:
            problems.append(
                f"manifest class_counts {manifest['class_counts']} != shards {dict(labels)}"
            )
        if sorted(labels) != manifest["classes"]:
            problems.append(f"manifest classes {manifest['classes']} != shards {sorted(labels)}")
    warnings = [
        f"the same file content (sha256 {sha[:12]}...) is cached as {', '.join(ids)}; "
        "splits keep such videos together"
        for sha, ids in by_content.items()
        if len(ids) > 1
    ]
    return Verification(problems, warnings, total)


def verified_manifest(path: str | Path) -> dict:
    """The manifest of a cache that passes `verify_cache`, or a CacheError with its problem."""
    result = verify_cache(path)
    if result.problems:
        more = f" (and {len(result.problems) - 1} more)" if len(result.problems) > 1 else ""
        raise CacheError(f"cache {path} fails verification: {result.problems[0]}{more}")
    return read_manifest(path, check_hashes=False)


# --- merge and repair -----------------------------------------------------------------


def merge_caches(sources: list[str | Path], out: str | Path) -> dict:
    """Combine caches built with the same extractor (e.g. `--num-shards` parts) into `out`.

    Every source is verified and every video id checked before anything is written; the
    merged cache is built in a temporary folder beside `out` and renamed at the end, so a
    failed merge leaves no partial cache behind."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CacheError(f"--out {out} exists and is not empty; merge into a new folder")
    manifests = [verified_manifest(s) for s in sources]
    first = manifests[0]
    for source, manifest in zip(sources[1:], manifests[1:]):
        if manifest["fingerprint"] != first["fingerprint"] or manifest["dtype"] != first["dtype"]:
            raise CacheError(
                f"{source} was built with another extractor or dtype than {sources[0]}"
            )
    owner: dict[str, str] = {}
    for source, manifest in zip(sources, manifests):
        for shard in manifest["shards"]:
            ids = read_shard_columns(Path(source) / shard["file"], ("video_id",))["video_id"]
            for video_id in ids:
                if video_id in owner:
                    raise CacheError(
                        f"video {video_id!r} is in both {owner[video_id]} and {source}"
                    )
                owner[video_id] = str(source)
    staging = out.with_name(f".{out.name}.merging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        writer = CacheWriter(
            staging,
            first["extractor"],
            tuple(first["feature_shape"]),
            first["dtype"],
            shard_size=10**9,
            files=first.get("files", {}),
        )
        with writer:
            for source, manifest in zip(sources, manifests):
                for shard in manifest["shards"]:
                    writer.software = shard.get("software", {})
                    writer.pending = read_shard_videos(Path(source) / shard["file"])
                    writer.flush()
                for record in read_failures(source).values():
                    if record["video_id"] not in writer.done:
                        writer.failures[record["video_id"]] = record
        (staging / LOCK).unlink(missing_ok=True)
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
        fsync_dir(out.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return read_manifest(out, check_hashes=False)


def read_shard_videos(path: Path) -> list[CachedVideo]:
    columns = read_shard_columns(
        path, ("features", "mask", *TEXT_COLUMNS, *NUMBER_COLUMNS, *OPTIONAL_COLUMNS)
    )
    with h5py.File(path, "r") as f:
        group = f.get("extra", {})
        extra = {c: group[c].asstr()[()] for c in group if isinstance(group[c], h5py.Dataset)}
    return [
        CachedVideo(
            video_id=columns["video_id"][i],
            label=columns["label"][i],
            group=columns["group"][i],
            video_sha256=columns["video_sha256"][i],
            features=columns["features"][i],
            mask=columns["mask"][i],
            n_frames=int(columns["n_frames"][i]),
            fps=float(columns["fps"][i]),
            height=int(columns["height"][i]),
            width=int(columns["width"][i]),
            claimed_frames=int(columns["claimed_frames"][i]),
            file_size=int(columns["file_size"][i]),
            file_mtime=float(columns["file_mtime"][i]),
            extra={c: values[i] for c, values in extra.items()},
        )
        for i in range(len(columns["video_id"]))
    ]


@dataclass
class RepairReport:
    kept: int = 0  # videos in the repaired cache
    dropped: list[str] = field(default_factory=list)  # what was removed, and why


def repair_cache(path: str | Path) -> RepairReport:
    """Make a damaged cache consistent again, keeping every video that is intact.

    Shards that are listed and intact stay as they are. Unlisted shards with the cache's
    fingerprint are adopted; corrupt or foreign shards, and videos already held by an
    earlier shard, are dropped (a shard with some duplicates is rewritten without them).
    The manifest is rewritten from what remains. Needs the manifest's extractor, or a
    shard that carries it."""
    folder = Path(path)
    manifest = _manifest_for_repair(folder)
    report = RepairReport()
    lock = _acquire_lock(folder)
    try:
        kept_shards, kept_videos = [], {}
        names = sorted(p.name for p in folder.iterdir() if SHARD_NAME.match(p.name))
        listed = {s["file"]: s for s in manifest["shards"]}
        for name in names:
            shard_path = inside(folder, name)
            if name in listed and file_sha256(shard_path) != listed[name]["sha256"]:
                problem = "its sha256 differs from the manifest's"
            else:
                problem = shard_problem(shard_path, manifest)
            if problem:
                report.dropped.append(f"{name}: {problem}")
                shard_path.rename(shard_path.with_name(f"damaged-{name}"))
                continue
            videos = read_shard_videos(shard_path)
            fresh = [v for v in videos if v.video_id not in kept_videos]
            for v in videos:
                if v.video_id in kept_videos:
                    report.dropped.append(
                        f"{name}: {v.video_id} (also in {kept_videos[v.video_id]})"
                    )
            if not fresh:
                shard_path.unlink()
                continue
            if len(fresh) < len(videos):
                software = listed.get(name, {}).get("software", {})
                atomic_write(shard_path, shard_image(fresh, manifest, software))
            kept_videos.update((v.video_id, name) for v in fresh)
            kept_shards.append((name, [v.label for v in fresh]))
        for leftover in folder.iterdir():
            if leftover.name.endswith(".tmp") and leftover.name.startswith("."):
                leftover.unlink()
        counts = Counter(label for _, labels in kept_shards for label in labels)
        manifest.update(
            shards=[
                {
                    "file": name,
                    "videos": len(labels),
                    "sha256": file_sha256(folder / name),
                    "software": listed.get(name, {}).get("software", {}),
                }
                for name, labels in kept_shards
            ],
            class_counts=dict(sorted(counts.items())),
            classes=sorted(counts),
            videos=sum(counts.values()),
        )
        write_manifest(folder, manifest)
        report.kept = manifest["videos"]
    finally:
        os.close(lock)
    return report


def _manifest_for_repair(folder: Path) -> dict:
    """The manifest if it can be read; else one rebuilt from a shard's own attributes."""
    try:
        return read_manifest(folder, check_hashes=False)
    except CacheError as error:
        if not folder.is_dir():
            raise
        reason = str(error)
    for shard_path in sorted(folder.glob("part-*.h5")):
        try:
            with h5py.File(shard_path, "r") as f:
                extractor = json.loads(f.attrs["extractor"])
                features = f["features"]
                shape, dtype = list(features.shape[1:]), str(features.dtype)
        except (OSError, KeyError, ValueError):
            continue
        log.warning("manifest unusable (%s); rebuilding it from %s", reason, shard_path.name)
        return {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "created_by": {},
            "extractor": extractor,
            "fingerprint": fingerprint_of(extractor),
            "files": {},
            "feature_shape": shape,
            "dtype": dtype,
            "classes": [],
            "class_counts": {},
            "shards": [],
            "videos": 0,
        }
    raise CacheError(f"{folder} cannot be repaired: {reason}, and no shard says what it is")
