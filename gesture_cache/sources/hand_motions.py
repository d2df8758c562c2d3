"""Videos of real hands in motion, made from photos of hands: each photo moved across a
frame (swipes left, right, up and down), scaled (zooms in and out) and turned a little, over a
background of its own; and continuous recordings of several motions between pauses. For
tests and benchmarks of hand-motion features on real hands (the photos are real, the motion
is made), with the person's hand known (a photo and its mirror image).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

MOTIONS = ("swipe_left", "swipe_right", "swipe_up", "swipe_down", "zoom_in", "zoom_out")
MIRRORED = {  # each motion's mirror image (left <-> right)
    "swipe_left": "swipe_right",
    "swipe_right": "swipe_left",
    "swipe_up": "swipe_up",
    "swipe_down": "swipe_down",
    "zoom_in": "zoom_in",
    "zoom_out": "zoom_out",
}
FRAME = (480, 360)  # width, height
FPS = 15.0


@dataclass(frozen=True)
class Path2D:
    """Where a hand is (its centre, in fractions of the frame), how tall (a fraction of the
    frame's height) and how turned (degrees) at time t in [0, 1]."""

    start: tuple[float, float, float, float]  # x, y, height, degrees
    end: tuple[float, float, float, float]

    def at(self, t: float) -> np.ndarray:
        ease = 0.5 - 0.5 * np.cos(np.pi * t)  # starts and stops smoothly, as a hand does
        return (1 - ease) * np.array(self.start) + ease * np.array(self.end)


def motion_path(motion: str, rng: np.random.Generator) -> Path2D:
    """A motion's path, with its own place, size, reach and turn."""
    x, y = rng.uniform(0.42, 0.58), rng.uniform(0.42, 0.58)
    height, reach = rng.uniform(0.42, 0.55), rng.uniform(0.30, 0.40)
    turn = rng.uniform(-15, 15)
    swing = rng.uniform(-8, 8)
    if motion in ("swipe_left", "swipe_right"):
        sign = -1 if motion == "swipe_left" else 1
        return Path2D(
            (x - sign * reach / 2, y, height, turn), (x + sign * reach / 2, y, height, turn + swing)
        )
    if motion in ("swipe_up", "swipe_down"):
        sign = -1 if motion == "swipe_up" else 1
        reach *= 0.75  # the frame is lower than it is wide
        return Path2D(
            (x, y - sign * reach / 2, height, turn), (x, y + sign * reach / 2, height, turn + swing)
        )
    small, large = rng.uniform(0.30, 0.38), rng.uniform(0.62, 0.72)
    sizes = (small, large) if motion == "zoom_in" else (large, small)
    return Path2D((x, y, sizes[0], turn), (x, y, sizes[1], turn + swing))


def background(rng: np.random.Generator, size: tuple[int, int] = FRAME) -> np.ndarray:
    """A plain wall with a soft gradient and sensor noise, of a colour of its own."""
    width, height = size
    top, bottom = rng.integers(60, 200, 3), rng.integers(60, 200, 3)
    ramp = np.linspace(0, 1, height)[:, None, None]
    wall = (1 - ramp) * top + ramp * bottom
    wall = np.broadcast_to(wall, (height, width, 3)).astype(np.float32)
    wall = wall + rng.normal(0, 4, wall.shape)
    return np.clip(wall, 0, 255).astype(np.uint8)


def place(
    photo: np.ndarray, wall: np.ndarray, x: float, y: float, height: float, degrees: float
) -> np.ndarray:
    """The photo drawn on the wall: its centre at (x, y), `height` of the frame tall, turned."""
    frame_h, frame_w = wall.shape[:2]
    scale = height * frame_h / photo.shape[0]
    centre = (photo.shape[1] / 2, photo.shape[0] / 2)
    matrix = cv2.getRotationMatrix2D(centre, degrees, scale)
    matrix[:, 2] += (x * frame_w - centre[0], y * frame_h - centre[1])
    size = (frame_w, frame_h)
    drawn = cv2.warpAffine(photo, matrix, size, flags=cv2.INTER_LINEAR)
    inside = cv2.warpAffine(np.full(photo.shape[:2], 255, np.uint8), matrix, size) > 127
    frame = wall.copy()
    frame[inside] = drawn[inside]
    return frame


def motion_frames(
    photo: np.ndarray, motion: str, frames: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """One motion of one hand, `frames` long."""
    path, wall = motion_path(motion, rng), background(rng)
    return [place(photo, wall, *path.at(i / (frames - 1))) for i in range(frames)]


def write_video(path: Path, frames: list[np.ndarray], fps: float = FPS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def make_motions(
    hands: dict[str, np.ndarray],
    out: str | Path,
    per_motion: int = 2,
    frames: int = 20,
    mirror: bool = False,
    seed: int = 0,
) -> Path:
    """`per_motion` videos of each motion for each hand (name -> BGR photo), and
    `out/meta.csv` (file_path, action, group = the hand's name, hand = right or left). With
    `mirror`, each video is written mirrored (left <-> right), a left hand doing the
    mirrored motion, labelled as what it shows."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    rows = []
    for name, photo in hands.items():
        for motion in MOTIONS:
            for take in range(per_motion):
                shown = motion_frames(photo, motion, frames, rng)
                label = motion
                if mirror:
                    shown, label = [cv2.flip(f, 1) for f in shown], MIRRORED[motion]
                file = f"{name}/{label}_{take}.avi"
                write_video(out / file, shown)
                rows.append((file, label, name, "left" if mirror else "right"))
    table = pd.DataFrame(rows, columns=["file_path", "action", "group", "hand"])
    table.to_csv(out / "meta.csv", index=False)
    return out / "meta.csv"


def make_session(
    photo: np.ndarray, motions: list[str], out: str | Path, frames: int = 20,
    pause: int = 12, seed: int = 0,
) -> Path:  # fmt: skip
    """One continuous recording of `motions` one after another, with `pause` frames of the
    hand at rest before, between and after them, and `out/segments.csv`."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    wall = background(rng)
    shown, rows = [], []
    for motion in motions:
        path = motion_path(motion, rng)
        shown += [place(photo, wall, *path.at(0.0)) for _ in range(pause)]  # at rest
        start = len(shown)
        shown += [place(photo, wall, *path.at(i / (frames - 1))) for i in range(frames)]
        rows.append(("session.avi", motion, start, len(shown)))
    shown += [place(photo, wall, *path.at(1.0)) for _ in range(pause)]
    write_video(out / "session.avi", shown)
    table = pd.DataFrame(rows, columns=["file_path", "action", "start_frame", "end_frame"])
    table.to_csv(out / "segments.csv", index=False)
    return out / "segments.csv"
