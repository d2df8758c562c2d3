"""MediaPipe Hands on LiteRT: palm detection, the landmark model on each hand's rotated
crop, landmarks projected back into the frame, and in video the hand followed from the
previous frame's landmarks (`hand_landmark_tracking_cpu`, mediapipe 0.10.21): palm
detection runs only while fewer hands are tracked than `max_hands`.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import cv2
import numpy as np

from gesture_cache.backbones.hands.models import HandModels
from gesture_cache.backbones.hands.palm import (
    PALM_SIZE,
    Rect,
    detect_palms,
    palm_rect,
    rotation_towards,
    transform_rect,
    warp,
)
from gesture_cache.common.errors import ConfigError, first_line

LANDMARK_SIZE = 224
MIN_PRESENCE = 0.5  # min_tracking_confidence
MIN_ASSOCIATION_IOU = 0.5
# The landmarks MediaPipe draws the next frame's hand box from: wrist, thumb base, and the
# two lower joints of each finger (HandLandmarkLandmarksToRoi).
TRACKING_LANDMARKS = [0, 1, 2, 3, 5, 6, 9, 10, 13, 14, 17, 18]


@dataclass(frozen=True)
class Hand:
    """One hand in one frame, as MediaPipe's Hands solution reports it."""

    landmarks: np.ndarray  # (21, 3): x, y in fractions of the frame, z on x's scale
    world: np.ndarray  # (21, 3) metres, origin at the hand's centre
    right: float  # probability that it is the person's right hand (see `mirrored`)
    presence: float
    rect: Rect  # where the landmark model looked

    @property
    def handedness(self) -> str:
        return "Right" if self.right >= 0.5 else "Left"


class Models:
    """LiteRT interpreters of the two models (one per thread: an interpreter is not
    thread-safe), their shapes checked once."""

    def __init__(self, models: HandModels):
        self.models = models
        self.local = threading.local()
        self.interpreters()  # fails now, with its message, on a model that is not one

    def __getstate__(self) -> dict:  # sent to Ray workers: the bytes, no interpreters
        return {"models": self.models}

    def __setstate__(self, state: dict) -> None:
        self.models, self.local = state["models"], threading.local()

    def interpreters(self) -> tuple:
        if not hasattr(self.local, "pair"):
            self.local.pair = (
                interpreter(
                    self.models.palm,
                    "palm detection",
                    self.models.source,
                    (1, PALM_SIZE, PALM_SIZE, 3),
                    [(1, 2016, 18), (1, 2016, 1)],
                ),
                interpreter(
                    self.models.landmarks,
                    "hand landmark",
                    self.models.source,
                    (1, LANDMARK_SIZE, LANDMARK_SIZE, 3),
                    [(1, 63), (1, 1), (1, 1), (1, 63)],
                ),
            )
        return self.local.pair

    def palms(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return run(self.interpreters()[0], image)

    def landmarks(self, image: np.ndarray) -> tuple[np.ndarray, ...]:
        return run(self.interpreters()[1], image)


def interpreter(model: bytes, what: str, source: str, input_shape: tuple, outputs: list):
    from ai_edge_litert.interpreter import Interpreter

    try:
        runner = Interpreter(model_content=model, num_threads=1)
        runner.allocate_tensors()
    except (ValueError, RuntimeError) as error:
        raise ConfigError(
            f"{source}: the {what} model does not load ({first_line(error)})"
        ) from None
    inputs = [tuple(d["shape"]) for d in runner.get_input_details()]
    details = sorted(runner.get_output_details(), key=lambda d: d["name"])
    shapes = [tuple(d["shape"]) for d in details]
    if inputs != [input_shape] or shapes != [tuple(s) for s in outputs]:
        raise ConfigError(
            f"{source}: not MediaPipe's {what} model (input {inputs}, outputs {shapes}; "
            f"expected {input_shape} -> {outputs})"
        )
    return runner, runner.get_input_details()[0]["index"], [d["index"] for d in details]


def run(runner_info: tuple, image: np.ndarray) -> tuple[np.ndarray, ...]:
    runner, input_index, output_indices = runner_info
    runner.set_tensor(input_index, image)
    runner.invoke()
    return tuple(runner.get_tensor(i) for i in output_indices)


def rect_in_pixels(rect: Rect, width: int, height: int) -> tuple:
    return (
        rect.x_center * width,
        rect.y_center * height,
        rect.width * width,
        rect.height * height,
        rect.rotation,
    )


def hand_in(rgb: np.ndarray, rect: Rect, models: Models, mirrored: bool) -> Hand | None:
    """The landmark model on `rect` of the frame; None when it finds no hand there."""
    height, width = rgb.shape[:2]
    crop = warp(rgb, rect_in_pixels(rect, width, height), LANDMARK_SIZE, cv2.BORDER_REPLICATE)
    raw, presence, left, raw_world = models.landmarks(crop[None])
    presence = float(presence.ravel()[0])
    if presence < MIN_PRESENCE:
        return None
    points = raw.reshape(21, 3) / LANDMARK_SIZE
    points[:, 2] /= 0.4  # TensorsToLandmarks' normalize_z
    cos, sin = math.cos(rect.rotation), math.sin(rect.rotation)
    x, y = points[:, 0] - 0.5, points[:, 1] - 0.5
    landmarks = np.stack(
        [
            (cos * x - sin * y) * rect.width + rect.x_center,
            (sin * x + cos * y) * rect.height + rect.y_center,
            points[:, 2] * rect.width,
        ],
        axis=1,
    )
    world = raw_world.reshape(21, 3).copy()
    wx, wy = world[:, 0].copy(), world[:, 1].copy()
    world[:, 0], world[:, 1] = cos * wx - sin * wy, sin * wx + cos * wy
    # The model's handedness is MediaPipe's "Left" score for a mirrored (selfie) frame.
    left = float(left.ravel()[0])
    right = 1 - left if mirrored else left
    return Hand(landmarks.astype(np.float32), world, right, presence, rect)


def landmarks_rect(landmarks: np.ndarray, width: int, height: int) -> Rect:
    """HandLandmarksToRectCalculator + RectTransformation(2.0, -0.1): the next frame's box,
    turned by wrist -> middle of the index, middle and ring finger bases."""
    points = landmarks[TRACKING_LANDMARKS, :2] * (width, height)
    x0, y0 = points[0]
    x1, y1 = ((points[4] + points[8]) / 2 + points[6]) / 2  # lm 5, 13 and 9
    rotation = rotation_towards(x0, y0, x1, y1)
    low, high = points.min(0), points.max(0)
    centre = (low + high) / 2
    cos, sin = math.cos(-rotation), math.sin(-rotation)
    shifted = points - centre
    projected = shifted @ np.array([[cos, sin], [-sin, cos]])
    p_low, p_high = projected.min(0), projected.max(0)
    pc = (p_low + p_high) / 2
    cos, sin = math.cos(rotation), math.sin(rotation)
    cx = pc[0] * cos - pc[1] * sin + centre[0]
    cy = pc[0] * sin + pc[1] * cos + centre[1]
    size = p_high - p_low
    rect = Rect(cx / width, cy / height, size[0] / width, size[1] / height, rotation)
    return transform_rect(rect, width, height, scale=2.0, shift_y=-0.1)


def rect_iou(a: Rect, b: Rect) -> float:
    ax0, ay0, ax1, ay1 = a.bounds()
    bx0, by0, bx1, by1 = b.bounds()
    w, h = min(ax1, bx1) - max(ax0, bx0), min(ay1, by1) - max(ay0, by0)
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / (a.width * a.height + b.width * b.height - inter)


def associate(detected: list[Rect], tracked: list[Rect]) -> list[Rect]:
    """AssociationNormRectCalculator: a tracked box replaces every detected box it overlaps
    (IoU > 0.5); the remaining detections come first."""
    result: list[Rect] = []
    for rect in detected + tracked:
        result = [r for r in result if rect_iou(r, rect) <= MIN_ASSOCIATION_IOU]
        result.append(rect)
    return result


class HandTracker:
    """Hands frame by frame in one recording (one tracker per recording; `static` runs palm
    detection on every frame, MediaPipe's static_image_mode)."""

    def __init__(self, models: Models, max_hands: int, mirrored: bool, static: bool):
        self.models, self.max_hands = models, max_hands
        self.mirrored, self.static = mirrored, static
        self.tracked: list[Rect] = []

    def __call__(self, bgr: np.ndarray) -> list[Hand]:
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        height, width = rgb.shape[:2]
        tracked = [] if self.static else self.tracked
        rects = tracked
        if len(tracked) < self.max_hands:
            palms = detect_palms(rgb, self.models.palms)[: self.max_hands]
            rects = associate([palm_rect(p, width, height) for p in palms], tracked)
        hands = [h for r in rects if (h := hand_in(rgb, r, self.models, self.mirrored))]
        self.tracked = [landmarks_rect(h.landmarks, width, height) for h in hands]
        return hands
