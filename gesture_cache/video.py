"""Decoding (OpenCV), the per-video probe, and the temporal layout of frames into clips."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from gesture_cache.errors import ConfigError, GestureCacheError
from gesture_cache.files import file_sha256

CLIP_LEN = 16  # frames per C3D clip
CROP_SIZE = 112  # C3D's input height and width
C3D_BGR_MEAN = (90.25, 97.66, 101.41)


class VideoError(GestureCacheError):
    """A video that cannot be used; `reason` is a short class name for failures.jsonl."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Preprocessing:
    """How decoded BGR uint8 frames become C3D input (every number is recorded in the cache)."""

    name: str  # "c3d" or "reference"
    resize: tuple[int, int]  # (width, height) for cv2.resize
    interpolation: str  # "bilinear" or "area"
    crop: tuple[int, int, int, int]  # rows start:stop, columns start:stop
    scale: float  # multiply after mean subtraction
    mean_bgr: tuple[float, float, float] | None  # per-channel mean, or None
    mean_sha256: str | None = None  # of the mean-cube file that replaces mean_bgr, if any


def make_preprocessing(name: str = "c3d", mean_file: str | Path | None = None) -> Preprocessing:
    """DESIGN.md's numbers: `c3d` as in the Caffe original and the Keras ports, `reference`
    as in the blog the old pipeline followed."""
    if name == "c3d":
        return Preprocessing(
            name="c3d",
            resize=(171, 128),
            interpolation="bilinear",
            crop=(8, 120, 29, 141),
            scale=1.0,
            mean_bgr=None if mean_file else C3D_BGR_MEAN,
            mean_sha256=file_sha256(mean_file) if mean_file else None,
        )
    if name == "reference":
        if mean_file:
            raise ConfigError("--mean-file only applies to --preprocess c3d")
        return Preprocessing(
            name="reference",
            resize=(112, 112),
            interpolation="area",
            crop=(0, 112, 0, 112),
            scale=1 / 255,
            mean_bgr=None,
        )
    raise ConfigError(f"unknown preprocessing {name!r}: use 'c3d' or 'reference'")


@dataclass(frozen=True)
class Layout:
    """How a video's frames become T clips of CLIP_LEN frames."""

    frames: int = 128
    clip_stride: int = 16
    sampling: str = "pad"  # "pad" or "uniform"
    pad: str = "edge"  # "edge" or "zero" (the reference's black frames)

    def __post_init__(self) -> None:
        if self.frames < CLIP_LEN:
            raise ConfigError(f"--frames {self.frames} is shorter than one clip ({CLIP_LEN})")
        if self.clip_stride < 1 or (self.frames - CLIP_LEN) % self.clip_stride:
            raise ConfigError(
                f"--clip-stride {self.clip_stride} must divide --frames - {CLIP_LEN} "
                f"({self.frames - CLIP_LEN})"
            )
        if self.sampling not in ("pad", "uniform"):
            raise ConfigError(f"unknown --sampling {self.sampling!r}: use 'pad' or 'uniform'")
        if self.pad not in ("edge", "zero"):
            raise ConfigError(f"unknown --pad {self.pad!r}: use 'edge' or 'zero'")

    @property
    def num_clips(self) -> int:
        return (self.frames - CLIP_LEN) // self.clip_stride + 1


@dataclass
class Probe:
    """What `check` reports for one video."""

    claimed_frames: int
    decoded_frames: int
    fps: float
    width: int
    height: int


def frame_indices(n_frames: int, layout: Layout) -> np.ndarray:
    """Index of the decoded frame at each of the layout's F positions; -1 marks padding.

    `pad`: a short video is centred and padded (edge frames repeat, or -1 for zero pad);
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


def clip_mask(n_frames: int, layout: Layout) -> np.ndarray:
    """A clip is valid when at least half its frames are real; at least one clip always is,
    so every cached video has something for the classifier to read."""
    F, T = layout.frames, layout.num_clips
    if layout.sampling == "uniform" or n_frames >= F:
        return np.ones(T, bool)
    left = (F - n_frames) // 2
    real = np.zeros(F, bool)
    real[left : left + n_frames] = True
    starts = np.arange(T) * layout.clip_stride
    real_per_clip = np.array([real[s : s + CLIP_LEN].sum() for s in starts])
    mask = real_per_clip * 2 >= CLIP_LEN
    mask[np.argmax(real_per_clip)] = True
    return mask


def to_clips(frames: np.ndarray, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed frames (n, H, W, 3) -> clips (T, 16, H, W, 3) uint8 and mask (T,)."""
    indices = frame_indices(len(frames), layout)
    laid_out = frames[np.maximum(indices, 0)]
    laid_out[indices < 0] = 0
    starts = np.arange(layout.num_clips) * layout.clip_stride
    clips = np.stack([laid_out[s : s + CLIP_LEN] for s in starts])
    return clips, clip_mask(len(frames), layout)


def prepare_frame(frame: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """Resize and crop one decoded BGR frame; values stay uint8 (mean and scale are applied
    inside the model)."""
    interpolation = cv2.INTER_AREA if preprocessing.interpolation == "area" else cv2.INTER_LINEAR
    resized = cv2.resize(frame, preprocessing.resize, interpolation=interpolation)
    r0, r1, c0, c1 = preprocessing.crop
    return resized[r0:r1, c0:c1]


def decode(path: str | Path, preprocessing: Preprocessing | None) -> tuple[np.ndarray, Probe]:
    """Every decodable frame of `path`, resized and cropped, as (n, 112, 112, 3) uint8 BGR.

    Frames are resized as they are decoded, so a long 1080p video never sits in memory
    whole. With `preprocessing=None` frames are only counted (what `check` needs).
    """
    path = Path(path)
    _check_file(path)
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise VideoError("unreadable", f"{path}: OpenCV cannot open it as a video")
    try:
        claimed = max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        frames, decoded, width, height = [], 0, 0, 0
        while True:
            ok, frame = capture.read()
            if not ok or frame is None:
                break
            decoded += 1
            height, width = frame.shape[:2]
            if preprocessing is not None:
                if frame.ndim == 2:
                    frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
                frames.append(prepare_frame(frame, preprocessing))
    finally:
        capture.release()
    if not decoded:
        raise VideoError("no_frames", f"{path}: opens, but no frame decodes (claims {claimed})")
    info = Probe(claimed, decoded, fps, width, height)
    return (np.stack(frames) if frames else np.empty((0,), np.uint8)), info


def probe(path: str | Path) -> Probe:
    """Open the video and decode every frame, keeping none (what `check` reports)."""
    return decode(path, None)[1]


def _check_file(path: Path) -> None:
    if not path.exists():
        raise VideoError("missing", f"{path}: file not found")
    if not path.is_file():
        raise VideoError("unreadable", f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise VideoError("empty_file", f"{path}: file is empty (0 bytes)")
