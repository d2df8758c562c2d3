"""How window probabilities become events. Defined here, below `detect`, because a bundle
records these defaults for runtimes that detect without this package."""

from __future__ import annotations

from dataclasses import dataclass

from gesture_cache.common.errors import ConfigError


@dataclass(frozen=True)
class DetectSettings:
    """How window probabilities become events (recorded with the output)."""

    smoothing: int = 3  # windows in the causal moving average
    on: float = 0.6  # a gesture fires when its smoothed probability reaches this
    off: float = 0.4  # and ends when it falls below this
    min_gap: int = 8  # frames: closer events of one label are merged

    def __post_init__(self) -> None:
        if self.smoothing < 1:
            raise ConfigError(f"--smoothing {self.smoothing} must be at least 1")
        if not 0 < self.off <= self.on <= 1:
            raise ConfigError(f"thresholds need 0 < --off ({self.off}) <= --on ({self.on}) <= 1")
        if self.min_gap < 0:
            raise ConfigError(f"--min-gap {self.min_gap} must not be negative")
