"""Parity bounds of a bundle's artifacts, and the manifest entry that records what each met."""

from __future__ import annotations

from pathlib import Path

from gesture_cache.deploy import bundle

HEAD_BOUND = 1e-5


BACKBONE_BOUND = 1e-4


QUANTIZED_AGREEMENT = 0.98


PARITY_WINDOWS = 128


def artifact_entry(
    folder: Path, role: str, fmt: str, main: str, precision: str, parity: dict
) -> dict:
    names = [main, main.removesuffix(".xml") + ".bin"] if main.endswith(".xml") else [main]
    return {
        "role": role,
        "format": fmt,
        "precision": precision,
        "main": main,
        "files": {n: bundle.entry_sha256(folder / n) for n in names},
        "parity": parity,
    }
