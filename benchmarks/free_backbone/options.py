"""The free backbone has no options of its own."""

from __future__ import annotations

from dataclasses import dataclass

from gesture_cache.backbones.base import BackboneOptions


@dataclass(frozen=True)
class Options(BackboneOptions):
    pass
