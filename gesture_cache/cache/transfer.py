"""`push` and `pull`: a cache copied to and from a URL shard by shard, several at once, each
shard checked against the manifest's sha256, the manifest last, so a reader never sees a
manifest whose shards are not all there.

At the URL a shard is stored under a name that starts with its sha256 (`1f3a...-part-00000.h5`,
the manifest there naming it so), so a push never overwrites a shard another manifest names:
two people pushing at once, or `--force` over another cache, leave the old cache whole until
the new manifest replaces it, and the second push to finish is refused. Both are incremental
and resume where they stopped: a pushed shard gets a small `NAME.sha256` beside it once it is
whole, and a shard already there with it is not sent again; a pulled shard is written under a
temporary name, checked, and only then renamed, and a local shard that already has the
manifest's sha256 is kept. A pull that has not finished keeps the manifest it is fetching
as `.pull.json`, so that running it again (after Ctrl-C, kill -9, a dropped connection, a
full disk) knows the folder is its own.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from gesture_cache.cache.manifest import MANIFEST, read_manifest, shard_path
from gesture_cache.cache.remote import Remote, open_remote, redacted, storage_error
from gesture_cache.common.errors import CacheError, GestureCacheError
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

FAILURES = "failures.jsonl"  # travels with the cache (what could not be extracted, and why)
SIDECAR = ".sha256"
GENERATIONS = "generations"  # one object for each manifest a push wrote
CLAIM_PAUSE = 2.0  # seconds a claimed manifest number may take to arrive
DERIVED = ("verified.json",)  # local stamps that a changed cache no longer earns
PULLING = ".pull.json"  # the manifest an unfinished pull is fetching


@dataclass
class Transfer:
    moved: int = 0  # shards sent or fetched
    kept: int = 0  # shards already there with the right sha256
    bytes: int = 0
    seconds: float = 0.0

    def summary(self, verb: str, url: str) -> str:
        rate = self.bytes / self.seconds / 1e6 if self.seconds else 0.0
        return (
            f"{verb} {self.moved} shards ({self.bytes / 1e6:.1f} MB, {rate:.1f} MB/s), "
            f"{self.kept} already there: {url}"
        )


@dataclass(frozen=True)
class Step:
    """What one shard's transfer did: `size` bytes sent or fetched, or found there already
    (`kept`) and only checked."""

    size: int
    kept: bool = False


def push(
    cache: str | Path, url: str, options: dict | None = None, force: bool = False,
    workers: int = 8,
) -> Transfer:  # fmt: skip
    """Copy a local cache to `url`. A different cache there (another fingerprint) is refused
    unless `force`; its manifest is replaced only once every shard of this one is there."""
    cache = Path(cache)
    manifest = read_manifest(cache, check_hashes=False)
    remote = open_remote(url, options)
    there = remote.manifest()
    generation = (there or {}).get("generation", 0)
    if there and there["fingerprint"] != manifest["fingerprint"] and not force:
        raise CacheError(
            f"{remote.url} holds another cache (fingerprint {there['fingerprint'][:12]}..., "
            f"this one {manifest['fingerprint'][:12]}...): push to another URL, or --force "
            "to replace it"
        )
    if "file" in remote.fs.protocol:
        remote.fs.makedirs(remote.root, exist_ok=True)
    started, done = time.perf_counter(), Transfer()
    present = listed_sizes(remote)  # one listing instead of two requests a shard

    def send(shard: dict) -> Step:
        local, name = shard_path(cache, shard["file"]), remote_name(shard)
        # whole there: its name carries its sha256, and its sidecar is written after it
        if name + SIDECAR in present and present.get(name) == local.stat().st_size:
            return Step(local.stat().st_size, kept=True)
        actual = file_sha256(local)
        if actual != shard["sha256"]:
            raise CacheError(
                f"shard {local} is corrupt (sha256 {actual[:16]}..., the manifest says "
                f"{shard['sha256'][:16]}...): nothing of it was sent; run gesture-cache repair"
            )
        try:
            remote.fs.put_file(str(local), remote.path(name))
            remote.fs.pipe_file(remote.path(name + SIDECAR), actual.encode())
        except Exception as error:  # noqa: BLE001 - the storage library's own errors
            raise storage_error(error, remote.url) from None
        return Step(local.stat().st_size)

    total = sum(shard_path(cache, s["file"]).stat().st_size for s in manifest["shards"])
    run_all(send, manifest["shards"], workers, total, "push", done)
    claimed = claim_generation(remote, generation)
    if (cache / FAILURES).is_file():  # only by the push that may write the manifest
        put_bytes(remote, FAILURES, (cache / FAILURES).read_bytes())
    shards = [{**shard, "file": remote_name(shard)} for shard in manifest["shards"]]
    pushed = {**manifest, "shards": shards, "generation": claimed}
    put_bytes(remote, MANIFEST, json.dumps(pushed, indent=2).encode())
    named = {s["file"] for s in shards}
    for shard in (there or {}).get("shards", []):  # the replaced cache's own shards
        if shard["file"] not in named:
            for name in (shard["file"], shard["file"] + SIDECAR):
                if remote_size(remote, name) is not None:
                    remote.fs.rm_file(remote.path(name))
    done.seconds = time.perf_counter() - started
    return done


def claim_generation(remote: Remote, current: int) -> int:
    """The number of the manifest this push may write, claimed by creating
    `generations/NUMBER` exclusively (an S3 conditional write; O_EXCL in a folder): of two
    pushes that finish together, one gets it and the other is refused. A number claimed by
    a push that died before writing its manifest is passed over after a pause."""
    if "file" in remote.fs.protocol:
        remote.fs.makedirs(remote.path(GENERATIONS), exist_ok=True)
    number = current + 1
    while True:
        try:
            with remote.fs.open(remote.path(f"{GENERATIONS}/{number:08d}"), "xb") as claim:
                claim.write(f"{socket.gethostname()} {os.getpid()} {time.time():.0f}\n".encode())
            return number
        except OSError as error:
            if not isinstance(error, FileExistsError) and error.errno != errno.EINVAL:
                raise storage_error(error, remote.url) from None  # (EINVAL: S3's 412)
        time.sleep(CLAIM_PAUSE)  # its manifest may be on its way
        if ((remote.manifest() or {}).get("generation", 0)) >= number:
            raise CacheError(
                f"someone else pushed to {remote.url} while this push ran, so this one's "
                "manifest was not written (every shard sent is kept there); run the same "
                "command again to push this cache over theirs"
            )
        number += 1  # claimed by a push that died before its manifest


def remote_name(shard: dict) -> str:
    """A shard's name at a URL: its sha256's first 16 digits, then its local name."""
    prefix = shard["sha256"][:16] + "-"
    return shard["file"] if shard["file"].startswith(prefix) else prefix + shard["file"]


def pull(
    url: str, cache: str | Path, options: dict | None = None, force: bool = False,
    workers: int = 8, trust_listed: bool = False,
) -> Transfer:  # fmt: skip
    """Copy the cache at `url` into the local folder `cache` (new, or a copy of the same
    cache to bring up to date; another cache there is refused unless `force`). Local shards
    are hashed to know whether they are the manifest's; `trust_listed` (a local copy of our
    own) keeps without hashing those the local manifest already lists with that sha256."""
    cache = Path(cache)
    refuse_link(cache, "CACHE")
    remote = open_remote(url, options)
    manifest = remote.manifest()
    if manifest is None:
        raise CacheError(f"{remote.url}: no cache there (no {MANIFEST})")
    existing_manifest(cache)  # another folder is refused before anything is written in it
    cache.mkdir(parents=True, exist_ok=True)
    lock = acquire_lock(cache, kind=CacheError)
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
        total = listed_bytes(remote, {s["file"] for s in manifest["shards"]})
        known = {(s["file"], s["sha256"]) for s in (local or {}).get("shards", [])}

        def step(shard: dict) -> Step:
            path = shard_path(cache, shard["file"])
            if trust_listed and (shard["file"], shard["sha256"]) in known and path.is_file():
                return Step(path.stat().st_size, kept=True)
            return fetch(remote, shard, cache)

        run_all(step, manifest["shards"], workers, total, "pull", done)
        failures = remote_bytes(remote, FAILURES)
        if failures is not None:
            atomic_write(cache / FAILURES, failures)
        if done.moved or local is None or local != manifest:
            for name in DERIVED:
                (cache / name).unlink(missing_ok=True)
        fsync_dir(cache)
        write_json(cache / MANIFEST, manifest)
        (cache / PULLING).unlink()
        listed = {s["file"] for s in manifest["shards"]}
        for shard in [*(local or {}).get("shards", []), *(unfinished or {}).get("shards", [])]:
            if shard["file"] not in listed:
                shard_path(cache, shard["file"]).unlink(missing_ok=True)
        done.seconds = time.perf_counter() - started
        return done
    finally:
        os.close(lock)


def fetch(remote: Remote, shard: dict, cache: Path) -> Step:
    """One shard into `cache`, checked on arrival, unless the local one is already it."""
    path = shard_path(cache, shard["file"])
    if path.is_file() and file_sha256(path) == shard["sha256"]:
        return Step(path.stat().st_size, kept=True)
    partial = cache / f".{shard['file']}.part-{os.getpid()}"
    try:
        remote.fs.get_file(remote.path(shard["file"]), str(partial))  # the library's fast path
        with open(partial, "rb+") as written:
            os.fsync(written.fileno())
    except OSError as error:
        partial.unlink(missing_ok=True)
        if isinstance(error, FileNotFoundError):
            raise CacheError(f"{remote.url}: shard {shard['file']} is missing") from None
        raise GestureCacheError(f"{path}: cannot be written ({error})") from None
    except Exception as error:  # noqa: BLE001 - the storage library's own errors
        partial.unlink(missing_ok=True)
        raise storage_error(error, remote.url) from None
    actual = file_sha256(partial)
    if actual != shard["sha256"]:
        partial.unlink()
        raise CacheError(
            f"{remote.url}/{shard['file']} does not match its manifest (sha256 "
            f"{actual[:16]}..., the manifest says {shard['sha256'][:16]}...): altered or "
            "truncated; nothing of it was kept"
        )
    size = partial.stat().st_size
    os.replace(partial, path)  # the folder is synced once, before the manifest is written
    return Step(size)


def run_all(step, shards: list[dict], workers: int, total: int, verb: str, done: Transfer):
    """`step(shard)` on every shard, `workers` at a time, with a progress bar in bytes;
    the first error stops the rest (what finished is kept) and is raised."""
    with (
        tqdm(total=total or None, unit="B", unit_scale=True, desc=verb) as bar,
        ThreadPoolExecutor(max(1, workers)) as pool,
    ):
        futures = [pool.submit(step, shard) for shard in shards]
        try:
            for future in futures:
                step_done = future.result()
                if step_done.kept:
                    done.kept += 1
                else:
                    done.moved += 1
                    done.bytes += step_done.size
                bar.update(step_done.size)
                bar.set_postfix(shards=f"{done.moved + done.kept}/{len(shards)}")
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def existing_manifest(cache: Path) -> dict | None:
    """The manifest of the cache in `cache`; None for a new folder or an unfinished pull;
    any other folder with files in it is refused."""
    if (cache / MANIFEST).is_file():
        return read_manifest(cache, check_hashes=False)
    own = {LOCK, PULLING, f".{PULLING}.tmp"}
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


def remote_bytes(remote: Remote, name: str) -> bytes | None:
    try:
        return remote.fs.cat_file(remote.path(name))
    except FileNotFoundError:
        return None
    except Exception as error:  # noqa: BLE001 - the storage library's own errors
        raise storage_error(error, remote.url) from None


def listed_sizes(remote: Remote) -> dict[str, int]:
    """Name -> size of the files at the URL, from one listing (none when there is no such
    folder yet)."""
    try:
        listing = remote.fs.ls(remote.root, detail=True, refresh=True)
    except FileNotFoundError:
        return {}
    except Exception as error:  # noqa: BLE001 - the storage library's own errors
        raise storage_error(error, remote.url) from None
    return {e["name"].rsplit("/", 1)[-1]: e.get("size", 0) for e in listing}


def listed_bytes(remote: Remote, names: set[str]) -> int:
    """The total size of these files at the URL (for the progress bar)."""
    return sum(size for name, size in listed_sizes(remote).items() if name in names)


def remote_size(remote: Remote, name: str) -> int | None:
    try:
        return remote.fs.size(remote.path(name))
    except FileNotFoundError:
        return None


def put_bytes(remote: Remote, name: str, data: bytes) -> None:
    try:
        remote.fs.pipe_file(remote.path(name), data)
    except Exception as error:  # noqa: BLE001 - the storage library's own errors
        raise storage_error(error, remote.url) from None


def default_copies() -> Path:
    """Where local copies of caches at URLs live: the user's cache folder."""
    return user_cache_folder() / "remote"


def local_copy(url: str, copies: str | Path | None = None, options: dict | None = None) -> Path:
    """The cache at `url` as a local folder, for every command that reads a cache: pulled
    into `copies` (one folder per URL; its shards are named by their sha256), so the next
    epoch and the next run read locally, only shards that changed at the URL move again,
    and a shard changed there is never served from an older copy."""
    key = hashlib.sha256(redacted(url).encode()).hexdigest()[:24]
    folder = Path(copies or default_copies()) / key
    folder.parent.mkdir(parents=True, exist_ok=True)
    pull(url, folder, options, force=True, trust_listed=True)  # ours: it follows the URL
    return folder
