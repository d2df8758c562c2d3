"""`gesture-cache hands`: the landmarks the hands backbone finds in videos, GIFs, folders of
frames and images, as MediaPipe's Hands reports them (JSON) or drawn on the frames."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from gesture_cache.backbones.hand_tracker import Hand
from gesture_cache.backbones.hands import Hands
from gesture_cache.common.errors import GestureCacheError
from gesture_cache.video.decode import IMAGE_SUFFIXES, Frames, VideoError, to_uint8

# MediaPipe's HAND_CONNECTIONS: the bones drawn between landmarks.
CONNECTIONS = [
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (5, 9), (9, 10),
    (10, 11), (11, 12), (9, 13), (13, 14), (14, 15), (15, 16), (13, 17), (0, 17), (17, 18),
    (18, 19), (19, 20),
]  # fmt: skip


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def source_frames(path: Path) -> Iterator[np.ndarray]:
    """BGR uint8 frames of an image, a video or GIF, or a folder of frames."""
    if not is_image(path):
        yield from Frames(path, None)
        return
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise VideoError("unreadable_image", f"{path}: cannot be read as an image")
    image = to_uint8(image, path)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    yield image


def hand_record(hand: Hand) -> dict:
    return {
        "handedness": hand.handedness,
        "score": round(max(hand.right, 1 - hand.right), 6),
        "landmarks": [[round(float(v), 6) for v in point] for point in hand.landmarks],
    }


def landmarks_of(source: str | Path, hands: Hands, out: Path | None = None) -> dict:
    """{"source", "frames": [{"frame", "hands": [...]}]} of one source; with `out`, a PNG
    (image) or MP4 (anything else) with the landmarks drawn, named after the source."""
    path = Path(source)
    track = hands.tracker()
    frames, writer, drawn = [], None, None
    try:
        for i, frame in enumerate(source_frames(path)):
            found = track(frame)
            frames.append({"frame": i, "hands": [hand_record(h) for h in found]})
            if out is None:
                continue
            drawn = draw(frame, found)
            if not is_image(path):
                writer = writer or video_writer(out / f"{path.stem}.mp4", drawn.shape)
                writer.write(drawn)
    finally:
        if writer is not None:
            writer.release()
    if out is not None and is_image(path) and drawn is not None:
        if not cv2.imwrite(str(out / f"{path.stem}.png"), drawn):
            raise GestureCacheError(f"{out / (path.stem + '.png')}: cannot be written")
    return {"source": str(source), "frames": frames}


def video_writer(path: Path, shape: tuple) -> cv2.VideoWriter:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, shape[1::-1])
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
