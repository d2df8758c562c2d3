"""Trusting a cache: verify it, merge caches, repair a damaged one."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import repeat
from pathlib import Path

import h5py
import numpy as np

from gesture_cache.cache import (
    FAILURES,
    MANIFEST,
    SCHEMA_VERSION,
    SHARD_NAME,
    TABLES_SHA256,
    Cache,
    CacheError,
    check_shard_hash,
    extractor_differences,
    feature_dim,
    fingerprint_of,
    inspect_shard,
    open_cache,
    read_failures,
    read_manifest,
    read_shard,
    read_shard_recordings,
    shard_image,
    shard_path,
    shard_recordings,
    total_recordings,
)
from gesture_cache.errors import GestureCacheError
from gesture_cache.files import (
    LOCK,
    acquire_lock,
    atomic_write,
    file_sha256,
    fsync_dir,
    make_parents,
    refuse_link,
    remove_made,
    staging_folder,
)
from gesture_cache.writer import CacheWriter, new_manifest, write_manifest

log = logging.getLogger(__name__)


@dataclass
class Verification:
    problems: list[str]  # the cache must not be used as it is
    warnings: list[str]  # usable, but worth knowing (e.g. one file under two paths)
    recordings: int = 0


@dataclass
class ShardReport:
    """What one shard holds and what is wrong with it, without its features."""

    problems: list[str]
    ids: list[str] = field(default_factory=list)
    sha256s: list[str] = field(default_factory=list)
    labels: Counter = field(default_factory=Counter)
    clips: int = 0
    parts: dict[str, str] = field(default_factory=dict)  # recording -> its split cell, if any


# A cache of this many shards or more is verified by one thread per core: hashing and
# inflating features (`cache.stored_features`) release the GIL.
PARALLEL_SHARDS = 16


def verify_cache(path: str | Path) -> Verification:
    """Every problem found, as messages: fields, fingerprint, hashes, tables, values, counts.
    Each shard is hashed once; large caches are checked on every core (threads)."""
    folder = Path(path)
    try:
        manifest = read_manifest(folder, check_hashes=False)
    except CacheError as error:
        return Verification([str(error)], [])
    problems: list[str] = []
    if fingerprint_of(manifest["extractor"]) != manifest["fingerprint"]:
        problems.append("manifest fingerprint is not the sha256 of its extractor (edited?)")
    shards = manifest["shards"]
    workers = min(os.cpu_count() or 1, len(shards))
    if len(shards) >= PARALLEL_SHARDS and workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            reports = list(pool.map(check_shard, repeat(folder), shards, repeat(manifest)))
    else:
        reports = [check_shard(folder, shard, manifest) for shard in shards]
    seen: dict[str, str] = {}
    by_content: dict[str, list[str]] = {}
    parts: dict[str, str] = {}
    labels: Counter = Counter()
    recordings = clips = 0
    for shard, report in zip(shards, reports):
        problems += report.problems
        for recording_id, sha256 in zip(report.ids, report.sha256s):
            if recording_id in seen:
                problems.append(
                    f"recording {recording_id!r} is in {seen[recording_id]} and {shard['file']}"
                )
            seen[recording_id] = shard["file"]
            by_content.setdefault(sha256, []).append(recording_id)
        labels.update(report.labels)
        parts.update(report.parts)
        recordings += len(report.ids)
        clips += report.clips
    if not problems:
        problems += count_problems(manifest, recordings, clips, labels)
    if not problems:
        record_verified(folder, manifest)
    warnings = [copies_warning(sha, ids, parts) for sha, ids in by_content.items() if len(ids) > 1]
    return Verification(problems, warnings, recordings)


def copies_warning(sha256: str, ids: list[str], parts: dict[str, str]) -> str:
    """What one file cached under several ids means for training: a random split keeps them
    together; the cache's own split column may not, which `train` refuses."""
    text = f"the same file content (sha256 {sha256[:12]}...) is cached as {', '.join(ids)}"
    cells = {parts[i].strip().lower() for i in ids if i in parts}
    if len(cells) > 1:
        return (
            f"{text}, in the split column's parts {', '.join(sorted(cells))}: train refuses "
            "that official split (leakage) unless --allow-duplicates; --split random keeps "
            "them together"
        )
    return f"{text}; random splits keep these recordings together"


def check_shard(folder: Path, shard: dict, manifest: dict) -> ShardReport:
    """One shard against the manifest: its hash, attributes, tables, finite features."""
    name = shard["file"]
    try:
        check_shard_hash(folder, shard)
    except CacheError as error:
        return ShardReport([str(error)])
    problem, content = inspect_shard(folder / name, manifest)
    problems = [f"{name}: {problem}"] if problem else []
    if content is None:
        return ShardReport(problems)
    ids = content.recordings["recording_id"].tolist()
    if len(ids) != shard_recordings(manifest, shard):
        problems.append(f"{name}: {len(ids)} recordings, the manifest says otherwise")
    if manifest["schema_version"] == 2 and (
        shard["clips"] != len(content.clip_valid)
        or shard["segments"] != len(content.segments["label"])
    ):
        problems.append(f"{name}: clip or segment count differs from the manifest's")
    if "short" in shard:
        table = content.recordings
        short = table["claimed_frames"] > table["n_frames"]
        if sorted(str(v) for v, _, _ in shard["short"]) != sorted(
            table["recording_id"][short].tolist()
        ):
            problems.append(f"{name}: its list of short recordings differs from the shard's")
    segments = content.segments
    parts = {}
    if "extra/split" in segments:
        parts = dict(zip(segments["recording_id"].tolist(), segments["extra/split"].tolist()))
    return ShardReport(
        problems,
        ids,
        content.recordings["sha256"].tolist(),
        Counter(segments["label"].tolist()),
        len(content.clip_valid),
        parts,
    )


def count_problems(manifest: dict, recordings: int, clips: int, labels: Counter) -> list[str]:
    problems = []
    if total_recordings(manifest) != recordings:
        problems.append(
            f"manifest counts {total_recordings(manifest)} recordings, shards hold {recordings}"
        )
    if manifest["schema_version"] == 2 and (
        manifest["clips"] != clips or manifest["segments"] != sum(labels.values())
    ):
        problems.append("manifest clip or segment totals differ from the shards'")
    counts = dict(sorted(labels.items()))
    if counts != manifest["class_counts"]:
        problems.append(f"manifest class_counts {manifest['class_counts']} != shards {counts}")
    if sorted(labels) != manifest["classes"]:
        problems.append(f"manifest classes {manifest['classes']} != shards {sorted(labels)}")
    return problems


# What `verify` leaves in a cache it passed: the manifest's sha256 and each shard's size and
# modification time then. While they still match, commands that load the cache for work
# trust that verification (as `extract` trusts an unchanged file's hash) instead of hashing
# every shard again; `verify` itself always checks everything.
VERIFIED = "verified.json"


def file_stats(folder: Path, manifest: dict) -> dict[str, list[int]]:
    stats = {}
    for shard in manifest["shards"]:
        found = shard_path(folder, shard["file"]).stat()
        stats[shard["file"]] = [found.st_size, found.st_mtime_ns]
    return stats


def record_verified(folder: Path, manifest: dict) -> None:
    """Leave the stamp; a cache folder that cannot be written (read-only) goes without."""
    stamp = {
        "verified_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "manifest_sha256": file_sha256(folder / MANIFEST),
        "shards": file_stats(folder, manifest),
    }
    try:
        atomic_write(folder / VERIFIED, json.dumps(stamp, indent=1).encode())
    except GestureCacheError as error:
        log.debug("no verification stamp: %s", str(error))


def last_verified(path: str | Path, manifest: dict) -> str | None:
    """When `verify` last passed the cache, if nothing has changed since (else None)."""
    folder = Path(path)
    try:
        stamp = json.loads((folder / VERIFIED).read_text())
        unchanged = stamp["manifest_sha256"] == file_sha256(folder / MANIFEST) and stamp[
            "shards"
        ] == file_stats(folder, manifest)
        return str(stamp["verified_at"]) if unchanged else None
    except (OSError, ValueError, KeyError, TypeError, CacheError):
        return None


def verified_manifest(path: str | Path, trust_stamp: bool = False) -> dict:
    """The manifest of a cache that passes `verify_cache`, or a CacheError with its problem.
    `trust_stamp`: a cache verified before and unchanged since (same manifest, same shard
    sizes and times) is not hashed again, when every shard checks what is read from it on
    each read: its features by HDF5's fletcher32 (or zlib's adler32) chunk checksums, its
    tables by `tables_sha256`. Shards of older versions lack the latter, so a cache that
    holds one is verified whole each time."""
    if trust_stamp:
        manifest = read_manifest(path, check_hashes=False)
        self_checking = all(TABLES_SHA256 in shard for shard in manifest["shards"])
        when = last_verified(path, manifest) if self_checking else None
        if when:
            log.info(
                "cache %s passed verify at %s and is unchanged since (manifest sha256, shard "
                "sizes and times): not hashed again; `gesture-cache verify` checks everything",
                path,
                when,
            )
            return manifest
    result = verify_cache(path)
    if result.problems:
        more = f" (and {len(result.problems) - 1} more)" if len(result.problems) > 1 else ""
        raise CacheError(f"cache {path} fails verification: {result.problems[0]}{more}")
    return read_manifest(path, check_hashes=False)


def merge_caches(sources: list[str | Path], out: str | Path, compression: str = "gzip") -> dict:
    """Combine caches built with the same extractor (e.g. `--num-shards` parts) into `out`
    (one cache given: a copy, e.g. stored with another `compression`).

    Every source is verified and every recording id checked before anything is written; the
    merged cache is built in a temporary folder beside `out` and renamed at the end, so a
    failed merge leaves no partial cache behind."""
    out = Path(out)
    refuse_link(out, "--out")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CacheError(f"--out {out} exists and is not empty; merge into a new folder")
    manifests = [verified_manifest(s) for s in sources]
    first = manifests[0]
    for source, manifest in zip(sources, manifests):
        if manifest["schema_version"] != SCHEMA_VERSION:
            raise CacheError(
                f"{source} is a schema-{manifest['schema_version']} cache; merge needs schema "
                f"{SCHEMA_VERSION} caches (versions are never mixed): re-extract it"
            )
        if manifest["fingerprint"] != first["fingerprint"]:
            differ = extractor_differences(first["extractor"], manifest["extractor"])
            raise CacheError(
                f"{source} was built with another extractor than {sources[0]} (differs in: "
                f"{', '.join(differ) or 'fingerprint'}); merge caches of one extractor"
            )
        if manifest["dtype"] != first["dtype"]:
            raise CacheError(
                f"{source} stores {manifest['dtype']} features, {sources[0]} "
                f"{first['dtype']}; merge caches of one dtype"
            )
    owner: dict[str, str] = {}
    for source, manifest in zip(sources, manifests):
        for shard in manifest["shards"]:
            content = read_shard(Path(source) / shard["file"], SCHEMA_VERSION)
            for recording_id in content.recordings["recording_id"]:
                if recording_id in owner:
                    raise CacheError(
                        f"recording {recording_id!r} is in both {owner[recording_id]} and {source}"
                    )
                owner[recording_id] = str(source)
    made = make_parents(out)
    staging = staging_folder(out)
    try:
        writer = CacheWriter(
            staging,
            first["extractor"],
            first["feature_dim"],
            first["dtype"],
            shard_size=10**9,
            files=first.get("files", {}),
            software=first.get("created_by", {}),
            compression=compression,
        )
        with writer:
            for source, manifest in zip(sources, manifests):
                for shard in manifest["shards"]:
                    writer.software = shard.get("software", {})
                    writer.pending = read_shard_recordings(Path(source) / shard["file"])
                    writer.flush()
                for key, record in read_failures(source).items():
                    if key.split("#", 1)[0] not in writer.done:
                        writer.failures[key] = record
        (staging / LOCK).unlink(missing_ok=True)
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        remove_made(made)
        raise
    return read_manifest(out, check_hashes=False)


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
        manifest = read_manifest(folder, check_hashes=False)
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
            with h5py.File(path, "r") as f:
                extractor = json.loads(f.attrs["extractor"])
                features = f["features"]
                dim, dtype = int(features.shape[1]), str(features.dtype)
        except (OSError, KeyError, ValueError, IndexError):
            continue
        log.warning("manifest unusable (%s); rebuilding it from %s", reason, path.name)
        return new_manifest(extractor, dim, dtype, {}, {})
    raise CacheError(f"{folder} cannot be repaired: {reason}, and no shard says what it is")


# A whole `train` process holding a cache in memory, measured by benchmarks/train_memory.py
# (2026-12-02, 2-core VM): 1.05 bytes of memory per byte of features (read straight into
# one array that tf.data gathers from in place), plus about 1.3 GB that does not grow with
# the cache (TensorFlow, Keras, the pipeline, a small model); a larger model adds its
# training state (`model.training_state_mb`).
MEMORY_PER_FEATURE_BYTE = 1.1
PROCESS_MB = 1300


def features_mb(manifest: dict) -> float:
    """The size of a cache's features in memory, in MB."""
    rows = (
        manifest["clips"]
        if manifest["schema_version"] == 2
        else (manifest["videos"] * manifest["feature_shape"][0])
    )
    return rows * feature_dim(manifest) * np.dtype(manifest["dtype"]).itemsize / 2**20


def load_verified_cache(
    path: str | Path, memory_limit_mb: float, reserved_mb: float = 0.0
) -> Cache:
    """Refuse a cache that fails `verify`; keep features on disk when holding them in
    memory would pass the limit: MEMORY_PER_FEATURE_BYTE times their size, plus
    `reserved_mb` for the rest of the process."""
    manifest = verified_manifest(path, trust_stamp=True)
    peak_mb = MEMORY_PER_FEATURE_BYTE * features_mb(manifest) + reserved_mb
    cache = open_cache(path, load_features=peak_mb <= memory_limit_mb, check_hashes=False)
    if cache.features is None:
        log.info(
            "the cache in memory, with the rest of training, needs about %.0f MB, over "
            "--memory-limit %.0f: streaming it shard by shard",
            peak_mb,
            memory_limit_mb,
        )
    if cache.random_weights:
        log.warning(
            "THE FEATURES IN %s COME FROM RANDOM C3D WEIGHTS: fine for a demo or a test, "
            "meaningless for real gestures; extract with --weights for real work",
            path,
        )
    return cache
