"""Versions of installed distributions, read from their metadata: nothing is imported, so
recording a version never loads TensorFlow."""

from __future__ import annotations

from importlib import metadata


def installed_version(*distributions: str) -> str | None:
    """The version of the first of `distributions` that is installed (a package ships under
    several names: tensorflow, tensorflow-cpu; opencv-python, opencv-python-headless)."""
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def installed_versions(*distributions: str) -> dict[str, str]:
    """Each installed one of `distributions` with its version."""
    found = {name: installed_version(name) for name in distributions}
    return {name: version for name, version in found.items() if version is not None}
