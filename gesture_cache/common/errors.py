"""The one exception family of gesture_cache.

Every error raised on purpose is a `GestureCacheError` whose message says what to do; the CLI
prints it as one line. Anything else is a bug or an environment fault and keeps its traceback.
"""

from __future__ import annotations


class GestureCacheError(Exception):
    """Base class: a problem the user can act on, with a message naming the file or setting."""


class ConfigError(GestureCacheError):
    """A setting, flag or config file that cannot be used."""


class CacheError(GestureCacheError):
    """A cache that must not be read or written as it is."""


class RunError(GestureCacheError):
    """A run folder that cannot be used for what was asked."""


def first_line(error: BaseException) -> str:
    """An error's first line for a one-line message (its class name when it says nothing)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
