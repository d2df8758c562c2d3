"""Trusting a cache: `verify` checks every shard and stamps it; `load_verified_cache` opens
a cache within a memory budget, trusting the stamp where nothing changed."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import repeat
from pathlib import Path

import numpy as np

from gesture_cache.cache.manifest import (
    MANIFEST,
    TABLES_SHA256,
    check_shard_hash,
    feature_dim,
    fingerprint_of,
    read_manifest,
    shard_path,
    shard_recordings,
    total_recordings,
)
from gesture_cache.cache.reader import Cache, open_cache
from gesture_cache.cache.shard import inspect_shard
from gesture_cache.common.errors import CacheError, GestureCacheError
from gesture_cache.common.files import atomic_write, file_sha256

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


def verify_cache(path: str | Path, manifest: dict | None = None) -> Verification:
    """Every problem found, as messages: fields, fingerprint, hashes, tables, values, counts.
    Each shard is hashed once; large caches are checked on every core (threads).
    `manifest`: the one read already."""
    folder = Path(path)
    try:
        manifest = manifest or read_manifest(folder)
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


def verified_manifest(
    path: str | Path, trust_stamp: bool = False, manifest: dict | None = None
) -> dict:
    """The manifest of a cache that passes `verify_cache`, or a CacheError with its problem.
    `trust_stamp`: a cache verified before and unchanged since (same manifest, same shard
    sizes and times) is not hashed again, when every shard checks what is read from it on
    each read: its features by HDF5's fletcher32 (or zlib's adler32) chunk checksums, its
    tables by `tables_sha256`. Shards of older versions lack the latter, so a cache that
    holds one is verified whole each time. `manifest`: the one read already (read once)."""
    manifest = manifest or read_manifest(path)
    if trust_stamp:
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
    result = verify_cache(path, manifest)
    if result.problems:
        more = f" (and {len(result.problems) - 1} more)" if len(result.problems) > 1 else ""
        raise CacheError(f"cache {path} fails verification: {result.problems[0]}{more}")
    return manifest


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
    path: str | Path, memory_limit_mb: float, reserved_mb: float = 0.0,
    manifest: dict | None = None,
) -> Cache:  # fmt: skip
    """Refuse a cache that fails `verify`; keep features on disk when holding them in
    memory would pass the limit: MEMORY_PER_FEATURE_BYTE times their size, plus
    `reserved_mb` for the rest of the process. `manifest`: the one read already; the
    manifest is read once on the whole way."""
    manifest = verified_manifest(path, trust_stamp=True, manifest=manifest)
    peak_mb = MEMORY_PER_FEATURE_BYTE * features_mb(manifest) + reserved_mb
    loaded = peak_mb <= memory_limit_mb
    cache = open_cache(path, load_features=loaded, check_hashes=False, manifest=manifest)
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
