"""MediaPipe's palm detection, step by step as its CPU graph does it (mediapipe 0.10.21,
`palm_detection_cpu.pbtxt`): the frame letterboxed to 192x192, the SSD model, its 2016
anchors, boxes and 7 keypoints decoded, weighted non-maximum suppression, the letterbox
removed, and each palm turned into the rotated square where the hand landmark model looks.

Rectangles are MediaPipe's NormalizedRect: centre, width and height as fractions of the
frame, rotation in radians.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

PALM_SIZE = 192
MIN_PALM_SCORE = 0.5  # min_detection_confidence
NMS_IOU = 0.3


@dataclass(frozen=True)
class Rect:
    x_center: float
    y_center: float
    width: float
    height: float
    rotation: float = 0.0

    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax), rotation ignored (what MediaPipe's association uses)."""
        half_w, half_h = self.width / 2, self.height / 2
        return (
            self.x_center - half_w,
            self.y_center - half_h,
            self.x_center + half_w,
            self.y_center + half_h,
        )


@dataclass(frozen=True)
class Palm:
    score: float
    box: np.ndarray  # (xmin, ymin, xmax, ymax), fractions of the frame
    keypoints: np.ndarray  # (7, 2) x, y


def ssd_anchors() -> np.ndarray:
    """The (2016, 2) anchor centres of SsdAnchorsCalculator with the palm model's options
    (4 layers, strides 8/16/16/16, aspect ratio 1 plus the interpolated one, fixed size):
    2 anchors a cell on the 24x24 map, 6 on the 12x12 one."""
    centres = []
    for stride, per_cell in ((8, 2), (16, 6)):
        size = math.ceil(PALM_SIZE / stride)
        grid = (np.arange(size) + 0.5) / size
        y, x = np.meshgrid(grid, grid, indexing="ij")
        cells = np.stack([x.ravel(), y.ravel()], axis=1)
        centres.append(np.repeat(cells, per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


ANCHORS = ssd_anchors()


def warp(rgb: np.ndarray, rect_px: tuple, size: int, border: int) -> np.ndarray:
    """The rotated rectangle (centre x, centre y, width, height in pixels, rotation in
    radians) of an RGB frame as a size x size float32 image in [0, 1]: ImageToTensor's CPU
    path (OpenCV's boxPoints, getPerspectiveTransform, warpPerspective, bilinear)."""
    cx, cy, w, h, rotation = rect_px
    corners = cv2.boxPoints(((cx, cy), (w, h), math.degrees(rotation)))
    target = np.array([[0, size], [0, 0], [size, 0], [size, size]], np.float32)
    matrix = cv2.getPerspectiveTransform(corners.astype(np.float32), target)
    crop = cv2.warpPerspective(rgb, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=border)
    return crop.astype(np.float32) / 255.0


def letterbox(rgb: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """The frame fitted into 192x192 with black borders, and the (x, y) padding on each side
    as a fraction of the square."""
    height, width = rgb.shape[:2]
    side = max(width, height)
    image = warp(rgb, (width / 2, height / 2, side, side, 0.0), PALM_SIZE, cv2.BORDER_CONSTANT)
    return image, ((1 - width / side) / 2, (1 - height / side) / 2)


def decode_palms(raw_boxes: np.ndarray, raw_scores: np.ndarray) -> list[Palm]:
    """The model's (2016, 18) boxes and (2016,) logits -> palms scoring at least 0.5, in the
    192x192 square's fractions."""
    scores = 1 / (1 + np.exp(-np.clip(raw_scores, -100, 100)))
    keep = np.flatnonzero(scores >= MIN_PALM_SCORE)
    raw, anchors = raw_boxes[keep] / PALM_SIZE, ANCHORS[keep]
    centre = raw[:, 0:2] + anchors
    half = raw[:, 2:4] / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    keypoints = raw[:, 4:18].reshape(-1, 7, 2) + anchors[:, None, :]
    return [Palm(float(s), b, k) for s, b, k in zip(scores[keep], boxes, keypoints)]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def weighted_nms(palms: list[Palm]) -> list[Palm]:
    """NonMaxSuppressionCalculator's WEIGHTED algorithm: the best palm left, its box and
    keypoints replaced by the score-weighted mean of every palm overlapping it (IoU > 0.3)."""
    remaining = sorted(palms, key=lambda p: -p.score)
    kept = []
    while remaining:
        best = remaining[0]
        overlaps = [p for p in remaining if iou(p.box, best.box) > NMS_IOU]
        remaining = [p for p in remaining if iou(p.box, best.box) <= NMS_IOU]
        weights = np.array([p.score for p in overlaps])[:, None]
        box = (np.stack([p.box for p in overlaps]) * weights).sum(0) / weights.sum()
        points = (np.stack([p.keypoints for p in overlaps]) * weights[:, :, None]).sum(0)
        kept.append(Palm(best.score, box, points / weights.sum()))
    return kept


def unletterbox(palm: Palm, pad: tuple[float, float]) -> Palm:
    pad_x, pad_y = pad
    scale = np.array([1 - 2 * pad_x, 1 - 2 * pad_y])
    offset = np.array([pad_x, pad_y])
    box = (palm.box.reshape(2, 2) - offset) / scale
    return Palm(palm.score, box.ravel(), (palm.keypoints - offset) / scale)


def normalize_radians(angle: float) -> float:
    return angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))


def rotation_towards(x0: float, y0: float, x1: float, y1: float) -> float:
    """The rotation that turns the vector (x0, y0) -> (x1, y1), in pixels, upright (90°)."""
    return normalize_radians(math.pi / 2 - math.atan2(-(y1 - y0), x1 - x0))


def transform_rect(rect: Rect, width: int, height: int, scale: float, shift_y: float) -> Rect:
    """RectTransformationCalculator: shifted along its own rotated axis, made square on its
    longer side (in pixels), then scaled."""
    shift_x_px = -height * rect.height * shift_y * math.sin(rect.rotation)
    shift_y_px = height * rect.height * shift_y * math.cos(rect.rotation)
    long_side = max(rect.width * width, rect.height * height)
    return Rect(
        rect.x_center + shift_x_px / width,
        rect.y_center + shift_y_px / height,
        long_side / width * scale,
        long_side / height * scale,
        rect.rotation,
    )


def palm_rect(palm: Palm, width: int, height: int) -> Rect:
    """PalmDetectionDetectionToRoi: the box turned so that wrist -> middle finger points up
    (keypoints 0 and 2), shifted half a box towards the fingers, squared, scaled 2.6."""
    (x0, y0), (x1, y1) = palm.keypoints[0], palm.keypoints[2]
    rotation = rotation_towards(x0 * width, y0 * height, x1 * width, y1 * height)
    xmin, ymin, xmax, ymax = palm.box
    box = Rect((xmin + xmax) / 2, (ymin + ymax) / 2, xmax - xmin, ymax - ymin, rotation)
    return transform_rect(box, width, height, scale=2.6, shift_y=-0.5)


def detect_palms(rgb: np.ndarray, run_model) -> list[Palm]:
    """Palms of an RGB frame, best first, in fractions of the frame. `run_model` maps the
    (1, 192, 192, 3) input to the model's (boxes, score logits)."""
    image, pad = letterbox(rgb)
    raw_boxes, raw_scores = run_model(image[None])
    palms = weighted_nms(decode_palms(raw_boxes.reshape(-1, 18), raw_scores.reshape(-1)))
    return [unletterbox(p, pad) for p in palms]
