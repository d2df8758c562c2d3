"""Decoding: files and folders of frames, preprocessing, 16-bit frames by one fixed rule."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from gesture_cache.backbones.c3d.preprocessing import CROP_SIZE, make_preprocessing
from gesture_cache.video.decode import (
    DEFAULT_FOLDER_FPS,
    Frames,
    VideoError,
    decode,
    probe,
    source_sha256,
)
from tests.helpers import write_video

C3D = make_preprocessing("c3d")


@pytest.mark.parametrize(
    ("width", "height", "grey"), [(17, 9, False), (1920, 1080, False), (64, 48, True)]
)
def test_decode_odd_large_and_grey_videos(tmp_path, width, height, grey):
    path = write_video(tmp_path / "v.avi", 5, width, height, grey=grey)
    frames, info = decode(path, C3D)
    assert frames.shape == (5, CROP_SIZE, CROP_SIZE, 3) and frames.dtype == np.uint8
    # OpenCV's encoders round odd sizes down to even ones (17x9 is stored as 16x8)
    assert (info.width // 2, info.height // 2, info.decoded_frames) == (width // 2, height // 2, 5)


def test_decode_resizes_and_crops_as_documented(tmp_path):
    import cv2

    path = write_video(tmp_path / "v.avi", 3, 200, 150)
    frames, _ = decode(path, C3D)
    capture = cv2.VideoCapture(str(path))
    _, first = capture.read()
    expected = cv2.resize(first, (171, 128), interpolation=cv2.INTER_LINEAR)[8:120, 29:141]
    np.testing.assert_array_equal(frames[0], expected)
    reference, _ = decode(path, make_preprocessing("reference"))
    np.testing.assert_array_equal(
        reference[0], cv2.resize(first, (112, 112), interpolation=cv2.INTER_AREA)
    )


def test_container_that_overstates_its_frames(shared_videos):
    info = probe(shared_videos / "tree.avi")
    assert info.claimed_frames == 444 and info.decoded_frames == 68


def test_bad_files_raise_with_a_reason(tmp_path):
    with pytest.raises(VideoError) as missing:
        decode(tmp_path / "nope.avi", C3D)
    assert missing.value.reason == "missing"
    (tmp_path / "empty.avi").write_bytes(b"")
    with pytest.raises(VideoError) as empty:
        decode(tmp_path / "empty.avi", C3D)
    assert empty.value.reason == "empty_file"
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 50)
    with pytest.raises(VideoError) as text:
        decode(tmp_path / "text.mp4", C3D)
    assert text.value.reason in ("unreadable", "no_frames")


def write_frames(folder, n: int, suffix: str = ".png"):
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        frame = np.full((48, 64, 3), i * 10, np.uint8) + rng.integers(0, 5, (48, 64, 3), np.uint8)
        cv2.imwrite(str(folder / f"frame{i}{suffix}"), frame)
    return folder


def test_a_folder_of_frames_is_a_recording_in_natural_order(tmp_path):
    folder = write_frames(tmp_path / "rec", 12)
    (folder / "notes.txt").write_text("not a frame")
    frames, info = decode(folder, None)
    assert info.decoded_frames == info.claimed_frames == 12 and info.fps == DEFAULT_FOLDER_FPS
    means = frames.reshape(12, -1).mean(axis=1)
    assert np.all(np.diff(means) > 0)  # frame2 before frame10
    assert probe(folder, fps=12.5).fps == 12.5
    before = source_sha256(folder)
    write_frames(tmp_path / "rec", 13)
    assert source_sha256(folder) != before


def test_an_unreadable_frame_names_the_file(tmp_path):
    folder = write_frames(tmp_path / "rec", 5, ".jpg")
    (folder / "frame3.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(VideoError, match="frame3.jpg: cannot be read") as error:
        decode(folder, make_preprocessing("c3d"))
    assert error.value.reason == "unreadable_image"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VideoError, match="holds no"):
        Frames(empty, None)


def test_16_bit_frames_convert_by_one_fixed_rule(tmp_path):
    folder = tmp_path / "frames16"
    folder.mkdir()
    for i in range(4):
        frame = np.full((32, 40, 3), 128 * 257, np.uint16)
        frame[0, 0] = 65535 if i % 2 else 20000  # each frame's own maximum differs
        cv2.imwrite(str(folder / f"{i}.png"), frame)
    frames = list(Frames(folder, None))
    assert [int(f[10, 10, 0]) for f in frames] == [128] * 4
    assert int(frames[1][0, 0, 0]) == 255
