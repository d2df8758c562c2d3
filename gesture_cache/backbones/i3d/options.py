"""I3D's own settings (flags of `extract`): those of every Keras backbone. Nothing heavy is
imported here: `--help` reads it."""

from __future__ import annotations

from dataclasses import dataclass

from gesture_cache.backbones.keras_backends import KerasOptions


@dataclass(frozen=True)
class Options(KerasOptions):
    pass
