"""The toy backbone's one option, to show that an option is one field here and nothing else."""

from __future__ import annotations

from dataclasses import dataclass

from gesture_cache.backbones.base import BackboneOptions, option
from gesture_cache.common.errors import ConfigError


@dataclass(frozen=True)
class Options(BackboneOptions):
    spread: bool = option(True, "append each channel's spread to its mean")
    size: int = option(16, "frames are resized to SIZE x SIZE")

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ConfigError(f"--size {self.size}: give at least 1")
