"""`push CACHE URL`: a local cache copied to a URL, the manifest last, so a reader never sees
a manifest whose shards are not all there.

Nothing at the URL is lost without `--force`: another extractor's cache there is refused, and
so is a push that would drop recordings the URL holds and this cache lacks (pull first). Only
shards the replaced manifest listed are deleted. A pushed shard gets a small `NAME.sha256`
beside it once it is whole, recording the storage's own version of the object (ETag,
generation or modification time): a shard whose sidecar still matches is not sent again, one
altered since is. Two pushes at once each claim the next manifest number exclusively; one
writes its manifest, the other is refused.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import tempfile
import time
from pathlib import Path

from gesture_cache.cache.manifest import FAILURES, MANIFEST, SHARD_NAME, read_manifest, shard_path
from gesture_cache.cache.remote import Remote, open_remote
from gesture_cache.cache.transfer import (
    SIDECAR,
    Step,
    Transfer,
    fetch_to,
    for_each_shard,
    listing,
    named_ids,
    put_bytes,
    recording_ids,
    remote_name,
    shard_ids,
)
from gesture_cache.common.errors import CacheError
from gesture_cache.common.files import file_sha256

log = logging.getLogger(__name__)

GENERATIONS = "generations"  # one object for each manifest a push wrote


# How long a claimed manifest number may take to arrive before its push is taken for dead:
# a loaded machine took over 2 s between one push's claim and its manifest (a test saw both
# pushes of a race succeed with a 2 s pause).
CLAIM_WAIT = 60.0


def push(
    cache: str | Path, url: str, options: dict | None = None, force: bool = False,
    workers: int = 8,
) -> Transfer:  # fmt: skip
    """Copy a local cache to `url`. A different cache there (another fingerprint), or the
    same one holding recordings this one lacks, is refused unless `force`; the manifest
    there is replaced only once every shard of this one is there."""
    cache = Path(cache)
    manifest = read_manifest(cache)
    remote = open_remote(url, options)
    there = manifest_there(remote, force)
    # the manifest this push's checks were made against: its number is taken now, so a push
    # that lands while this one sends its shards is seen when this one claims the next
    base = generation(remote, there)
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
    for_each_shard(send, manifest["shards"], workers, total, "push", done)
    claimed = claim_generation(remote, base)
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


def generation(remote: Remote, there: dict | None) -> int:
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
    a push that died before writing its manifest is passed over after CLAIM_WAIT seconds
    without its manifest."""
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
        deadline = time.monotonic() + CLAIM_WAIT
        while time.monotonic() < deadline:  # its manifest may be on its way
            time.sleep(0.5)
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
