"""Which clips (of 16 frames for C3D, of one for hand landmarks) a recording is cut into.

`dense` (the default): a clip of L consecutive frames starts every `clip_stride` frames over
the whole recording, plus one clip aligned to the last frame when (n - L) is not a multiple
of the stride, so no frame is left out. Frames stream through a ring buffer of L, so a
recording of any length holds one clip's worth of frames at a time. A recording shorter than
L frames gives one clip padded with its edge frames (black with `pad="zero"`).

`pad` and `uniform` lay every recording out as F frames first (the pipeline this project
replaces: short recordings centred and padded, long ones subsampled; or all resampled), then
cut T = (F - 16) / stride + 1 clips; a clip is valid when at least half its frames are real.
They exist to reproduce that pipeline and hold the recording in memory.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

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
    clip_len: int = CLIP_LEN  # the backbone's

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
        L = self.clip_len
        if self.frames is None or self.frames < L:
            raise ConfigError(f"--sampling {self.sampling} needs --frames F of at least {L}")
        if (self.frames - L) % self.clip_stride:
            raise ConfigError(
                f"--clip-stride {self.clip_stride} must divide --frames - {L} ({self.frames - L})"
            )

    @property
    def streams(self) -> bool:
        """Whether clips can be cut while frames arrive (no need to know n first)."""
        return self.sampling == "dense"


def dense_starts(n_frames: int, stride: int, clip_len: int = CLIP_LEN) -> np.ndarray:
    """Start frames of the dense clips of an n-frame recording."""
    if n_frames <= clip_len:
        return np.zeros(1, np.int64)
    starts = np.arange(0, n_frames - clip_len + 1, stride)
    if starts[-1] != n_frames - clip_len:
        starts = np.append(starts, n_frames - clip_len)
    return starts


def stream_clips(
    frames: Iterable[np.ndarray],
    stride: int,
    pad: str = "edge",
    clip_len: int = CLIP_LEN,
    stack: Callable[[Sequence[np.ndarray]], Any] = np.stack,
) -> Iterator[tuple[int, Any]]:
    """(start frame, clip (clip_len, ...)) for each dense clip, in order, as frames arrive.
    `stack` makes a clip of its frames: by default a new array; `extract` stacks them
    straight into the batch the backbone will run, so a clip's frames are copied once."""
    ring: deque[np.ndarray] = deque(maxlen=clip_len)
    n, last = 0, None
    for frame in frames:
        ring.append(frame)
        n += 1
        start = n - clip_len
        if start >= 0 and start % stride == 0:
            last = start
            yield start, stack(ring)
    if n == 0:
        return
    if n < clip_len:
        yield 0, stack(padded(list(ring), pad, clip_len))
    elif last != n - clip_len:
        yield n - clip_len, stack(ring)


def padded(frames: list[np.ndarray], pad: str, clip_len: int = CLIP_LEN) -> list[np.ndarray]:
    """The frames of a clip shorter than clip_len, padded at the end (edge frames, or black)."""
    filler = np.zeros_like(frames[-1]) if pad == "zero" else frames[-1]
    return frames + [filler] * (clip_len - len(frames))


def fixed_clips(frames: np.ndarray, layout: Layout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`pad`/`uniform`: frames (n, H, W, 3) -> start frames (T,), clips (T, L, H, W, 3) and
    validity (T,). A start frame is the recording frame the clip's first position shows."""
    indices = frame_indices(len(frames), layout)
    laid_out = frames[np.maximum(indices, 0)]
    laid_out[indices < 0] = 0
    positions = np.arange(0, layout.frames - layout.clip_len + 1, layout.clip_stride)
    clips = np.stack([laid_out[p : p + layout.clip_len] for p in positions])
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
    positions = np.arange(0, layout.frames - layout.clip_len + 1, layout.clip_stride)
    if layout.sampling == "uniform" or n_frames >= layout.frames:
        return np.ones(len(positions), bool)
    left = (layout.frames - n_frames) // 2
    real = np.zeros(layout.frames, bool)
    real[left : left + n_frames] = True
    real_per_clip = np.array([real[p : p + layout.clip_len].sum() for p in positions])
    valid = real_per_clip * 2 >= layout.clip_len
    valid[np.argmax(real_per_clip)] = True
    return valid
