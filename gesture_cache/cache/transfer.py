"""What `push` and `pull` share: a cache copied shard by shard, several at once, each shard
checked against the manifest's sha256 (`fetch_to`), with a progress bar (`for_each_shard`).

At a URL a shard is stored under a name that starts with its sha256 (`1f3a...-part-00000.h5`,
the manifest there naming it so), so a push never overwrites a shard another manifest names.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from gesture_cache.cache.manifest import shard_path
from gesture_cache.cache.remote import Remote
from gesture_cache.cache.shard import read_shard
from gesture_cache.common.errors import CacheError, GestureCacheError
from gesture_cache.common.files import file_sha256

log = logging.getLogger(__name__)


SIDECAR = ".sha256"


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


def recording_ids(cache: Path, manifest: dict) -> set[str]:
    return {i for s in manifest["shards"] for i in shard_ids(shard_path(cache, s["file"]))}


def shard_ids(path: Path) -> list[str]:
    return [str(i) for i in read_shard(path, 2).recordings["recording_id"]]


def named_ids(ids: list[str]) -> str:
    shown = ", ".join(ids[:SHOWN])
    return shown + (f" and {len(ids) - SHOWN} more" if len(ids) > SHOWN else "")


def remote_name(shard: dict) -> str:
    """A shard's name at a URL: its sha256's first 16 digits, then its local name."""
    prefix = shard["sha256"][:16] + "-"
    return shard["file"] if shard["file"].startswith(prefix) else prefix + shard["file"]


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


def for_each_shard(step, shards: list[dict], workers: int, total: int, verb: str, done: Transfer):
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
