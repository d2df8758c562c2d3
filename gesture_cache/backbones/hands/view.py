"""`gesture-cache hands`: the landmarks the hands backbone finds in videos, GIFs, folders of
frames and images, as MediaPipe's Hands reports them (JSON) or drawn on the frames."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from gesture_cache.backbones.hands.backbone import Hands
from gesture_cache.backbones.hands.tracker import Hand
from gesture_cache.common.errors import ConfigError, GestureCacheError
from gesture_cache.common.files import refuse_inputs
from gesture_cache.video.decode import (
    DEFAULT_FOLDER_FPS,
    IMAGE_SUFFIXES,
    Frames,
    VideoError,
    to_uint8,
)

# MediaPipe's HAND_CONNECTIONS: the bones drawn between landmarks.
CONNECTIONS = [
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (5, 9), (9, 10),
    (10, 11), (11, 12), (9, 13), (13, 14), (14, 15), (15, 16), (13, 17), (0, 17), (17, 18),
    (18, 19), (19, 20),
]  # fmt: skip


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def output_paths(sources: list[Path], out: Path) -> dict[Path, Path]:
    """Where each source's drawing goes: `out/NAME.png` for an image, `out/NAME.mp4` for a
    video, a GIF or a folder of frames, NAME the source's whole file name (so `x.jpg` and
    `x.png` do not meet). Two sources that would write one file, and an output that would
    replace a source or land inside a folder of frames read as one, are refused before
    anything is read."""
    paths: dict[Path, Path] = {}
    for source in sources:
        suffix = ".png" if is_image(source) else ".mp4"
        path = out / f"{source.name}{suffix}"
        clash = next((s for s, p in paths.items() if p.resolve() == path.resolve()), None)
        if clash is not None:
            raise ConfigError(
                f"--out {out}: {clash} and {source} would both be drawn to {path.name}; "
                "draw them in two runs with different --out folders"
            )
        paths[source] = path
    refuse_inputs(list(paths.values()), sources)
    return paths


def source_frames(path: Path) -> tuple[Iterator[np.ndarray], Frames | None]:
    """BGR uint8 frames of an image, a video or GIF, or a folder of frames, and for the
    latter the `Frames` whose probe tells their rate."""
    if not is_image(path):
        frames = Frames(path, None)
        return iter(frames), frames
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise VideoError("unreadable_image", f"{path}: cannot be read as an image")
    image = to_uint8(image, path)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return iter([image]), None


def hand_record(hand: Hand) -> dict:
    return {
        "handedness": hand.handedness,
        "score": round(max(hand.right, 1 - hand.right), 6),
        "landmarks": [[round(float(v), 6) for v in point] for point in hand.landmarks],
    }


def landmarks_of(source: str | Path, hands: Hands, drawing: Path | None = None) -> dict:
    """{"source", "frames": [{"frame", "hands": [...]}]} of one source; with `drawing` (from
    `output_paths`), a PNG (image) or an MP4 at the source's frame rate (anything else) with
    the landmarks drawn, written under a temporary name and renamed once complete."""
    path = Path(source)
    track = hands.tracker()
    found_frames, writer, drawn = [], None, None
    temporary = (
        None if drawing is None else drawing.with_name(f".{drawing.name}.tmp{drawing.suffix}")
    )
    frames, decoded = source_frames(path)
    try:
        for i, frame in enumerate(frames):
            found = track(frame)
            found_frames.append({"frame": i, "hands": [hand_record(h) for h in found]})
            if drawing is None:
                continue
            drawn = draw(frame, found)
            if decoded is not None:
                fps = decoded.probe.fps or DEFAULT_FOLDER_FPS
                writer = writer or video_writer(temporary, drawn.shape, fps)
                writer.write(drawn)
    finally:
        if writer is not None:
            writer.release()
    if drawing is not None and drawn is not None:
        if decoded is None and not cv2.imwrite(str(temporary), drawn):
            raise GestureCacheError(f"{drawing}: cannot be written")
        os.replace(temporary, drawing)
    return {"source": str(source), "frames": found_frames}


def video_writer(path: Path, shape: tuple, fps: float) -> cv2.VideoWriter:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, shape[1::-1])
    if not writer.isOpened():
        raise GestureCacheError(f"{path}: cannot be written as an MP4 video")
    return writer


def draw(frame: np.ndarray, hands: list[Hand]) -> np.ndarray:
    """The frame with each hand's bones (white) and landmarks (red: right, blue: left)."""
    drawn = frame.copy()
    height, width = frame.shape[:2]
    radius = max(1, round(min(width, height) / 120))
    for hand in hands:
        points = np.round(hand.landmarks[:, :2] * (width, height)).astype(int)
        for a, b in CONNECTIONS:
            cv2.line(drawn, tuple(points[a]), tuple(points[b]), (255, 255, 255), radius)
        colour = (0, 0, 255) if hand.handedness == "Right" else (255, 0, 0)
        for point in points:
            cv2.circle(drawn, tuple(point), radius + 1, colour, -1)
    return drawn
