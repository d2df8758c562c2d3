"""Writing a cache: shards appended under a lock, crash-safe, resumable.

A shard is built in memory, written under a temporary name, fsynced, hashed and only then
renamed, and the manifest is replaced the same way: a SIGKILL at any moment leaves the cache
as it was after the last complete shard (plus, at worst, a named shard the manifest does not
list yet, which the next writer adopts). The writer's view of the manifest changes only once
the new one is on disk, so Ctrl-C inside a write never leaves a recording in two shards.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np

from gesture_cache.cache.manifest import (
    FAILURES,
    FORMAT,
    MANIFEST,
    SCHEMA_VERSION,
    SHARD_NAME,
    TABLES_SHA256,
    CachedRecording,
    ExtractorRecord,
    check_shard_hashes,
    extractor_differences,
    fingerprint_of,
    read_failures,
    read_manifest,
    shard_path,
)
from gesture_cache.cache.shard import COMPRESSIONS, inspect_shard, read_shard, shard_image
from gesture_cache.common.errors import CacheError, ConfigError, GestureCacheError
from gesture_cache.common.files import acquire_lock, atomic_write, file_sha256, write_json
from gesture_cache.common.interrupts import acted_on

OWN_TEMPORARY = re.compile(
    r"^\.(part-\d{5,}\.h5|manifest\.json|failures\.jsonl|verified\.json)\.tmp$"
)


log = logging.getLogger(__name__)


def new_manifest(extractor: ExtractorRecord, dtype: str) -> dict:
    return {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "created_by": extractor.software,
        "extractor": extractor.spec,
        "fingerprint": fingerprint_of(extractor.spec),
        "files": extractor.files,
        "feature_dim": extractor.feature_dim,
        "dtype": dtype,
        "classes": [],
        "class_counts": {},
        "shards": [],
        "recordings": 0,
        "clips": 0,
        "segments": 0,
    }


class CacheWriter:
    """Appends shards to a cache folder, holding its lock; resumes an existing cache.

    `software` (library versions) is recorded with every shard this writer names."""

    def __init__(
        self,
        folder: str | Path,
        extractor: ExtractorRecord,
        *,
        dtype: str,
        shard_size: int,
        compression: str = "gzip",
    ):
        if compression not in COMPRESSIONS:
            raise ConfigError(
                f"--compression {compression!r}: use one of {', '.join(COMPRESSIONS)}"
            )
        self.compression = compression
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CacheError(f"cannot create the cache folder {self.folder}: {error}") from None
        self._lock = acquire_lock(self.folder, kind=CacheError)
        try:
            self.software = extractor.software
            self.shard_size = shard_size
            self.pending: list[CachedRecording] = []
            if (self.folder / MANIFEST).exists():
                self.manifest = read_manifest(self.folder)
                check_shard_hashes(self.folder, self.manifest)  # resumed: the shards intact
                self._check_compatible(extractor.spec, extractor.feature_dim, dtype)
            else:
                self.manifest = new_manifest(extractor, dtype)
            self._read_done()
            self._clean_leftovers()
            self.failures = {
                k: r for k, r in read_failures(self.folder).items() if k not in self.done
            }
        except BaseException:
            os.close(self._lock)  # a refused cache must not stay locked in this process
            raise

    def _check_compatible(self, extractor: dict, dim: int, dtype: str) -> None:
        if self.manifest["schema_version"] != SCHEMA_VERSION:
            raise CacheError(
                f"{self.folder} is a schema-{self.manifest['schema_version']} cache; this "
                f"version writes schema {SCHEMA_VERSION}: extract into a new --out folder"
            )
        if self.manifest["fingerprint"] != fingerprint_of(extractor):
            old = self.manifest["extractor"]
            changed = extractor_differences(old, extractor)
            why = ""
            if "backend" in changed:
                why = (
                    f" ({old['precision']} features differ between backends; at float32 they "
                    "agree, and any backend resumes)"
                )
            raise CacheError(
                f"{self.folder} holds features from another extractor (differs in: "
                f"{', '.join(changed)}){why}; write to a new --out folder"
            )
        if self.manifest["dtype"] != dtype or self.manifest["feature_dim"] != dim:
            raise CacheError(
                f"{self.folder} stores {self.manifest['dtype']} features of size "
                f"{self.manifest['feature_dim']}, not {dtype} {dim}"
            )

    def _read_done(self) -> None:
        """What the listed shards hold: recordings (with their sha256, file size and time,
        frame count and rate) and segments."""
        self.done: dict[str, str] = {}
        self.done_stats: dict[str, tuple[int, float]] = {}
        self.done_frames: dict[str, tuple[int, float]] = {}
        self.done_segments: dict[str, set[tuple[str, int, int]]] = {}
        for shard in self.manifest["shards"]:
            self._note_done(shard_path(self.folder, shard["file"]))

    def _note_done(self, path: Path) -> None:
        try:
            content = read_shard(path, SCHEMA_VERSION)
        except CacheError as error:
            raise CacheError(
                f"{error}; `gesture-cache repair {self.folder}` sets a damaged shard aside "
                "and keeps every intact recording"
            ) from None
        r, s = content.recordings, content.segments
        ids = r["recording_id"].tolist()
        self.done.update(zip(ids, r["sha256"].tolist()))
        self.done_stats.update(zip(ids, zip(r["file_size"].tolist(), r["file_mtime"].tolist())))
        self.done_frames.update(zip(ids, zip(r["n_frames"].tolist(), r["fps"].tolist())))
        for rid, label, start, end in zip(
            s["recording_id"], s["label"], s["start_frame"].tolist(), s["end_frame"].tolist()
        ):
            self.done_segments.setdefault(rid, set()).add((label, start, end))

    def _clean_leftovers(self) -> None:
        """What a killed writer leaves: its own temporary files (deleted) and a named shard
        the manifest does not list yet (adopted: its recordings are done). Anything else that
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

    def _adopt(self, path: Path) -> None:
        """A shard renamed by a writer killed before it updated the manifest."""
        problem, content = inspect_shard(path, self.manifest)
        if problem is None:
            if set(content.recordings["recording_id"]) & set(self.done):
                problem = "it repeats recordings the cache already holds"
        if problem:
            raise CacheError(
                f"{path} is not listed in the manifest and cannot be adopted ({problem}); "
                f"run `gesture-cache repair {self.folder}`"
            )
        log.warning("adopting %s, named by an interrupted extraction", path)
        table = content.recordings
        short = [
            [
                str(table["recording_id"][i]),
                int(table["claimed_frames"][i]),
                int(table["n_frames"][i]),
            ]
            for i in np.flatnonzero(table["claimed_frames"] > table["n_frames"])
        ]
        self._list_shard(
            path.name,
            file_sha256(path),
            len(content.recordings["recording_id"]),
            len(content.clip_valid),
            content.segments["label"].tolist(),
            short,
            content.tables_sha256,
        )
        self._note_done(path)

    def add(self, recording: CachedRecording) -> None:
        self.pending.append(recording)
        if len(self.pending) >= self.shard_size:
            self.flush()

    def record_failure(self, record: dict) -> None:
        """Append one line (kept compact at the end of the job)."""
        self.failures[record["key"]] = record
        path = shard_path(self.folder, FAILURES)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        except OSError as error:
            raise CacheError(f"cannot write {path}: {error}") from None

    def forget_failures(self, recording_ids: set[str]) -> None:
        """Forget the failures of these recordings (and of their rows), for --retry-failed."""
        for key in list(self.failures):
            if key.split("#", 1)[0] in recording_ids:
                del self.failures[key]
        self.write_failures()

    def write_failures(self) -> None:
        """Rewrite failures.jsonl compactly, one line per key still failed."""
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.failures.values())
        _atomic(self.folder / FAILURES, lines.encode())

    def flush(self) -> None:
        """Write pending recordings as one shard, then list it in the manifest."""
        if not self.pending:
            return
        name = next_shard_name(self.folder, self.manifest)
        image, tables = shard_image(self.pending, self.manifest, self.software, self.compression)
        sha256 = _atomic(self.folder / name, image)
        self._list_shard(
            name,
            sha256,
            len(self.pending),
            sum(len(r.features) for r in self.pending),
            [s.label for r in self.pending for s in r.segments],
            [
                [r.recording_id, r.claimed_frames, r.n_frames]
                for r in self.pending
                if r.claimed_frames > r.n_frames
            ],
            tables,
        )
        self._note_done(self.folder / name)
        self.pending = []

    def _list_shard(
        self,
        name: str,
        sha256: str,
        recordings: int,
        clips: int,
        labels: list[str],
        short: list[list],
        tables: str | None,
    ) -> None:
        """List a shard; `short`: its recordings that decode fewer frames than they claim
        (id, claimed, decoded), so `info` reports them without reading a shard; `tables`:
        the checksum of its tables (None for a shard of an older version)."""
        entry = {
            "file": name,
            "recordings": recordings,
            "clips": clips,
            "segments": len(labels),
            "sha256": sha256,
            "software": self.software,
            "short": short,
            **({TABLES_SHA256: tables} if tables else {}),
        }
        manifest = with_shard(self.manifest, entry, labels)
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
        elif acted_on(exc_info[1]):
            # Ctrl-C may have landed inside a flush: trust the disk, then keep what is done.
            self._resync()
            self.close()
        else:
            os.close(self._lock)

    def _resync(self) -> None:
        if (self.folder / MANIFEST).exists():
            self.manifest = read_manifest(self.folder)
        self._read_done()
        self._clean_leftovers()
        self.pending = [r for r in self.pending if r.recording_id not in self.done]


def with_shard(manifest: dict, entry: dict, labels: list[str]) -> dict:
    """The manifest with one more shard listed (`labels`: its segments' labels)."""
    counts = Counter(manifest["class_counts"])
    counts.update(labels)
    return {
        **manifest,
        "shards": [*manifest["shards"], entry],
        "class_counts": dict(sorted(counts.items())),
        "classes": sorted(counts),
        "recordings": manifest["recordings"] + entry["recordings"],
        "clips": manifest["clips"] + entry["clips"],
        "segments": manifest["segments"] + len(labels),
    }


def next_shard_name(folder: Path, manifest: dict) -> str:
    """One past the highest shard number, listed or lying in the folder."""
    names = [s["file"] for s in manifest["shards"]] + [p.name for p in folder.iterdir()]
    numbers = [int(m.group(1)) for n in names if (m := SHARD_NAME.match(n))]
    return f"part-{max(numbers, default=-1) + 1:05d}.h5"


def _atomic(path: Path, data: bytes) -> str:
    try:
        return atomic_write(path, data)
    except GestureCacheError as error:
        raise CacheError(str(error)) from None


def write_manifest(folder: Path, manifest: dict) -> None:
    try:
        write_json(folder / MANIFEST, manifest)
    except GestureCacheError as error:
        raise CacheError(str(error)) from None
