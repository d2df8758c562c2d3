"""`pull URL CACHE`: the cache at a URL copied into a local folder, and the local copies of
URLs that every command reading a cache uses.

A pull into a cache of the same extractor keeps the recordings extracted there that the URL
lacks (the two are merged; `--force` drops them). A pulled shard is written under a temporary
name, checked, and only then renamed, and a local shard that already has the manifest's
sha256 is kept. A pull that has not finished keeps the manifest it is fetching as
`.pull.json`, so that running it again (after Ctrl-C, kill -9, a dropped connection, a full
disk) knows the folder is its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from gesture_cache.cache.manifest import (
    FAILURES,
    MANIFEST,
    TABLES_SHA256,
    read_failures,
    read_manifest,
    shard_path,
)
from gesture_cache.cache.remote import Remote, open_remote, redacted
from gesture_cache.cache.shard import read_shard, read_shard_recordings, shard_image
from gesture_cache.cache.transfer import (
    Step,
    Transfer,
    fetch_to,
    for_each_shard,
    listing,
    recording_ids,
    remote_bytes,
)
from gesture_cache.cache.writer import next_shard_name, with_shard
from gesture_cache.common.errors import CacheError
from gesture_cache.common.files import (
    LOCK,
    acquire_lock,
    atomic_write,
    file_sha256,
    fsync_dir,
    refuse_link,
    user_cache_folder,
    write_json,
)
from gesture_cache.common.hdf5 import open_plain

DERIVED = ("verified.json",)  # local stamps that a changed cache no longer earns


PULLING = ".pull.json"  # the manifest an unfinished pull is fetching


COPIED = ".copied.json"  # a local copy's shards as fetched: name -> [size, mtime_ns]


SOURCE = ".source-url"  # the URL a local copy follows (redacted)


def pull(
    url: str, cache: str | Path, options: dict | None = None, force: bool = False,
    workers: int = 8, trust_copied: bool = False,
) -> Transfer:  # fmt: skip
    """Copy the cache at `url` into the local folder `cache`: new, or a cache of the same
    extractor, whose recordings the URL lacks are kept beside the URL's (merged; `force`
    drops them); another cache there is refused unless `force`. Local shards are hashed to
    know whether they are the manifest's; `trust_copied` (a local copy of our own) keeps
    without hashing those whose size and time are as this module fetched them."""
    cache = Path(cache)
    refuse_link(cache, "CACHE")
    remote = open_remote(url, options)
    manifest = remote.manifest()
    if manifest is None:
        raise CacheError(f"{remote.url}: no cache there (no {MANIFEST})")
    existing_manifest(cache)  # another folder is refused before anything is written in it
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CacheError(f"{cache}: cannot be created ({error.strerror or error})") from None
    lock = acquire_lock(cache, kind=CacheError, wait=trust_copied)
    try:
        local, unfinished = existing_manifest(cache), unfinished_pull(cache)
        ours = local or unfinished
        if ours and ours["fingerprint"] != manifest["fingerprint"] and not force:
            held = "another cache" if local else "an unfinished pull of another cache"
            raise CacheError(
                f"{cache} holds {held} (fingerprint {ours['fingerprint'][:12]}...; "
                f"{remote.url} has {manifest['fingerprint'][:12]}...): pull into a new "
                "folder, or --force to replace it"
            )
        for stale in cache.glob(".*.part-*"):  # left by a pull that was killed
            stale.unlink()
        write_json(cache / PULLING, manifest)  # before any shard: a rerun knows the folder
        started, done = time.perf_counter(), Transfer()
        total = sum(listing(remote).get(s["file"], {}).get("size", 0) for s in manifest["shards"])
        copied = read_copied(cache) if trust_copied else {}

        def step(shard: dict) -> Step:
            path = shard_path(cache, shard["file"])
            if path.is_file() and copied.get(shard["file"]) == file_stamp(path):
                return Step(path.stat().st_size, kept=True)
            return fetch(remote, shard, cache)

        for_each_shard(step, manifest["shards"], workers, total, "pull", done)
        same = local is not None and local["fingerprint"] == manifest["fingerprint"]
        result = merged(cache, manifest, local if same and not force else None, done)
        failures = remote_bytes(remote, FAILURES)
        atomic_write(cache / FAILURES, merged_failures(cache, failures, result))
        if done.moved or local is None or local != result:
            for name in DERIVED:
                (cache / name).unlink(missing_ok=True)
        fsync_dir(cache)
        write_json(cache / MANIFEST, result)
        if trust_copied:
            write_json(cache / COPIED, {s["file"]: file_stamp(cache / s["file"])
                                        for s in result["shards"]})  # fmt: skip
        (cache / PULLING).unlink()
        listed = {s["file"] for s in result["shards"]}
        for shard in [*(local or {}).get("shards", []), *(unfinished or {}).get("shards", [])]:
            if shard["file"] not in listed:
                shard_path(cache, shard["file"]).unlink(missing_ok=True)
        done.seconds = time.perf_counter() - started
        return done
    except OSError as error:  # a read-only folder, a full disk: named, never a traceback
        raise CacheError(f"{cache}: cannot be written ({error.strerror or error})") from None
    finally:
        os.close(lock)


def merged(cache: Path, manifest: dict, local: dict | None, done: Transfer) -> dict:
    """The URL's manifest, plus the recordings of `local` (the cache pulled into, same
    extractor) that the URL lacks: a local shard that only holds such recordings is listed
    as it is, one that holds some is rewritten without the others, one that holds none is
    dropped (its recordings are all at the URL)."""
    theirs = {s["sha256"] for s in manifest["shards"]}
    only_here = [s for s in (local or {}).get("shards", []) if s["sha256"] not in theirs]
    if not only_here:
        return manifest
    taken = recording_ids(cache, manifest)
    result = manifest
    for shard in only_here:
        path = shard_path(cache, shard["file"])
        content = read_shard(path, 2)
        ids = [str(i) for i in content.recordings["recording_id"]]
        fresh = [i for i in ids if i not in taken]
        if not fresh:
            continue
        if len(fresh) == len(ids):
            labels = content.segments["label"].tolist()
            result = with_shard(result, shard, labels)
        else:
            keep = [r for r in read_shard_recordings(path) if r.recording_id in fresh]
            software = shard.get("software", {})
            image, tables = shard_image(keep, result, software, shard_compression(path))
            name = next_shard_name(cache, result)
            sha256 = atomic_write(cache / name, image)
            entry = {
                "file": name,
                "recordings": len(keep),
                "clips": sum(len(r.features) for r in keep),
                "segments": sum(len(r.segments) for r in keep),
                "sha256": sha256,
                "software": software,
                "short": [[r.recording_id, r.claimed_frames, r.n_frames]
                          for r in keep if r.claimed_frames > r.n_frames],
                TABLES_SHA256: tables,
            }  # fmt: skip
            result = with_shard(result, entry, [s.label for r in keep for s in r.segments])
        taken.update(fresh)
        done.merged += len(fresh)
    return result


def shard_compression(path: Path) -> str:
    with open_plain(path, f"shard {path}") as f:
        return "gzip" if f["features"].compression == "gzip" else "none"


def merged_failures(cache: Path, theirs: bytes | None, manifest: dict) -> bytes:
    """The URL's failures and this cache's own, without those of recordings now cached."""
    records = read_failures(cache)
    if theirs is not None:
        for line in theirs.decode("utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
                records[str(record.get("key", record.get("video_id")))] = record
            except (json.JSONDecodeError, AttributeError):
                continue
    cached = recording_ids(cache, manifest) if records else set()
    kept = [r for k, r in records.items() if k.split("#", 1)[0] not in cached]
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept).encode()


def fetch(remote: Remote, shard: dict, cache: Path) -> Step:
    """One shard into `cache`, checked on arrival, unless the local one is already it."""
    path = shard_path(cache, shard["file"])
    if path.is_file() and file_sha256(path) == shard["sha256"]:
        return Step(path.stat().st_size, kept=True)
    partial = cache / f".{shard['file']}.part-{os.getpid()}"
    size = fetch_to(remote, shard, partial)
    os.replace(partial, path)  # the folder is synced once, before the manifest is written
    return Step(size)


def existing_manifest(cache: Path) -> dict | None:
    """The manifest of the cache in `cache`; None for a new folder or an unfinished pull;
    any other folder with files in it is refused."""
    if (cache / MANIFEST).is_file():
        return read_manifest(cache)
    own = {LOCK, PULLING, f".{PULLING}.tmp", SOURCE}
    if cache.is_dir() and not (cache / PULLING).is_file():
        if any(p.name not in own for p in cache.iterdir()):
            raise CacheError(f"{cache} exists and is not a cache: pull into a new folder")
    return None


def unfinished_pull(cache: Path) -> dict | None:
    """The manifest a pull into `cache` was fetching when it stopped, if one did (one that
    cannot be read is ignored: every shard is checked against the new manifest anyway)."""
    try:
        return json.loads((cache / PULLING).read_text())
    except (OSError, ValueError):
        return None


def file_stamp(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def read_copied(cache: Path) -> dict:
    try:
        copied = json.loads((cache / COPIED).read_text())
    except (OSError, ValueError):
        return {}
    return copied if isinstance(copied, dict) else {}


def default_copies() -> Path:
    """Where local copies of caches at URLs live: the user's cache folder."""
    return user_cache_folder() / "remote"


def local_copy(
    url: str, copies: str | Path | None = None, options: dict | None = None,
    check: bool = False,
) -> Path:  # fmt: skip
    """The cache at `url` as a local folder, for every command that reads a cache: pulled
    into `copies` (one folder per URL; its shards are named by their sha256), so the next
    epoch and the next run read locally, only shards that changed at the URL move again,
    and a shard changed there is never served from an older copy. A local shard whose size
    or time changed since it was fetched is hashed and fetched again when damaged; `check`
    hashes every one (`verify`). A second process asking for the same copy waits for the
    first to finish it."""
    shown = redacted(url)
    key = hashlib.sha256(shown.encode()).hexdigest()[:24]
    folder = Path(copies or default_copies()) / key
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SOURCE).write_text(shown + "\n")
    pull(url, folder, options, force=True, trust_copied=not check)  # ours: it follows the URL
    return folder


def copy_source(folder: str | Path) -> str | None:
    """The URL (redacted) that a local copy follows; None for any other folder."""
    try:
        return (Path(folder) / SOURCE).read_text().strip() or None
    except OSError:
        return None
