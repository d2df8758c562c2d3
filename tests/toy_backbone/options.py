"""The toy backbone's options: two that decide its features, and the cost of a slow network."""

from __future__ import annotations

from dataclasses import dataclass

from gesture_cache.backbones.base import BackboneOptions, option
from gesture_cache.common.errors import ConfigError


@dataclass(frozen=True)
class Options(BackboneOptions):
    spread: bool = option(True, "append the colour's spread to its mean")
    size: int = option(32, "frames are resized to SIZE x SIZE")
    seconds_per_clip: float = option(0.0, "sleep this long a clip, as a slow network would")

    def __post_init__(self) -> None:
        if self.size < 2:
            raise ConfigError(f"--size {self.size}: give at least 2")
        if self.seconds_per_clip < 0:
            raise ConfigError(f"--seconds-per-clip {self.seconds_per_clip}: give 0 or more")
