"""`push` and `pull`: a cache copied to and from a URL shard by shard, several at once, each
shard checked against the manifest's sha256, the manifest last, so a reader never sees a
manifest whose shards are not all there.

At the URL a shard is stored under a name that starts with its sha256 (`1f3a...-part-00000.h5`,
the manifest there naming it so), so a push never overwrites a shard another manifest names:
two people pushing at once, or `--force` over another cache, leave the old cache whole until
the new manifest replaces it, and the second push to finish is refused.

Neither side loses recordings without `--force`: a push that would drop recordings the URL
holds and this cache lacks is refused (pull first), and a pull into a cache of the same
extractor keeps the recordings extracted there that the URL lacks (the two are merged).

Both are incremental and resume where they stopped: a pushed shard gets a small `NAME.sha256`
beside it once it is whole, recording the storage's own version of the object (ETag,
generation or modification time), and a shard whose sidecar still matches is not sent again
(one altered since is); a pulled shard is written under a temporary name, checked, and only
then renamed, and a local shard that already has the manifest's sha256 is kept. A pull that
has not finished keeps the manifest it is fetching as `.pull.json`, so that running it again
(after Ctrl-C, kill -9, a dropped connection, a full disk) knows the folder is its own.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import socket
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from gesture_cache.cache.manifest import (
    FAILURES,
    MANIFEST,
    SHARD_NAME,
    TABLES_SHA256,
    read_failures,
    read_manifest,
    shard_path,
)
from gesture_cache.cache.remote import Remote, open_remote, redacted
from gesture_cache.cache.shard import read_shard, read_shard_recordings, shard_image
from gesture_cache.cache.writer import next_shard_name, with_shard
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
from gesture_cache.common.hdf5 import open_plain

log = logging.getLogger(__name__)

SIDECAR = ".sha256"
GENERATIONS = "generations"  # one object for each manifest a push wrote
CLAIM_PAUSE = 2.0  # seconds a claimed manifest number may take to arrive
DERIVED = ("verified.json",)  # local stamps that a changed cache no longer earns
PULLING = ".pull.json"  # the manifest an unfinished pull is fetching
COPIED = ".copied.json"  # a local copy's shards as fetched: name -> [size, mtime_ns]
SOURCE = ".source-url"  # the URL a local copy follows (redacted)
SHOWN = 5  # recording ids a refusal names


@dataclass
class Transfer:
    moved: int = 0  # shards sent or fetched
    kept: int = 0  # shards already there with the right sha256
    bytes: int = 0
    seconds: float = 0.0
    merged: int = 0  # local recordings the URL lacked, kept beside the pulled ones

    def summary(self, verb: str, url: str) -> str:
        rate = self.bytes / self.seconds / 1e6 if self.seconds else 0.0
        text = (
            f"{verb} {self.moved} shards ({self.bytes / 1e6:.1f} MB, {rate:.1f} MB/s), "
            f"{self.kept} already there: {url}"
        )
        if self.merged:
            text += f"; kept {self.merged} recordings of this cache that the URL lacks"
        return text


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
    """Copy a local cache to `url`. A different cache there (another fingerprint), or the
    same one holding recordings this one lacks, is refused unless `force`; the manifest
    there is replaced only once every shard of this one is there."""
    cache = Path(cache)
    manifest = read_manifest(cache, check_hashes=False)
    remote = open_remote(url, options)
    there = manifest_there(remote, force)
    if there and there["fingerprint"] != manifest["fingerprint"] and not force:
        raise CacheError(
            f"{remote.url} holds another cache (fingerprint {there['fingerprint'][:12]}..., "
            f"this one {manifest['fingerprint'][:12]}...): push to another URL, or --force "
            "to replace it"
        )
    if there and not force:
        refuse_dropping(remote, there, cache, manifest)
    if "file" in remote.fs.protocol:
        remote.fs.makedirs(remote.root, exist_ok=True)
    started, done = time.perf_counter(), Transfer()
    present = listing(remote)  # one listing instead of two requests a shard

    def send(shard: dict) -> Step:
        local, name = shard_path(cache, shard["file"]), remote_name(shard)
        size = local.stat().st_size
        if pushed_whole(remote, name, shard["sha256"], size, present):
            return Step(size, kept=True)
        actual = file_sha256(local)
        if actual != shard["sha256"]:
            raise CacheError(
                f"shard {local} is corrupt (sha256 {actual[:16]}..., the manifest says "
                f"{shard['sha256'][:16]}...): nothing of it was sent; run gesture-cache repair"
            )
        try:
            remote.fs.put_file(str(local), remote.path(name))
            version = object_version(remote.fs.info(remote.path(name)))
            sidecar = json.dumps({"sha256": actual, "version": version})
            remote.fs.pipe_file(remote.path(name + SIDECAR), sidecar.encode())
        except Exception as error:  # noqa: BLE001 - the storage library's own errors
            raise remote.failure(error) from None
        return Step(size)

    total = sum(shard_path(cache, s["file"]).stat().st_size for s in manifest["shards"])
    run_all(send, manifest["shards"], workers, total, "push", done)
    claimed = claim_generation(remote, generation(remote, there, present))
    if (cache / FAILURES).is_file():  # only by the push that may write the manifest
        put_bytes(remote, FAILURES, (cache / FAILURES).read_bytes())
    shards = [{**shard, "file": remote_name(shard)} for shard in manifest["shards"]]
    pushed = {**manifest, "shards": shards, "generation": claimed}
    put_bytes(remote, MANIFEST, json.dumps(pushed, indent=2).encode())
    named = {s["file"] for s in shards}
    for shard in (there or {}).get("shards", []):  # the replaced cache's own shards
        if shard["file"] not in named and SHARD_NAME.match(shard["file"]):
            for name in (shard["file"], shard["file"] + SIDECAR):
                if name in present:
                    remote.fs.rm_file(remote.path(name))
    done.seconds = time.perf_counter() - started
    return done


def manifest_there(remote: Remote, force: bool) -> dict | None:
    """The URL's manifest; one that cannot be read stops a push, unless `force`, which
    replaces it (and then deletes nothing of what it named)."""
    try:
        return remote.manifest()
    except CacheError as error:
        if not force:
            raise CacheError(f"{error}; --force replaces what is there") from None
        log.warning("%s; replacing it (--force), deleting nothing it names", error)
        return None


def refuse_dropping(remote: Remote, there: dict, cache: Path, manifest: dict) -> None:
    """A push of the same extractor's cache must not drop recordings only the URL holds:
    the URL's shards this cache does not have are fetched and read, and any recording
    this cache lacks stops the push, named."""
    ours = {s["sha256"] for s in manifest["shards"]}
    theirs = [s for s in there["shards"] if s["sha256"] not in ours]
    if not theirs:
        return
    held = recording_ids(cache, manifest)
    lacking: list[str] = []
    with tempfile.TemporaryDirectory(prefix="gesture-cache-push-") as scratch:
        for shard in theirs:
            path = Path(scratch) / "shard.h5"
            fetch_to(remote, shard, path)
            lacking += [i for i in shard_ids(path) if i not in held]
            path.unlink()
    if lacking:
        raise CacheError(
            f"{remote.url} holds {len(lacking)} recordings this cache lacks "
            f"({named_ids(lacking)}), pushed by someone else: `gesture-cache pull "
            f"{remote.url} {cache}` adds them to this cache (keeping its own), then push "
            "again; or --force to drop them"
        )


def recording_ids(cache: Path, manifest: dict) -> set[str]:
    return {i for s in manifest["shards"] for i in shard_ids(shard_path(cache, s["file"]))}


def shard_ids(path: Path) -> list[str]:
    return [str(i) for i in read_shard(path, 2).recordings["recording_id"]]


def named_ids(ids: list[str]) -> str:
    shown = ", ".join(ids[:SHOWN])
    return shown + (f" and {len(ids) - SHOWN} more" if len(ids) > SHOWN else "")


def object_version(info: dict) -> str | None:
    """What changes whenever an object is written again: S3's ETag, GCS's generation, a
    file's modification time (None when the storage says none of these)."""
    for key in ("ETag", "etag", "generation", "md5Hash", "mtime", "LastModified", "updated"):
        if info.get(key) is not None:
            return f"{key}={info[key]}"
    return None


def pushed_whole(remote: Remote, name: str, sha256: str, size: int, present: dict) -> bool:
    """Whether shard `name` is at the URL as pushed: its sidecar names its sha256 and the
    object's version then, and the object is still that version and size (a shard altered
    or replaced since is sent again)."""
    if name + SIDECAR not in present or present.get(name, {}).get("size") != size:
        return False
    try:
        sidecar = json.loads(remote.fs.cat_file(remote.path(name + SIDECAR)))
    except (ValueError, FileNotFoundError):  # an older sidecar (a bare sha256), or gone
        return False
    except Exception as error:  # noqa: BLE001 - the storage library's own errors
        raise remote.failure(error) from None
    version = object_version(present[name])
    return (
        isinstance(sidecar, dict)
        and sidecar.get("sha256") == sha256
        and sidecar.get("version") == version
        and version is not None
    )


def generation(remote: Remote, there: dict | None, present: dict) -> int:
    """The number of the manifest there (or, when it could not be read, the last claimed)."""
    if there is not None:
        return there.get("generation", 0)
    try:
        claims = remote.fs.ls(remote.path(GENERATIONS), detail=False)
    except FileNotFoundError:
        return 0
    except Exception as error:  # noqa: BLE001 - the storage library's own errors
        raise remote.failure(error) from None
    numbers = [int(n.rsplit("/", 1)[-1]) for n in claims if n.rsplit("/", 1)[-1].isdigit()]
    return max(numbers, default=0)


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
                raise remote.failure(error) from None  # (EINVAL: S3's 412)
        time.sleep(CLAIM_PAUSE)  # its manifest may be on its way
        try:
            arrived = (remote.manifest() or {}).get("generation", 0)
        except CacheError:
            arrived = 0
        if arrived >= number:
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

        run_all(step, manifest["shards"], workers, total, "pull", done)
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


def fetch_to(remote: Remote, shard: dict, path: Path) -> int:
    """The URL's shard written to `path` and checked against its sha256 (nothing is left
    at `path` when it does not match); its size."""
    try:
        remote.fs.get_file(remote.path(shard["file"]), str(path))  # the library's fast path
        with open(path, "rb+") as written:
            os.fsync(written.fileno())
    except OSError as error:
        path.unlink(missing_ok=True)
        if isinstance(error, FileNotFoundError) and not path.parent.is_dir():
            raise CacheError(f"{path.parent}: the folder is gone") from None
        if isinstance(error, FileNotFoundError):
            raise CacheError(f"{remote.url}: shard {shard['file']} is missing") from None
        raise GestureCacheError(f"{path}: cannot be written ({error})") from None
    except Exception as error:  # noqa: BLE001 - the storage library's own errors
        path.unlink(missing_ok=True)
        raise remote.failure(error) from None
    actual = file_sha256(path)
    if actual != shard["sha256"]:
        path.unlink()
        raise CacheError(
            f"{remote.url}/{shard['file']} does not match its manifest (sha256 "
            f"{actual[:16]}..., the manifest says {shard['sha256'][:16]}...): altered or "
            "truncated; nothing of it was kept"
        )
    return path.stat().st_size


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


def remote_bytes(remote: Remote, name: str) -> bytes | None:
    try:
        return remote.fs.cat_file(remote.path(name))
    except FileNotFoundError:
        return None
    except Exception as error:  # noqa: BLE001 - the storage library's own errors
        raise remote.failure(error) from None


def listing(remote: Remote) -> dict[str, dict]:
    """Name -> what the storage says of each file at the URL (size, version), from one
    listing (none when there is no such folder yet)."""
    try:
        entries = remote.fs.ls(remote.root, detail=True, refresh=True)
    except FileNotFoundError:
        return {}
    except Exception as error:  # noqa: BLE001 - the storage library's own errors
        raise remote.failure(error) from None
    return {e["name"].rsplit("/", 1)[-1]: e for e in entries}


def put_bytes(remote: Remote, name: str, data: bytes) -> None:
    try:
        remote.fs.pipe_file(remote.path(name), data)
    except Exception as error:  # noqa: BLE001 - the storage library's own errors
        raise remote.failure(error) from None


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
