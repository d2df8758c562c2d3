"""The on-disk cache (schema version 1): shards, manifest, failures, verify, merge.

    CACHE/manifest.json   what the cache is; rewritten atomically after each shard
    CACHE/part-00000.h5   shards, immutable once named
    CACHE/failures.jsonl  one line per video that could not be used

A shard is written under a temporary name, flushed, fsynced, hashed and only then renamed,
and the manifest is replaced the same way: a SIGKILL at any moment leaves the cache as it
was after the last complete shard.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from gesture_cache import __version__
from gesture_cache.video import file_sha256

FORMAT = "gesture-cache"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
FAILURES = "failures.jsonl"
LOCK = ".lock"
SHARD_NAME = re.compile(r"^part-(\d{5,})\.h5$")
STRING = h5py.string_dtype("utf-8")
TEXT_COLUMNS = ("label", "video_id", "video_sha256", "group")
NUMBER_COLUMNS = {"n_frames": np.int32, "fps": np.float32, "height": np.int32, "width": np.int32}

log = logging.getLogger(__name__)


class CacheError(ValueError):
    """A cache that must not be read or written as it is."""


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
    extra: dict[str, str] = field(default_factory=dict)


def fingerprint_of(extractor: dict) -> str:
    canonical = json.dumps(extractor, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- reading -------------------------------------------------------------------------


def read_manifest(folder: str | Path, check_hashes: bool = True) -> dict:
    """The validated manifest; with `check_hashes`, every shard's sha256 is checked too."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise CacheError(f"{folder} is not a gesture cache: no {MANIFEST}")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CacheError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CacheError(f"{path}: not a {FORMAT} manifest")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise CacheError(
            f"{path}: schema_version {manifest.get('schema_version')!r} is not one this version "
            f"of gesture_cache ({__version__}) reads (it reads {SCHEMA_VERSION})"
        )
    for shard in manifest["shards"]:
        name = shard["file"]
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
            raise CacheError(f"{path}: shard name {name!r} leaves the cache folder")
        if check_hashes:
            shard_path = folder / name
            if not shard_path.is_file():
                raise CacheError(f"{path}: shard {name} is missing")
            actual = file_sha256(shard_path)
            if actual != shard["sha256"]:
                raise CacheError(
                    f"shard {shard_path} is corrupt: sha256 {actual[:16]}..., "
                    f"the manifest says {shard['sha256'][:16]}..."
                )
    return manifest


def read_failures(folder: str | Path) -> dict[str, dict]:
    """Recorded failures by video id (the last line for an id wins)."""
    path = Path(folder) / FAILURES
    if not path.is_file():
        return {}
    failures = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            failures[record["video_id"]] = record
    return failures


def read_shard_columns(path: Path, columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {c: f[c].asstr()[()] if c in TEXT_COLUMNS else f[c][()] for c in columns}


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
        with h5py.File(folder / shard["file"], "r") as f:
            n = f["features"].shape[0]
            if load_features:
                f["features"].read_direct(features, dest_sel=np.s_[start : start + n])
            mask[start : start + n] = f["mask"][()]
            for column in TEXT_COLUMNS:
                text[column].append(f[column].asstr()[()])
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
    """Appends shards to a cache folder, holding its lock; resumes an existing cache."""

    def __init__(
        self,
        folder: str | Path,
        extractor: dict,
        feature_shape: tuple[int, int],
        dtype: str,
        shard_size: int,
    ):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = _acquire_lock(self.folder)
        try:
            self._open(extractor, feature_shape, dtype)
        except BaseException:
            os.close(self._lock)  # a refused cache must not stay locked in this process
            raise
        self.shard_size = shard_size
        self.pending: list[CachedVideo] = []

    def _open(self, extractor: dict, feature_shape: tuple[int, int], dtype: str) -> None:
        if (self.folder / MANIFEST).exists():
            self.manifest = read_manifest(self.folder)
            self._check_compatible(extractor, feature_shape, dtype)
        else:
            self.manifest = {
                "format": FORMAT,
                "schema_version": SCHEMA_VERSION,
                "created_by": f"gesture_cache {__version__}",
                "extractor": extractor,
                "fingerprint": fingerprint_of(extractor),
                "feature_shape": list(feature_shape),
                "dtype": dtype,
                "classes": [],
                "class_counts": {},
                "shards": [],
                "videos": 0,
            }
        self._remove_leftovers()
        self.done = self._done_videos()
        self.failures = read_failures(self.folder)
        for video_id in set(self.failures) & set(self.done):
            del self.failures[video_id]

    def _check_compatible(
        self, extractor: dict, feature_shape: tuple[int, int], dtype: str
    ) -> None:
        wanted = fingerprint_of(extractor)
        if self.manifest["fingerprint"] != wanted:
            changed = sorted(
                k for k in extractor if extractor[k] != self.manifest["extractor"].get(k)
            )
            raise CacheError(
                f"{self.folder} holds features from another extractor (differs in: "
                f"{', '.join(changed)}); write to a new --out folder"
            )
        if self.manifest["dtype"] != dtype or self.manifest["feature_shape"] != list(feature_shape):
            raise CacheError(
                f"{self.folder} stores {self.manifest['dtype']} features of shape "
                f"{self.manifest['feature_shape']}, not {dtype} {list(feature_shape)}"
            )

    def _remove_leftovers(self) -> None:
        """Temporary files and named-but-unlisted shards are what a killed writer leaves."""
        listed = {s["file"] for s in self.manifest["shards"]}
        for path in self.folder.iterdir():
            unlisted_shard = SHARD_NAME.match(path.name) and path.name not in listed
            if path.name.endswith(".tmp") or unlisted_shard:
                log.warning("removing %s, left by an interrupted extraction", path)
                path.unlink()

    def _done_videos(self) -> dict[str, str]:
        done = {}
        for shard in self.manifest["shards"]:
            columns = read_shard_columns(self.folder / shard["file"], ("video_id", "video_sha256"))
            done.update(zip(columns["video_id"], columns["video_sha256"]))
        return done

    def add(self, video: CachedVideo) -> None:
        self.pending.append(video)
        if len(self.pending) >= self.shard_size:
            self.flush()

    def record_failure(self, record: dict) -> None:
        self.failures[record["video_id"]] = record
        self.write_failures()

    def forget_failures(self, video_ids: set[str]) -> None:
        for video_id in video_ids & set(self.failures):
            del self.failures[video_id]
        self.write_failures()

    def write_failures(self) -> None:
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.failures.values())
        atomic_write(self.folder / FAILURES, lines.encode())

    def flush(self) -> None:
        """Write pending videos as one shard, then list it in the manifest."""
        if not self.pending:
            return
        indices = [
            int(SHARD_NAME.match(s["file"]).group(1))
            for s in self.manifest["shards"]
            if SHARD_NAME.match(s["file"])
        ]
        name = f"part-{max(indices, default=-1) + 1:05d}.h5"
        sha256 = write_shard(self.folder / name, self.pending, self.manifest)
        self.manifest["shards"].append(
            {"file": name, "videos": len(self.pending), "sha256": sha256}
        )
        counts = Counter(self.manifest["class_counts"])
        counts.update(v.label for v in self.pending)
        self.manifest["class_counts"] = dict(sorted(counts.items()))
        self.manifest["classes"] = sorted(counts)
        self.manifest["videos"] += len(self.pending)
        write_manifest(self.folder, self.manifest)
        self.done.update((v.video_id, v.video_sha256) for v in self.pending)
        self.pending = []

    def close(self) -> None:
        self.flush()
        if not (self.folder / MANIFEST).exists():
            write_manifest(self.folder, self.manifest)
        os.close(self._lock)

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if exc_info[0] is None or exc_info[0] is KeyboardInterrupt:
            self.close()  # what was finished is kept
        else:
            os.close(self._lock)


def write_manifest(folder: Path, manifest: dict) -> None:
    atomic_write(
        folder / MANIFEST, (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode()
    )


def write_shard(path: Path, videos: list[CachedVideo], manifest: dict) -> str:
    """Write a shard under a temporary name, fsync, hash, rename; returns its sha256."""
    temporary = path.with_name(f".{path.name}.tmp")
    T, D = manifest["feature_shape"]
    with h5py.File(temporary, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["fingerprint"] = manifest["fingerprint"]
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
        for column, dtype in NUMBER_COLUMNS.items():
            f.create_dataset(column, data=np.array([getattr(v, column) for v in videos], dtype))
        for column in sorted({c for v in videos for c in v.extra}):
            f.create_dataset(
                f"extra/{column}", data=[v.extra.get(column, "") for v in videos], dtype=STRING
            )
    with open(temporary, "rb+") as f:
        os.fsync(f.fileno())
    sha256 = file_sha256(temporary)
    os.replace(temporary, path)
    _fsync_dir(path.parent)
    return sha256


def _acquire_lock(folder: Path) -> int:
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise CacheError(
            f"{folder} is being written by another extraction (pid {holder}); wait for it to end"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


# --- verify and merge ----------------------------------------------------------------


def verify_cache(path: str | Path) -> list[str]:
    """Every problem found, as messages; an empty list means the cache is sound."""
    folder = Path(path)
    try:
        manifest = read_manifest(folder)
    except (CacheError, KeyError, TypeError) as error:
        return [str(error)]
    problems = []
    T, D = manifest["feature_shape"]
    seen: dict[str, str] = {}
    labels: set[str] = set()
    total = 0
    for shard in manifest["shards"]:
        name = shard["file"]
        try:
            with h5py.File(folder / name, "r") as f:
                if f.attrs.get("fingerprint") != manifest["fingerprint"]:
                    problems.append(f"{name}: fingerprint differs from the manifest's")
                if f.attrs.get("schema_version") != SCHEMA_VERSION:
                    problems.append(f"{name}: schema_version {f.attrs.get('schema_version')}")
                features = f["features"][()]
                n = features.shape[0]
                if features.shape[1:] != (T, D) or features.dtype != np.dtype(manifest["dtype"]):
                    problems.append(
                        f"{name}: features {features.dtype} {features.shape[1:]}, "
                        f"manifest says {manifest['dtype']} {(T, D)}"
                    )
                if not np.isfinite(features).all():
                    problems.append(f"{name}: features hold inf or NaN")
                if f["mask"].shape != (n, T):
                    problems.append(f"{name}: mask shape {f['mask'].shape}, expected {(n, T)}")
                for column in (*TEXT_COLUMNS, *NUMBER_COLUMNS):
                    if f[column].shape != (n,):
                        problems.append(f"{name}: {column} has {f[column].shape[0]} rows, not {n}")
                if n != shard["videos"]:
                    problems.append(f"{name}: {n} videos, the manifest says {shard['videos']}")
                for video_id in f["video_id"].asstr()[()]:
                    if video_id in seen:
                        problems.append(f"video {video_id!r} is in {seen[video_id]} and {name}")
                    seen[video_id] = name
                labels.update(f["label"].asstr()[()])
                total += n
        except (OSError, KeyError) as error:
            problems.append(f"{name}: cannot be read ({error})")
    if total != manifest["videos"]:
        problems.append(f"manifest counts {manifest['videos']} videos, the shards hold {total}")
    if sorted(labels) != manifest["classes"]:
        problems.append(
            f"manifest classes {manifest['classes']} != labels in shards {sorted(labels)}"
        )
    return problems


def merge_caches(out: str | Path, sources: list[str | Path]) -> dict:
    """Combine caches built with the same extractor (e.g. `--num-shards` parts) into `out`."""
    manifests = [read_manifest(s) for s in sources]
    first = manifests[0]
    for source, manifest in zip(sources[1:], manifests[1:]):
        if manifest["fingerprint"] != first["fingerprint"] or manifest["dtype"] != first["dtype"]:
            raise CacheError(
                f"{source} was built with another extractor or dtype than {sources[0]}"
            )
    out = Path(out)
    if (out / MANIFEST).exists():
        raise CacheError(f"{out} already holds a cache; merge into a new folder")
    writer = CacheWriter(
        out, first["extractor"], tuple(first["feature_shape"]), first["dtype"], shard_size=10**9
    )
    with writer:
        for source, manifest in zip(sources, manifests):
            for shard in manifest["shards"]:
                videos = _read_shard_videos(Path(source) / shard["file"])
                duplicates = [v.video_id for v in videos if v.video_id in writer.done]
                if duplicates:
                    raise CacheError(f"video {duplicates[0]!r} is in more than one source cache")
                writer.pending = videos
                writer.flush()
            for record in read_failures(source).values():
                if record["video_id"] not in writer.done:
                    writer.failures[record["video_id"]] = record
        writer.write_failures()
    return writer.manifest


def _read_shard_videos(path: Path) -> list[CachedVideo]:
    columns = read_shard_columns(path, ("features", "mask", *TEXT_COLUMNS, *NUMBER_COLUMNS))
    with h5py.File(path, "r") as f:
        extra = {c: f[f"extra/{c}"].asstr()[()] for c in f.get("extra", {})}
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
            extra={c: values[i] for c, values in extra.items()},
        )
        for i in range(len(columns["video_id"]))
    ]
