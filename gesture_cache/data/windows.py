"""Windows of clips: which T clips of a sample (or of a recording) the classifier reads.

numpy only, so that prediction and detection need no TensorFlow: training draws the same
windows inside its tf.data pipeline (`pipeline.py`), the detector slides them over recordings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gesture_cache.common.errors import ConfigError

SPLITS = ("train", "val", "test")


WINDOW_SAMPLINGS = ("uniform", "center", "random")


@dataclass(frozen=True)
class Window:
    """How T clips are chosen from a sample's clips (recorded in the run, used by predict)."""

    clips: int = 8
    step: int | None = None  # clips between window positions; None: spread over the sample
    sampling: str = "uniform"

    def __post_init__(self) -> None:
        if isinstance(self.clips, bool) or not isinstance(self.clips, int) or self.clips < 1:
            raise ConfigError(f"window clips {self.clips!r}: give a whole number of at least 1")
        if self.step is not None and (
            isinstance(self.step, bool) or not isinstance(self.step, int) or self.step < 1
        ):
            raise ConfigError(f"window step {self.step!r}: give a whole number of at least 1")
        if self.sampling not in WINDOW_SAMPLINGS:
            raise ConfigError(
                f"unknown window sampling {self.sampling!r}: use one of {WINDOW_SAMPLINGS}"
            )


def window_positions(
    lo: np.ndarray,
    hi: np.ndarray,
    window: Window,
    fixed: bool = False,
    rng: np.random.Generator | None = None,
    rec_lo: np.ndarray | None = None,
    rec_hi: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Clip indices (N, T) of each sample's window, and which of them are real (N, T).

    Without a step, the window stays inside the sample's clips [lo, hi). With `step` K it
    is T clips K apart around a centre clip inside the sample (its middle, or a random one),
    reaching past the sample into its recording's clips [rec_lo, rec_hi) as the detector's
    sliding windows do. `rng` draws random windows (training with `random`)."""
    T = window.clips
    steps = np.arange(T)[None, :]
    n = (hi - lo)[:, None]
    random = rng is not None and window.sampling == "random"
    if fixed:
        positions, inside = lo[:, None] + steps, steps < n
    elif window.step is not None:
        rec_lo = lo if rec_lo is None else rec_lo
        rec_hi = hi if rec_hi is None else rec_hi
        centre = rng.integers(lo, hi) if random else lo + (hi - lo - 1) // 2
        first = centre - (T // 2) * window.step
        last = first + (T - 1) * window.step
        first = first - np.maximum(last - (rec_hi - 1), 0)  # shift inside the recording,
        first = np.maximum(first, rec_lo)  # its start winning when it is too short
        positions = first[:, None] + steps * window.step
        inside = positions < rec_hi[:, None]
        hi = rec_hi
    elif window.sampling == "center":
        offset = np.maximum(n - T, 0) // 2
        positions = lo[:, None] + offset + steps
        inside = positions < hi[:, None]
    else:  # T bins over the sample's clips: the middle of each, or a random one
        left = lo[:, None] + (steps * n) // T
        right = lo[:, None] + ((steps + 1) * n) // T
        width = np.maximum(right - left, 1)
        pick = (rng.random(left.shape) * width).astype(np.int64) if random else (width - 1) // 2
        positions = np.where(n >= T, left + pick, lo[:, None] + steps)
        inside = positions < hi[:, None]
    return np.minimum(positions, hi[:, None] - 1), inside


def windows(
    lo: np.ndarray,
    hi: np.ndarray,
    clip_valid: np.ndarray,
    window: Window,
    fixed: bool = False,
    rng: np.random.Generator | None = None,
    rec_lo: np.ndarray | None = None,
    rec_hi: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Window positions (N, T) into the clip arrays and masks (N, T), valid clips first."""
    positions, inside = window_positions(lo, hi, window, fixed, rng, rec_lo, rec_hi)
    mask = inside & clip_valid[positions]
    mask[~mask.any(axis=1), 0] = True  # every window reads at least one clip
    order = np.argsort(~mask, axis=1, kind="stable")
    return np.take_along_axis(positions, order, 1), np.take_along_axis(mask, order, 1)
