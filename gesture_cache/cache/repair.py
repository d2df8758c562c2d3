"""`gesture-cache repair`: a damaged cache rebuilt beside it from what still reads."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from gesture_cache.cache.manifest import (
    FAILURES,
    SCHEMA_VERSION,
    SHARD_NAME,
    TABLES_SHA256,
    ExtractorRecord,
    read_failures,
    read_manifest,
    shard_path,
)
from gesture_cache.cache.shard import inspect_shard, read_shard, read_shard_recordings, shard_image
from gesture_cache.cache.writer import new_manifest, write_manifest
from gesture_cache.common.errors import CacheError
from gesture_cache.common.files import (
    acquire_lock,
    atomic_write,
    file_sha256,
)
from gesture_cache.common.hdf5 import IndirectionError, open_plain

log = logging.getLogger(__name__)


@dataclass
class RepairReport:
    kept: int = 0  # recordings in the repaired cache
    dropped: list[str] = field(default_factory=list)  # what was removed, and why
    set_aside: list[str] = field(default_factory=list)  # damaged shards, renamed damaged-*
    lost: int = 0  # recordings the manifest listed in the shards set aside
    duplicates: int = 0  # recordings dropped because an earlier shard holds them

    def summary(self) -> str:
        shards = len(self.set_aside)
        text = f"{self.kept} recordings kept"
        if shards:
            text += (
                f"; {shards} damaged shard{'s' * (shards != 1)} set aside as "
                f"{', '.join(self.set_aside)} ({self.lost} recordings listed in them)"
            )
        if self.duplicates:
            text += f"; {self.duplicates} recordings held twice kept once"
        return text


def repair_cache(path: str | Path) -> RepairReport:
    """Make a damaged cache consistent again, keeping every recording that is intact.

    Shards that are listed and intact stay as they are. Unlisted shards with the cache's
    fingerprint are adopted; corrupt or foreign shards are set aside as `damaged-part-*.h5`;
    a recording already held by an earlier shard is dropped (a shard with some duplicates is
    rewritten without them). The manifest is rewritten from what remains; an unreadable one
    is rebuilt from a shard's own attributes."""
    folder = Path(path)
    manifest = _manifest_for_repair(folder)
    report = RepairReport()
    lock = acquire_lock(folder, kind=CacheError)
    try:
        listed = {s["file"]: s for s in manifest["shards"]}
        kept: list[tuple[str, dict, int, int, list[str], str | None]] = []
        owner: dict[str, str] = {}
        for name in sorted(p.name for p in folder.iterdir() if SHARD_NAME.match(p.name)):
            path = shard_path(folder, name)
            problem, _ = inspect_shard(path, manifest)
            if problem is None and name in listed and file_sha256(path) != listed[name]["sha256"]:
                problem = "its sha256 differs from the manifest's"
            if problem:
                report.dropped.append(f"{name}: {problem}")
                report.set_aside.append(f"damaged-{name}")
                report.lost += listed.get(name, {}).get("recordings", 0)
                path.rename(path.with_name(f"damaged-{name}"))
                continue
            recordings = read_shard_recordings(path)
            fresh = [r for r in recordings if r.recording_id not in owner]
            for r in recordings:
                if r.recording_id in owner:
                    report.duplicates += 1
                    report.dropped.append(
                        f"{name}: {r.recording_id} (also in {owner[r.recording_id]})"
                    )
            if not fresh:
                path.unlink()
                continue
            software = listed.get(name, {}).get("software", {})
            if len(fresh) < len(recordings):
                atomic_write(path, shard_image(fresh, manifest, software)[0])
            owner.update((r.recording_id, name) for r in fresh)
            labels = [s.label for r in fresh for s in r.segments]
            tables = read_shard(path, SCHEMA_VERSION).tables_sha256
            clips = sum(len(r.features) for r in fresh)
            kept.append((name, software, len(fresh), clips, labels, tables))
        for leftover in folder.iterdir():
            if leftover.name.startswith(".") and leftover.name.endswith(".tmp"):
                leftover.unlink()
        counts = Counter(label for *_, labels, _ in kept for label in labels)
        manifest.update(
            shards=[
                {
                    "file": name,
                    "recordings": recordings,
                    "clips": clips,
                    "segments": len(labels),
                    "sha256": file_sha256(folder / name),
                    "software": software,
                    **({TABLES_SHA256: tables} if tables else {}),
                }
                for name, software, recordings, clips, labels, tables in kept
            ],
            class_counts=dict(sorted(counts.items())),
            classes=sorted(counts),
            recordings=sum(k[2] for k in kept),
            clips=sum(k[3] for k in kept),
            segments=sum(counts.values()),
        )
        write_manifest(folder, manifest)
        failures = {
            k: r for k, r in read_failures(folder).items() if k.split("#", 1)[0] not in owner
        }
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in failures.values())
        atomic_write(folder / FAILURES, lines.encode())
        report.kept = manifest["recordings"]
    finally:
        os.close(lock)
    return report


def _manifest_for_repair(folder: Path) -> dict:
    """The manifest if it can be read; else one rebuilt from a shard's own attributes."""
    try:
        manifest = read_manifest(folder)
    except CacheError as error:
        if not folder.is_dir():
            raise
        reason = str(error)
    else:
        if manifest["schema_version"] != SCHEMA_VERSION:
            raise CacheError(f"{folder} is a schema-1 cache; this version repairs schema 2")
        return manifest
    for path in sorted(folder.glob("part-*.h5")):
        try:
            with open_plain(path, f"shard {path}") as f:
                extractor = json.loads(f.attrs["extractor"])
                features = f["features"]
                dim, dtype = int(features.shape[1]), str(features.dtype)
        except (OSError, KeyError, ValueError, IndexError, IndirectionError):
            continue
        log.warning("manifest unusable (%s); rebuilding it from %s", reason, path.name)
        return new_manifest(ExtractorRecord(extractor, dim), dtype)
    raise CacheError(f"{folder} cannot be repaired: {reason}, and no shard says what it is")
