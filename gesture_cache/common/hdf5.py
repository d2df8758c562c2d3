"""HDF5 files from someone else, opened only when everything in them is inside them.

HDF5 can make a file read other files: a dataset whose storage is EXTERNAL (raw bytes of any
local file, `~/.aws/credentials` say), a virtual dataset mapping other files, an external
link, a soft link. A shard, a weights file or a model's weights that use any of them are
refused before a value is read: every reader opens them through `open_plain`.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py

from gesture_cache.common.errors import GestureCacheError


class IndirectionError(GestureCacheError):
    """An HDF5 file that would read something outside itself."""


@contextmanager
def open_plain(source: str | Path | io.BytesIO, name: str | None = None) -> Iterator[h5py.File]:
    """The HDF5 file read-only, after `refuse_indirection`; `name` names it in messages."""
    with h5py.File(source, "r") as f:
        refuse_indirection(f, name or str(source))
        yield f


def refuse_indirection(f: h5py.File, name: str) -> None:
    """Every link in the file a hard link, every dataset stored in the file itself."""
    problem = f.visit_links(lambda path: indirection(f, path))  # stops at the first one
    if problem is not None:
        raise IndirectionError(f"{name}: {problem}; refusing to read it")


def indirection(f: h5py.File, path: str) -> str | None:
    """What makes `path` read outside the file, or None. (A visitor returns its finding
    rather than raising: h5py's visit cannot pass an exception through.)"""
    link = f.get(path, getlink=True)
    if isinstance(link, h5py.ExternalLink):
        return f"{path} is a link to {link.filename}:{link.path}, another file"
    if isinstance(link, h5py.SoftLink):
        return f"{path} is a soft link (to {link.path})"
    item = f[path]
    if not isinstance(item, h5py.Dataset):
        return None
    plist = item.id.get_create_plist()
    if plist.get_layout() == h5py.h5d.VIRTUAL:
        return f"dataset {path} is virtual (it maps other files)"
    if plist.get_external_count():
        stored = plist.get_external(0)[0].decode(errors="replace")
        return f"dataset {path} keeps its values in another file ({stored})"
    return None
