"""Decoding recordings (video files or folders of frames, OpenCV), frame preprocessing, and
the per-recording probe.

Frames are decoded, resized and cropped one at a time (`Frames`), so a long 1080p recording
never sits in memory whole.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import cv2
import numpy as np

from gesture_cache.common.errors import GestureCacheError
from gesture_cache.common.files import file_sha256
from gesture_cache.video.nvdec import Nvdec

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


DEFAULT_FOLDER_FPS = 30.0


class VideoError(GestureCacheError):
    """A video that cannot be used; `reason` is a short class name for failures.jsonl."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason

    def __reduce__(self) -> tuple:  # pickled across processes (Ray's decode tasks)
        return VideoError, (self.reason, str(self))


@dataclass(frozen=True)
class Preprocessing:
    """How decoded BGR uint8 frames become a backbone's input (every number is recorded in the
    cache). `resize` and `crop` None keep the frame as decoded (hand landmarks)."""

    name: str  # "c3d", "reference", "mediapipe"
    resize: tuple[int, int] | None  # (width, height) for cv2.resize
    interpolation: str  # "bilinear" or "area"
    crop: tuple[int, int, int, int] | None  # rows start:stop, columns start:stop
    scale: float  # multiply after mean subtraction
    mean_bgr: tuple[float, float, float] | None  # per-channel mean, or None
    mean_sha256: str | None = None  # of the mean-cube file that replaces mean_bgr, if any
    short_side: int | None = None  # resize keeping the aspect: the shorter side this long
    center_crop: int | None = None  # then the centre square this large (I3D)

    def record(self) -> dict:
        """The fields as the extractor spec records them (the two later ones only when
        set, so that C3D's fingerprints stay as they were)."""
        recorded = asdict(self)
        for name in ("short_side", "center_crop"):
            if recorded[name] is None:
                del recorded[name]
        return recorded

    @classmethod
    def from_record(cls, record: dict) -> Preprocessing:
        """The preprocessing a cache's extractor spec records (version 1 also named its mean
        file, which is not part of it)."""
        known = {f.name for f in fields(cls)}
        return cls(
            **{
                name: tuple(value) if isinstance(value, list) else value
                for name, value in record.items()
                if name in known
            }
        )


@dataclass
class Probe:
    """What is known of a recording: filled in as its frames are read."""

    claimed_frames: int  # what the container (or the folder's image count) says
    decoded_frames: int
    fps: float
    width: int  # of its first frame
    height: int
    sizes: Counter = field(default_factory=Counter)  # (width, height) -> frames of that size

    def sizes_text(self) -> str:
        return ", ".join(f"{w}x{h} ({n} frames)" for (w, h), n in self.sizes.most_common())


def prepare_frame(frame: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """Resize and crop one decoded BGR frame; values stay uint8 (mean and scale are applied
    inside the model)."""
    if preprocessing.short_side is not None:
        return short_side_crop(frame, preprocessing.short_side, preprocessing.center_crop)
    if preprocessing.resize is None:
        return frame
    interpolation = cv2.INTER_AREA if preprocessing.interpolation == "area" else cv2.INTER_LINEAR
    resized = cv2.resize(frame, preprocessing.resize, interpolation=interpolation)
    r0, r1, c0, c1 = preprocessing.crop
    return resized[r0:r1, c0:c1]


def short_side_crop(frame: np.ndarray, short_side: int, crop: int) -> np.ndarray:
    """DeepMind's kinetics-i3d evaluation: bilinear resize so that the shorter side is
    `short_side` and the longer round(longer * short_side / shorter), then the centre
    `crop` x `crop` square (offsets (W - crop) // 2, (H - crop) // 2)."""
    height, width = frame.shape[:2]
    shorter = min(width, height)
    size = (
        (short_side, round(height * short_side / shorter))
        if width == shorter
        else (round(width * short_side / shorter), short_side)
    )
    resized = cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)
    y0, x0 = (size[1] - crop) // 2, (size[0] - crop) // 2
    return resized[y0 : y0 + crop, x0 : x0 + crop]


class Frames:
    """The decoded BGR frames of a video file or a folder of images, one at a time, each
    resized and cropped by `preprocessing` (kept whole when it is None). `probe` is complete
    once iteration ends; a recording with no decodable frame raises VideoError then. With
    `nvdec`, a video file NVDEC can open is decoded there (video/nvdec.py), else by OpenCV."""

    def __init__(
        self,
        path: str | Path,
        preprocessing: Preprocessing | None,
        fps: float | None = None,
        nvdec: Nvdec | None = None,
    ):
        self.path = Path(path)
        self.preprocessing, self.nvdec = preprocessing, nvdec
        _check_source(self.path)
        if self.path.is_dir():
            self.images = folder_images(self.path)
            self.probe = Probe(len(self.images), 0, fps or DEFAULT_FOLDER_FPS, 0, 0)
        else:
            self.images = None
            self.probe = Probe(0, 0, fps or 0.0, 0, 0)

    def __iter__(self) -> Iterator[np.ndarray]:
        raw_frames = self._read_images() if self.images is not None else self._read_video()
        for frame in raw_frames:
            if frame.ndim == 2:
                frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
            elif frame.shape[2] == 4:
                frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
            if not self.probe.decoded_frames:
                self.probe.height, self.probe.width = frame.shape[:2]
            self.probe.decoded_frames += 1
            self.probe.sizes[frame.shape[1], frame.shape[0]] += 1
            yield frame if self.preprocessing is None else prepare_frame(frame, self.preprocessing)
        if not self.probe.decoded_frames:
            raise VideoError(
                "no_frames",
                f"{self.path}: opens, but no frame decodes (claims {self.probe.claimed_frames})",
            )

    def _read_video(self) -> Iterator[np.ndarray]:
        opened = self.nvdec.open(self.path) if self.nvdec is not None else None
        if opened is not None:
            self.probe.claimed_frames = max(opened.claimed_frames, 0)
            self.probe.fps = opened.fps or self.probe.fps
            yield from opened.frames
            return
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            raise VideoError("unreadable", f"{self.path}: OpenCV cannot open it as a video")
        self.probe.claimed_frames = max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
        self.probe.fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0) or self.probe.fps
        yield from read_capture(capture)

    def _read_images(self) -> Iterator[np.ndarray]:
        for image in self.images:
            frame = cv2.imread(str(image), cv2.IMREAD_UNCHANGED)
            if frame is None or frame.size == 0:
                raise VideoError("unreadable_image", f"{image}: cannot be read as an image")
            yield to_uint8(frame, image)


def read_capture(capture: cv2.VideoCapture) -> Iterator[np.ndarray]:
    """Every frame an opened capture gives (a file, a camera, a stream); released at its end
    or when the reader stops early."""
    try:
        while True:
            ok, frame = capture.read()
            if not ok or frame is None:
                return
            yield frame
    finally:
        capture.release()


def to_uint8(frame: np.ndarray, source: Path) -> np.ndarray:
    """8 bits per channel by one fixed rule for every frame: 16-bit images are scaled by
    255/65535 (never by each frame's own maximum, which would make a constant scene flicker)."""
    if frame.dtype == np.uint8:
        return frame
    if frame.dtype == np.uint16:
        return ((frame.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    raise VideoError("unreadable_image", f"{source}: {frame.dtype} pixels; use 8 or 16 bits")


def natural_key(name: str) -> list:
    """frame2.jpg before frame10.jpg (`\\d` and `isdecimal` agree on what a digit is, so
    every part taken for a number converts; `isdigit` also says yes to "²")."""
    return [int(part) if part.isdecimal() else part.lower() for part in re.split(r"(\d+)", name)]


def visible(folder: Path) -> list[Path]:
    """A folder's entries but hidden ones (`.DS_Store`, `.ipynb_checkpoints`, `._clip.mp4`):
    what a file manager, Jupyter or macOS leaves behind is neither a label, a video nor a
    frame."""
    return [p for p in folder.iterdir() if not p.name.startswith(".")]


def folder_images(folder: Path) -> list[Path]:
    """A frame folder's images in natural order; hidden files (macOS' `._00001.jpg`, left on
    drives it wrote, are not images) are not frames."""
    images = [p for p in visible(folder) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    if not images:
        raise VideoError(
            "no_frames", f"{folder}: a folder, but holds no {'/'.join(IMAGE_SUFFIXES)} image"
        )
    return sorted(images, key=lambda p: natural_key(p.name))


def decode(
    path: str | Path, preprocessing: Preprocessing | None, fps: float | None = None
) -> tuple[np.ndarray, Probe]:
    """Every decodable frame of a recording, resized and cropped, as (n, 112, 112, 3) uint8."""
    frames = Frames(path, preprocessing, fps)
    return np.stack(list(frames)), frames.probe


def probe(path: str | Path, fps: float | None = None) -> Probe:
    """Open the recording and decode every frame, keeping none (what `check` reports)."""
    frames = Frames(path, None, fps)
    for _ in frames:
        pass
    return frames.probe


def source_sha256(path: str | Path) -> str:
    """sha256 of a video file; of a folder, over its images' names and contents."""
    path = Path(path)
    if not path.is_dir():
        return file_sha256(path)
    digest = hashlib.sha256()
    for image in folder_images(path):
        digest.update(f"{image.name}\0{file_sha256(image)}\n".encode())
    return digest.hexdigest()


def source_stat(path: str | Path) -> tuple[int, float]:
    """(size, modification time) of a file; of a folder, summed sizes and the newest time."""
    path = Path(path)
    if not path.is_dir():
        stat = path.stat()
        return stat.st_size, stat.st_mtime
    stats = [p.stat() for p in folder_images(path)]
    return sum(s.st_size for s in stats), max(s.st_mtime for s in stats)


def _check_source(path: Path) -> None:
    if not path.exists():
        raise VideoError("missing", f"{path}: file not found")
    if path.is_dir():
        return
    if not path.is_file():
        raise VideoError("unreadable", f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise VideoError("empty_file", f"{path}: file is empty (0 bytes)")
