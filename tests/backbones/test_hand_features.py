"""The hands backbone's feature layout on real photos: the trajectory sees where a hand is,
how large and how turned while the pose does not; the mirror matrix is what a mirrored frame
gives; layout 1 (caches of 0.1) stays as it was; training chooses groups and refuses them
where there are none."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from gesture_cache.backbones.hands.backbone import Hands
from gesture_cache.backbones.hands.features import POSE, feature_layout, slot_size
from gesture_cache.backbones.hands.options import Options
from gesture_cache.common.errors import ConfigError
from gesture_cache.sources.hand_motions import background, place
from gesture_cache.train.config import TrainConfig, make_train_config
from gesture_cache.train.fit import train
from tests.fixtures.hands.make_reference import frames_of
from tests.helpers import HANDS

needs_hands = pytest.mark.skipif(not HANDS.is_dir(), reason="../shared/fixtures/hands absent")
SLOT = slot_size(2)
WRIST_X, PALM_X, SIZE, COS, SIN = 128, 130, 132, 133, 134


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return cv2.imread(str(HANDS / "nocurl.jpg"))


def features(frame: np.ndarray, max_hands: int = 2, layout: int = 2) -> np.ndarray:
    return next(Hands(Options("full", max_hands=max_hands, hands_layout=layout)).stream([frame]))


def shown(photo: np.ndarray, x=0.5, y=0.5, height=0.5, degrees=0.0) -> np.ndarray:
    return place(photo, background(np.random.default_rng(0)), x, y, height, degrees)


@needs_hands
def test_turning_a_hand_changes_its_turn_and_not_its_pose(photo):
    upright, turned = features(shown(photo)), features(shown(photo, degrees=-30))
    slot = 0 if upright[0] else SLOT  # whichever hand MediaPipe calls it, in both frames
    assert upright[slot] == turned[slot] == 1
    pose = slice(slot + 2, slot + POSE)
    assert np.abs(upright[pose] - turned[pose]).max() < 0.15 * np.abs(upright[pose]).max()
    angle = lambda f: np.degrees(np.arctan2(f[slot + SIN], f[slot + COS]))  # noqa: E731
    assert angle(turned) - angle(upright) == pytest.approx(30, abs=5)  # clockwise as shown


@needs_hands
def test_where_a_hand_is_and_its_size_are_in_frame_heights(photo):
    left, right = features(shown(photo, x=0.3)), features(shown(photo, x=0.7, height=0.6))
    slot = 0 if left[0] else SLOT
    moved = right[slot + PALM_X] - left[slot + PALM_X]
    assert moved == pytest.approx(0.4 * 480 / 360, abs=0.03)  # 0.4 of the width, in heights
    assert right[slot + SIZE] / left[slot + SIZE] == pytest.approx(1.2, rel=0.1)


@needs_hands
@pytest.mark.parametrize("max_hands", [1, 2])
def test_the_mirror_matrix_gives_what_a_mirrored_frame_gives(max_hands):
    # a hand whose handedness MediaPipe is sure of (the photos' are near 0.5 either way)
    frame = frames_of(HANDS / "fingers-lq.gif")[5]
    plain, flipped = features(frame, max_hands), features(cv2.flip(frame, 1), max_hands)
    mirrored = plain @ feature_layout(max_hands, 2).mirror
    slot = 0 if mirrored[0] else SLOT
    assert flipped[slot] == 1
    if max_hands == 2:  # the other slot is empty: the hand moved slots as the matrix did
        assert not flipped[SLOT - slot : 2 * SLOT - slot].any()
    assert abs(flipped[slot + 1] - mirrored[slot + 1]) < 0.1  # handedness, left <-> right
    trajectory = slice(slot + WRIST_X, slot + 135)  # wrist, palm, size, turn
    np.testing.assert_allclose(flipped[trajectory], mirrored[trajectory], atol=0.03)
    pose = slice(slot + 2, slot + POSE)
    assert np.abs(flipped[pose] - mirrored[pose]).max() < 0.2 * np.abs(mirrored[pose]).max()


@needs_hands
def test_layout_1_is_the_pose_of_gesture_cache_0_1(photo):
    frame = shown(photo, degrees=25)
    old, new = features(frame, layout=1), features(frame)
    assert old.shape == (2 * POSE,) and new.shape == (2 * SLOT,)
    slot = 0 if old[0] else 1
    np.testing.assert_array_equal(
        old[slot * POSE : slot * POSE + 2], new[slot * SLOT : slot * SLOT + 2]
    )
    turned_pose = old[slot * POSE + 2 : (slot + 1) * POSE]
    assert np.abs(turned_pose - new[slot * SLOT + 2 : slot * SLOT + POSE]).max() > 0.2  # turned


def test_the_groups_cover_every_value_once_and_the_mirror_is_its_own_inverse():
    for max_hands in (1, 2, 3):
        layout = feature_layout(max_hands, 2)
        columns = np.concatenate([layout.kept, *layout.groups.values()])
        assert sorted(columns) == list(range(max_hands * SLOT))
        twice = layout.mirror @ layout.mirror
        present = np.zeros(max_hands * SLOT)  # a present hand of handedness p in each slot
        present[::SLOT], present[1::SLOT] = 1, 0.3
        np.testing.assert_allclose(present @ twice, present, atol=1e-6)
    assert set(feature_layout(2, 1).groups) == {"pose"}


def test_feature_settings_are_checked_before_any_data(tmp_path):
    with pytest.raises(ConfigError, match="group dropout|group_dropout"):
        TrainConfig(group_dropout=1.0)
    with pytest.raises(ConfigError, match="a group named twice"):
        make_train_config({}, {"features": "pose,pose"})
    with pytest.raises(ConfigError, match="swipe_left mirrors to swipe_right, but"):
        make_train_config({}, {"mirror": "swipe_left=swipe_right,swipe_right=swipe_up"})
    assert make_train_config({}, {"mirror": "a=b,c=c"}).mirror == {"a": "b", "b": "a", "c": "c"}


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"features": ("pose",)}, "--features: the cache's .* features are one block"),
        ({"mirror": {"wave": "wave"}}, "--mirror: the cache's .* features are one block"),
        ({"group_dropout": 0.5}, "--group-dropout: the cache's .* features are one block"),
    ],
)
def test_features_of_one_block_refuse_groups_mirror_and_dropout(
    small_cache, tmp_path, setting, message
):
    with pytest.raises(ConfigError, match=message):
        train(small_cache, tmp_path / "run", TrainConfig(epochs=1, **setting))
    assert not (tmp_path / "run").exists()
