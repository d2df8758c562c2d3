"""The hands backbone's own settings (flags of `extract`). Nothing heavy is imported here:
`--help` reads it."""

from __future__ import annotations

from dataclasses import dataclass

from gesture_cache.backbones.base import BackboneOptions, option
from gesture_cache.common.errors import ConfigError


@dataclass(frozen=True)
class Options(BackboneOptions):
    hands_model: str = option(
        "full",
        "full or lite (installed by `gesture-cache models install hands`), a "
        "hand_landmarker.task file, or a folder of the two .tflite models",
        metavar="MODEL",
    )
    max_hands: int = option(2, "hands a frame: 140 values each (layout 1: 128)")
    mirrored: bool = option(
        False,
        "the frames are mirrored (a selfie camera), so MediaPipe's handedness is the "
        "person's; otherwise it is swapped",
    )
    hands_static: bool = option(
        False, "palm detection on every frame instead of following the hands"
    )
    hands_layout: int = option(
        2,
        "the values cached a hand: 2, its pose and its trajectory (where it is in the frame, "
        "how large, how turned, how it moves, where the other hand is); 1, its pose only, as "
        "gesture_cache 0.1 cached",
        choices=(1, 2),
    )

    def __post_init__(self) -> None:
        count = self.max_hands
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ConfigError(f"--max-hands {count!r}: give a whole number of at least 1")
        if self.hands_layout not in (1, 2):
            raise ConfigError(f"--hands-layout {self.hands_layout!r}: use 1 or 2")
