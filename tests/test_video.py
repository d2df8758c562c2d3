from __future__ import annotations

import numpy as np
import pytest

from gesture_cache.errors import ConfigError
from gesture_cache.video import (
    CROP_SIZE,
    Layout,
    VideoError,
    clip_mask,
    decode,
    frame_indices,
    make_preprocessing,
    probe,
    to_clips,
)
from tests.helpers import write_video

C3D = make_preprocessing("c3d")


def test_layout_counts_clips():
    assert Layout().num_clips == 8
    assert Layout(frames=32, clip_stride=8).num_clips == 3
    with pytest.raises(ConfigError, match="--clip-stride"):
        Layout(frames=40, clip_stride=16)
    with pytest.raises(ConfigError, match="--frames"):
        Layout(frames=8)


def test_short_video_is_centred_and_edge_padded():
    indices = frame_indices(10, Layout(frames=16))
    assert indices.tolist() == [0, 0, 0] + list(range(10)) + [9, 9, 9]


def test_zero_pad_marks_padding():
    indices = frame_indices(10, Layout(frames=16, pad="zero"))
    assert (indices == -1).sum() == 6 and indices[3] == 0


def test_long_video_is_subsampled_uniformly():
    indices = frame_indices(1000, Layout(frames=128))
    assert len(indices) == 128 and indices[0] == 0 and indices[-1] == 999
    assert np.all(np.diff(indices) > 0)


def test_uniform_sampling_stretches_short_videos():
    indices = frame_indices(20, Layout(frames=32, sampling="uniform"))
    assert len(indices) == 32 and indices[0] == 0 and indices[-1] == 19
    assert clip_mask(20, Layout(frames=32, sampling="uniform")).all()


def test_clip_is_valid_when_half_its_frames_are_real():
    layout = Layout(frames=128)  # 8 clips
    mask = clip_mask(40, layout)  # real frames 44..83
    assert mask.tolist() == [False, False, False, True, True, False, False, False]
    # 48 frames sit at 40..87: clips 2 and 5 hold exactly 8 real frames each
    assert clip_mask(48, layout).tolist() == [False, False, True, True, True, True, False, False]


def test_a_one_frame_video_keeps_one_valid_clip():
    mask = clip_mask(1, Layout(frames=128))
    assert mask.sum() == 1


def test_to_clips_zero_pad_is_black():
    frames = np.full((4, 112, 112, 3), 200, np.uint8)
    clips, mask = to_clips(frames, Layout(frames=16, pad="zero"))
    assert clips.shape == (1, 16, 112, 112, 3)
    assert clips[0, 0].max() == 0 and clips[0, 6].min() == 200
    edge, _ = to_clips(frames, Layout(frames=16))
    assert edge.min() == 200


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
