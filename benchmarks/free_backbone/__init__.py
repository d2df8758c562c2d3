"""A backbone that costs nothing: C3D's input (16 frames of 112x112 through C3D's own
preprocessing) and 4096 C3D-like values out at no cost, so a pipeline benchmark measures
decoding, batching and shard writes and nothing of a network. `register()` names it `free`."""

from __future__ import annotations


def register() -> None:
    from gesture_cache.backbones import base

    base.register("free", "free (no network)", "free_backbone", "zeros of C3D's size, no network")
