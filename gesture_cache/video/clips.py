"""Which 16-frame clips a recording is cut into.

`dense` (the default): a clip of 16 consecutive frames starts every `clip_stride` frames over
the whole recording, plus one clip aligned to the last frame when (n - 16) is not a multiple
of the stride, so no frame is left out. Frames stream through a ring buffer of 16, so a
recording of any length holds one clip's worth of frames at a time. A recording shorter than
16 frames gives one clip padded with its edge frames (black with `pad="zero"`).

`pad` and `uniform` lay every recording out as F frames first (the pipeline this project
replaces: short recordings centred and padded, long ones subsampled; or all resampled), then
cut T = (F - 16) / stride + 1 clips; a clip is valid when at least half its frames are real.
They exist to reproduce that pipeline and hold the recording in memory.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from gesture_cache.common.errors import ConfigError

CLIP_LEN = 16  # frames per C3D clip


SAMPLINGS = ("dense", "pad", "uniform")


@dataclass(frozen=True)
class Layout:
    """How a recording's frames become clips (every field enters the fingerprint)."""

    sampling: str = "dense"
    clip_stride: int = 8
    frames: int | None = None  # F: only for `pad` and `uniform`
    pad: str = "edge"  # "edge" or "zero" (black frames, only to reproduce the seed)

    def __post_init__(self) -> None:
        if self.sampling not in SAMPLINGS:
            raise ConfigError(f"unknown --sampling {self.sampling!r}: use one of {SAMPLINGS}")
        if self.pad not in ("edge", "zero"):
            raise ConfigError(f"unknown --pad {self.pad!r}: use 'edge' or 'zero'")
        if isinstance(self.clip_stride, bool) or not isinstance(self.clip_stride, int):
            raise ConfigError(f"--clip-stride {self.clip_stride!r}: give a whole number")
        if self.clip_stride < 1:
            raise ConfigError(f"--clip-stride {self.clip_stride} must be at least 1")
        if self.sampling == "dense":
            if self.frames is not None:
                raise ConfigError("--frames only applies to --sampling pad or uniform")
            return
        if self.frames is None or self.frames < CLIP_LEN:
            raise ConfigError(f"--sampling {self.sampling} needs --frames F of at least {CLIP_LEN}")
        if (self.frames - CLIP_LEN) % self.clip_stride:
            raise ConfigError(
                f"--clip-stride {self.clip_stride} must divide --frames - {CLIP_LEN} "
                f"({self.frames - CLIP_LEN})"
            )

    @property
    def streams(self) -> bool:
        """Whether clips can be cut while frames arrive (no need to know n first)."""
        return self.sampling == "dense"


def dense_starts(n_frames: int, stride: int) -> np.ndarray:
    """Start frames of the dense clips of an n-frame recording."""
    if n_frames <= CLIP_LEN:
        return np.zeros(1, np.int64)
    starts = np.arange(0, n_frames - CLIP_LEN + 1, stride)
    if starts[-1] != n_frames - CLIP_LEN:
        starts = np.append(starts, n_frames - CLIP_LEN)
    return starts


def stream_clips(
    frames: Iterable[np.ndarray], stride: int, pad: str = "edge"
) -> Iterator[tuple[int, np.ndarray]]:
    """(start frame, clip (16, H, W, 3)) for each dense clip, in order, as frames arrive."""
    ring: deque[np.ndarray] = deque(maxlen=CLIP_LEN)
    n, last = 0, None
    for frame in frames:
        ring.append(frame)
        n += 1
        start = n - CLIP_LEN
        if start >= 0 and start % stride == 0:
            last = start
            yield start, np.stack(ring)
    if n == 0:
        return
    if n < CLIP_LEN:
        yield 0, pad_clip(np.stack(ring), pad)
    elif last != n - CLIP_LEN:
        yield n - CLIP_LEN, np.stack(ring)


def pad_clip(frames: np.ndarray, pad: str) -> np.ndarray:
    """A clip of fewer than 16 frames, padded at the end (edge frames, or black)."""
    missing = CLIP_LEN - len(frames)
    filler = np.zeros_like(frames[-1:]) if pad == "zero" else frames[-1:]
    return np.concatenate([frames, np.repeat(filler, missing, axis=0)])


def fixed_clips(frames: np.ndarray, layout: Layout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`pad`/`uniform`: frames (n, H, W, 3) -> start frames (T,), clips (T, 16, H, W, 3) and
    validity (T,). A start frame is the recording frame the clip's first position shows."""
    indices = frame_indices(len(frames), layout)
    laid_out = frames[np.maximum(indices, 0)]
    laid_out[indices < 0] = 0
    positions = np.arange(0, layout.frames - CLIP_LEN + 1, layout.clip_stride)
    clips = np.stack([laid_out[p : p + CLIP_LEN] for p in positions])
    return np.maximum(indices[positions], 0), clips, clip_valid(len(frames), layout)


def frame_indices(n_frames: int, layout: Layout) -> np.ndarray:
    """Index of the decoded frame at each of the layout's F positions; -1 marks black padding.

    `pad`: a short recording is centred and padded (edge frames repeat, or -1 for zero pad);
    a long one is subsampled uniformly. `uniform`: always resampled to F frames.
    """
    F = layout.frames
    if layout.sampling == "uniform" or n_frames >= F:
        return np.linspace(0, n_frames - 1, F).round().astype(np.int64)
    left = (F - n_frames) // 2
    positions = np.arange(F) - left
    if layout.pad == "zero":
        return np.where((positions >= 0) & (positions < n_frames), positions, -1)
    return np.clip(positions, 0, n_frames - 1)


def clip_valid(n_frames: int, layout: Layout) -> np.ndarray:
    """A clip is valid when at least half its frames are real; at least one clip always is."""
    positions = np.arange(0, layout.frames - CLIP_LEN + 1, layout.clip_stride)
    if layout.sampling == "uniform" or n_frames >= layout.frames:
        return np.ones(len(positions), bool)
    left = (layout.frames - n_frames) // 2
    real = np.zeros(layout.frames, bool)
    real[left : left + n_frames] = True
    real_per_clip = np.array([real[p : p + CLIP_LEN].sum() for p in positions])
    valid = real_per_clip * 2 >= CLIP_LEN
    valid[np.argmax(real_per_clip)] = True
    return valid
