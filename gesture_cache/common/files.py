"""Files of a cache or a run folder: hashing, crash-safe writes, and no links out.

A cache or a run folder may come from someone else. Nothing in it is read or written through
a symbolic link that leaves the folder, and temporary files are created fresh (never opened
through whatever already has their name), so a planted link cannot redirect a write.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gesture_cache.common.errors import ConfigError, GestureCacheError

log = logging.getLogger(__name__)

LOCK = ".lock"  # held by the one process that writes a cache or trains a run folder


def user_cache_folder() -> Path:
    """This project's folder in the user's cache ($XDG_CACHE_HOME, else ~/.cache)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gesture_cache"


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def inside(folder: str | Path, name: str) -> Path:
    """`folder/name`, refusing a name or a link that leads out of `folder`."""
    folder = Path(folder)
    if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name:
        raise GestureCacheError(f"{folder}: file name {name!r} leaves the folder")
    path = folder / name
    if path.is_symlink() and path.resolve().parent != folder.resolve():
        raise GestureCacheError(
            f"{path} is a link to {os.readlink(path)}, outside {folder}; refusing to use it"
        )
    return path


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_new(path: Path, data: bytes) -> None:
    """`data` into a file created fresh at `path` (an existing name, or a planted link, is
    removed first and never followed), flushed to the disk."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> str:
    """Write `data` under a temporary name, fsync, rename over `path`; returns its sha256.

    Errors of the disk (full, quota, file-size limit) become a message naming the file; the
    old `path`, if any, is left as it was.
    """
    temporary = path.with_name(f".{path.name}.tmp")  # writer.OWN_TEMPORARY matches these
    try:
        write_new(temporary, data)
        os.replace(temporary, path)
        fsync_dir(path.parent)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise GestureCacheError(f"cannot write {path}: {error.strerror or error}") from error
    return hashlib.sha256(data).hexdigest()


def atomic_write_together(files: dict[Path, bytes]) -> None:
    """Write several files so that either all are replaced or none: each is written and
    fsynced under a temporary name first, and only then are they renamed."""
    written: list[tuple[Path, Path]] = []
    try:
        for path, data in files.items():
            temporary = path.with_name(f".{path.name}.together.tmp")
            written.append((temporary, path))
            write_new(temporary, data)
    except OSError as error:
        for temporary, _ in written:
            temporary.unlink(missing_ok=True)
        failed = written[-1][1] if written else next(iter(files))
        raise GestureCacheError(f"cannot write {failed}: {error.strerror or error}") from None
    for temporary, path in written:
        os.replace(temporary, path)
    for folder in {path.parent for path in files}:
        fsync_dir(folder)


def refuse_inputs(outputs: list[Path], inputs: list[Path], flag: str = "--out") -> None:
    """No output may be an input, or lie inside a folder read as input (a frames folder, a
    cache, a dataset's class folders): it would replace what it was made from."""
    real_inputs = [p.resolve() for p in inputs]
    for path in outputs:
        real = path.resolve()
        for source in real_inputs:
            if real == source:
                raise ConfigError(
                    f"{flag} {path}: it would replace the input {source}; give another path"
                )
            if source in real.parents:
                raise ConfigError(
                    f"{flag} {path} lies inside {source}, which is read as input; "
                    "give a path outside it"
                )


def write_json(path: Path, value: object) -> None:
    """A JSON file, written atomically and never through a link."""
    text = json.dumps(value, indent=2, ensure_ascii=False) + "\n"
    atomic_write(path, text.encode())


def read_json(path: Path, what: str) -> object:
    """A JSON file, with a message naming it when it is missing, truncated or not JSON."""
    if not path.is_file():
        raise GestureCacheError(f"{what} {path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise GestureCacheError(f"{what} {path} is not valid JSON (truncated?): {error}") from None


def make_parents(path: Path) -> list[Path]:
    """Create the missing folders above `path`; returns them, deepest first, so that a
    build that fails can remove what it created (`remove_made`)."""
    missing = [p for p in path.parents if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    return missing


def remove_made(folders: list[Path]) -> None:
    """Remove folders `make_parents` created, deepest first, where they are still empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return  # not empty (someone else's now), or already gone


def staging_folder(out: Path) -> Path:
    """A new, empty folder beside `out` to build it in, then rename: unique to this process
    (`.OUT.building-HOST-PID-XXXX`), so two builds of one `out` never share it. Leftovers of
    processes of this machine that no longer run (killed mid-build) are removed first."""
    out.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{out.name}.building-"
    host = socket.gethostname()
    for leftover in out.parent.glob(f"{prefix}*"):
        owner = leftover.name[len(prefix) :].rsplit("-", 2)
        if len(owner) == 3 and owner[0] == host and owner[1].isascii() and owner[1].isdigit():
            if not process_alive(int(owner[1])) and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{host}-{os.getpid()}-", dir=out.parent))


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def refuse_link(path: Path, flag: str) -> None:
    """Outputs are written to real folders: a link could lead anywhere."""
    if path.is_symlink():
        raise GestureCacheError(
            f"{flag} {path} is a link (to {os.readlink(path)}); give the folder itself"
        )


@contextmanager
def built_beside(out: Path, what: str) -> Iterator[Path]:
    """A fresh folder of this process's own beside `out` to build `what` in; renamed to
    `out` when the block ends, removed when it fails, is interrupted or the disk is full
    (then a message naming `out`), so `out` is complete or absent."""
    made: list[Path] = []
    try:
        made = make_parents(out)
        building = staging_folder(out)
    except OSError as error:
        remove_made(made)
        raise ConfigError(f"--out {out}: cannot create a folder there ({error})") from None
    try:
        yield building
        if out.exists() or out.is_symlink():  # another process finished first
            raise ConfigError(f"--out {out} appeared while writing; nothing was written")
        building.rename(out)
    except OSError as error:  # a full disk, a file-size limit, a folder we may not write in
        shutil.rmtree(building, ignore_errors=True)
        remove_made(made)
        raise ConfigError(f"--out {out}: cannot write the {what} ({error})") from None
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        remove_made(made)
        raise


def acquire_lock(
    folder: Path,
    busy: str = "is being written by another process",
    kind: type[GestureCacheError] = GestureCacheError,
    wait: bool = False,
) -> int:
    """An exclusive flock on FOLDER/.lock, never through a link; released when we die, so
    a holder that was killed leaves nothing to clean up. `busy`: what the refusal says, as
    a `kind` of error; with `wait`, the lock is waited for instead (saying so once)."""
    path = folder / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as error:
        raise kind(
            f"cannot take the lock {path} ({error.strerror}); "
            "if it is a link or not a file, remove it"
        ) from None
    said = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            if not wait:
                os.close(fd)
                raise kind(f"{folder} {busy} (pid {holder}); wait for it to end") from None
            if not said:
                log.warning("%s %s (pid %s); waiting for it", folder, busy, holder)
                said = True
            time.sleep(0.2)  # a loop, not a blocking flock: Ctrl-C stays immediate
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def lock_held(folder: Path) -> bool | None:
    """Whether a live process holds FOLDER/.lock (None: there is no lock file to ask)."""
    try:
        fd = os.open(folder / LOCK, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
