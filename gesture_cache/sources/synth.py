"""Synthetic videos of the four reference gestures, for the demos and the tests.

A hand-like shape (palm and fingers) clicks, swipes left, swipes right or shakes, with a
random size, colour, position, speed, length, frame rate and background per video.
Continuous recordings (`make_recordings`) put several gestures between idle stretches (no
hand, or a resting fist drifting slowly) and list them as segments.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

GESTURES = ("1_Finger_Click", "2_Fingers_Left", "2_Fingers_Right", "Shake_Hand")


FRAME_SIZES = ((160, 120), (176, 144), (128, 96), (200, 150))


def hand_pose(gesture: str, t: float, width: int, height: int, rng_params: dict) -> dict:
    """Where the hand is at time t in [0, 1] and how far each finger is extended."""
    cx, cy, cycles = rng_params["cx"], rng_params["cy"], rng_params["cycles"]
    fingers = [0.0, 1.0, 1.0, 0.0, 0.0]  # thumb, index, middle, ring, little
    x, y, angle = cx * width, cy * height, 0.0
    if gesture == "1_Finger_Click":
        fingers = [0.3, 1.0 - 0.8 * abs(np.sin(np.pi * cycles * t)), 0.0, 0.0, 0.0]
        y += rng_params.get("tap", 0.05) * height * abs(np.sin(np.pi * cycles * t))
    elif gesture in ("2_Fingers_Left", "2_Fingers_Right"):
        sweep = rng_params["sweep"] * width
        progress = np.clip(1.25 * t - 0.125, 0, 1)
        direction = -1 if gesture == "2_Fingers_Left" else 1
        x = width / 2 + direction * sweep * (progress - 0.5)
    else:  # Shake_Hand: open hand swinging side to side
        fingers = [0.8, 1.0, 1.0, 1.0, 0.9]
        x += 0.22 * width * np.sin(2 * np.pi * cycles * t)
        angle = 25 * np.sin(2 * np.pi * cycles * t)
    return {"x": x, "y": y, "angle": angle, "fingers": fingers}


def draw_frame(background: np.ndarray, pose: dict, scale: float, colour: tuple) -> np.ndarray:
    frame = background.copy()
    x, y, angle = pose["x"], pose["y"], np.deg2rad(pose["angle"])
    palm = (int(22 * scale), int(26 * scale))
    cv2.ellipse(frame, (int(x), int(y)), palm, pose["angle"], 0, 360, colour, -1, cv2.LINE_AA)
    thickness = max(2, int(7 * scale))
    for i, extension in enumerate(pose["fingers"]):
        spread = np.deg2rad(-50 + 25 * i) + angle
        base = (x + 0.8 * palm[0] * np.sin(spread), y - 0.8 * palm[1] * np.cos(spread))
        length = (10 + 26 * extension) * scale
        tip = (base[0] + length * np.sin(spread), base[1] - length * np.cos(spread))
        cv2.line(frame, tuple(map(int, base)), tuple(map(int, tip)), colour, thickness, cv2.LINE_AA)
    return frame


def make_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A dim two-colour gradient with sensor-like noise (the hand is always brighter)."""
    top, bottom = rng.integers(0, 90, 3), rng.integers(0, 90, 3)
    ramp = np.linspace(0, 1, height)[:, None, None]
    background = (1 - ramp) * top + ramp * bottom
    background = np.broadcast_to(background, (height, width, 3)).astype(np.float32)
    background += rng.normal(0, 6, background.shape)
    return np.clip(background, 0, 255).astype(np.uint8)


def write_video(path: Path, gesture: str, rng: np.random.Generator) -> None:
    width, height = FRAME_SIZES[rng.integers(len(FRAME_SIZES))]
    fps = float(rng.choice([15, 20, 25, 30]))
    n_frames = int(rng.integers(24, 49))
    params = gesture_params(rng)
    scale = rng.uniform(0.7, 1.3) * width / 160
    colour = tuple(int(c) for c in rng.integers(150, 256, 3))
    background = make_background(rng, width, height)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    for i in range(n_frames):
        pose = hand_pose(gesture, i / (n_frames - 1), width, height, params)
        writer.write(draw_frame(background, pose, scale, colour))
    writer.release()


def make_dataset(out: str | Path, per_class: int = 12, seed: int = 0) -> Path:
    """Write `per_class` videos of each gesture and `meta.csv` under `out`; returns the CSV."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    rows = []
    for gesture in GESTURES:
        (out / gesture).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            relative = Path(gesture) / f"{gesture.lower()}_{i:03d}.avi"
            write_video(out / relative, gesture, rng)
            rows.append({"file_path": relative.as_posix(), "action": gesture})
    csv_path = out / "meta.csv"
    pd.DataFrame(rows).to_csv(csv_path, index=False)
    return csv_path


def gesture_params(rng: np.random.Generator) -> dict:
    return {
        "cx": rng.uniform(0.4, 0.6),
        "cy": rng.uniform(0.45, 0.65),
        "cycles": rng.uniform(1.5, 3.0),
        "sweep": rng.uniform(0.5, 0.7),
    }


def resting_pose(t: float, width: int, height: int, start: tuple[float, float]) -> dict:
    """A loose fist drifting a few pixels: present, but no gesture."""
    x = start[0] * width + 0.03 * width * np.sin(0.7 * t)
    y = start[1] * height + 0.02 * height * np.cos(0.5 * t)
    return {"x": x, "y": y, "angle": 0.0, "fingers": [0.15, 0.1, 0.1, 0.1, 0.1]}


def write_recording(
    path: Path, rng: np.random.Generator, gestures: int, size: tuple[int, int] = (160, 120)
) -> list[dict]:
    """A continuous recording: idle, gesture, idle, ..., idle. Returns its segments."""
    width, height = size
    fps = 25.0
    scale = rng.uniform(0.8, 1.2) * width / 160
    colour = tuple(int(c) for c in rng.integers(150, 256, 3))
    background = make_background(rng, width, height)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    segments, frame = [], 0

    def idle(n: int) -> None:
        nonlocal frame
        hand = rng.random() < 0.5
        start = (rng.uniform(0.35, 0.65), rng.uniform(0.45, 0.65))
        for i in range(n):
            pose = resting_pose(i / fps, width, height, start)
            writer.write(draw_frame(background, pose, scale, colour) if hand else background)
        frame += n

    for _ in range(gestures):
        idle(int(rng.integers(24, 56)))
        gesture = GESTURES[rng.integers(len(GESTURES))]
        length, params = int(rng.integers(32, 49)), gesture_params(rng)
        # the hand taps harder with a click here: a random-weight C3D must tell it from a
        # resting fist, not only from the other gestures
        params["tap"] = 0.12
        for i in range(length):
            pose = hand_pose(gesture, i / (length - 1), width, height, params)
            writer.write(draw_frame(background, pose, scale, colour))
        segments.append({"start_frame": frame, "end_frame": frame + length, "action": gesture})
        frame += length
    idle(int(rng.integers(24, 56)))
    writer.release()
    return segments


def make_recordings(out: str | Path, recordings: int, gestures: int = 6, seed: int = 0) -> Path:
    """Write continuous recordings and `segments.csv` (file_path, action, start_frame,
    end_frame) under `out`; returns the CSV."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(recordings):
        name = f"recording_{i:03d}.avi"
        for segment in write_recording(out / name, rng, gestures):
            rows.append({"file_path": name, **segment})
    csv_path = out / "segments.csv"
    columns = ["file_path", "action", "start_frame", "end_frame"]
    pd.DataFrame(rows, columns=columns).to_csv(csv_path, index=False)
    return csv_path
