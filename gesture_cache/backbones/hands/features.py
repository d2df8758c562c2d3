"""The hands backbone's feature vector, value by value, and what training may do with it:
its groups (pose, trajectory) and its mirror image (left <-> right). Numpy only.

Each of `max_hands` slots holds, for layout 2 (the default), 140 values:

    [0]        presence: 1 when a hand is in the slot, else the slot is all zeros
    [1]        the probability that it is the person's right hand
    [2:65]     pose: the 21 landmarks (x, y, z) in pixels, minus the wrist's, divided by the
               wrist -> middle-finger-base distance (where the hand is and how large it is
               drop out; its shape and turn stay)
    [65:128]   pose: the 21 world landmarks (metres, origin at the hand's centre)
    [128:130]  trajectory: the wrist (x, y) in the frame
    [130:132]  trajectory: the palm's centre (x, y): the mean of the wrist and the four
               finger bases
    [132]      trajectory: the hand's size: wrist -> middle-finger base
    [133:135]  trajectory: its in-plane turn, (cos, sin) of the wrist -> middle-finger base
               direction, 0 degrees pointing up, clockwise positive as the frame shows it
    [135:137]  trajectory: the palm centre's motion since the previous frame (x, y)
    [137]      trajectory: the size's change since the previous frame
    [138:140]  trajectory: where the other hand's palm centre is from this one's (x, y)

Positions and sizes are in frame heights, x measured from the frame's centre to the right and
y from its centre down, so a move of so many pixels is the same number either way whatever
the frame's aspect. Motion is 0 for a hand that was not in the slot in the previous frame,
and the other hand 0 when there is none. Layout 1 (caches of gesture_cache 0.1) has the
first 128 values of a slot only.

With two slots, a right hand goes to slot 0 and a left one to slot 1, so a gesture made with
the same hand lands in the same values every time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gesture_cache.backbones.base import FeatureLayout

POSE = 128  # values of a slot in layout 1: presence, handedness, the pose
TRAJECTORY = 12  # values a slot adds in layout 2
LAYOUTS = (1, 2)
PALM = [0, 5, 9, 13, 17]  # the wrist and the four finger bases
MIDDLE_BASE = 9


def slot_size(layout: int) -> int:
    return POSE + (TRAJECTORY if layout == 2 else 0)


@dataclass(frozen=True)
class HandPlace:
    """Where one hand is in a frame, in frame heights from the frame's centre."""

    wrist: np.ndarray  # (2,)
    palm: np.ndarray  # (2,)
    size: float
    turn: np.ndarray  # (cos, sin)


def hand_place(landmarks: np.ndarray, width: int, height: int) -> HandPlace:
    """`landmarks` (21, 3): x, y in fractions of the frame (MediaPipe's)."""
    points = (landmarks[:, :2] * (width, height) - (width / 2, height / 2)) / height
    up = points[MIDDLE_BASE] - points[0]
    size = float(np.linalg.norm(up))
    turn = np.array([-up[1], up[0]]) / size if size else np.array([1.0, 0.0])
    return HandPlace(points[0], points[PALM].mean(0), size, turn)


def pose_values(
    landmarks: np.ndarray, world: np.ndarray, right: float, width: int, height: int,
    upright: bool,
) -> np.ndarray:  # fmt: skip
    """A slot's first 128 values. `upright` (layout 2): the hand turned so that its wrist ->
    middle-finger base points up, so these values hold its shape alone (its turn is a
    trajectory value); layout 1 kept the turn in them."""
    pixels = landmarks * np.array([width, height, width], np.float32)
    relative = pixels - pixels[0]
    palm = float(np.linalg.norm(relative[MIDDLE_BASE, :2])) or 1.0
    relative, world = relative / palm, world.copy()
    if upright:
        sin, cos = relative[MIDDLE_BASE, 0], -relative[MIDDLE_BASE, 1]  # the hand's turn
        for points in (relative, world):
            x, y = points[:, 0].copy(), points[:, 1].copy()
            points[:, 0], points[:, 1] = cos * x + sin * y, cos * y - sin * x
    return np.concatenate([[1.0, right], relative.ravel(), world.ravel()])


def trajectory_values(place: HandPlace, before: HandPlace | None,
                      other: HandPlace | None) -> np.ndarray:  # fmt: skip
    """A slot's 12 trajectory values (layout 2)."""
    motion = place.palm - before.palm if before else np.zeros(2)
    growth = place.size - before.size if before else 0.0
    beside = other.palm - place.palm if other else np.zeros(2)
    return np.concatenate(
        [place.wrist, place.palm, [place.size], place.turn, motion, [growth], beside]
    )


def frame_vector(
    hands: list, slots: list[int | None], width: int, height: int, max_hands: int, layout: int,
    before: list[HandPlace | None],
) -> tuple[np.ndarray, list[HandPlace | None]]:  # fmt: skip
    """One frame's vector (max_hands slots) and each slot's place (for the next frame's
    motion). `hands` are the tracker's, `slots` where each goes (`slot_order`)."""
    size = slot_size(layout)
    vector = np.zeros((max_hands, size), np.float32)
    places: list[HandPlace | None] = [None] * max_hands
    for hand, slot in zip(hands, slots):
        if slot is None:
            continue
        vector[slot, :POSE] = pose_values(
            hand.landmarks, hand.world, hand.right, width, height, upright=layout == 2
        )
        places[slot] = hand_place(hand.landmarks, width, height)
    if layout == 2:
        for slot, place in enumerate(places):
            if place is not None:
                other = next((p for i, p in enumerate(places) if p and i != slot), None)
                vector[slot, POSE:] = trajectory_values(place, before[slot], other)
    return vector.ravel(), places


def feature_layout(max_hands: int, layout: int) -> FeatureLayout:
    """Layout 2's groups pose and trajectory (layout 1: pose), presence and handedness kept
    whatever is chosen; its mirror: x negated (positions, motions, landmarks, world
    landmarks, the turn's sine), the right hand's slot and the left's swapped, and the
    probability of a right hand p of a present hand made 1 - p (presence - p, so an empty
    slot stays all zeros)."""
    size = slot_size(layout)
    groups = {"pose": [], "trajectory": []}
    kept = []
    for slot in range(max_hands):
        base = slot * size
        kept += [base, base + 1]
        groups["pose"] += range(base + 2, base + POSE)
        if layout == 2:
            groups["trajectory"] += range(base + POSE, base + size)
    mirror = np.zeros((max_hands * size, max_hands * size), np.float32)
    negated = {2 + 3 * k for k in range(21)} | {65 + 3 * k for k in range(21)}
    if layout == 2:
        negated |= {POSE + i for i in (0, 2, 6, 7, 10)}  # wrist x, palm x, sin, motion x, other x
    for slot in range(max_hands):
        target = {0: 1, 1: 0}.get(slot, slot) if max_hands >= 2 else slot
        src, dst = slot * size, target * size
        for value in range(size):
            mirror[src + value, dst + value] = -1.0 if value in negated else 1.0
        mirror[src + 0, dst + 1] = 1.0  # right = presence - right
        mirror[src + 1, dst + 1] = -1.0
    name = f"hands layout {layout}: " + ("pose and trajectory" if layout == 2 else "pose only")
    return FeatureLayout(
        {g: np.array(c, np.int64) for g, c in groups.items() if c},
        np.array(kept, np.int64),
        mirror,
        name,
    )


def layout_of(spec: dict) -> FeatureLayout:
    """The feature layout of a hands cache's extractor spec (caches of 0.1: layout 1)."""
    return feature_layout(spec["max_hands"], spec.get("layout", 1))
