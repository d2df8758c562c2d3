"""The temporal layout: dense clips streamed through a ring buffer, and the seed's layouts."""

from __future__ import annotations

import numpy as np
import pytest

from gesture_cache.common.errors import ConfigError
from gesture_cache.video.clips import (
    Layout,
    clip_valid,
    dense_starts,
    fixed_clips,
    frame_indices,
    stream_clips,
)


def numbered_frames(n: int):
    """Frames whose every pixel holds its index (mod 256), yielded one at a time."""
    for i in range(n):
        yield np.full((2, 2, 3), i % 256, np.uint8)


def test_795_frames_at_stride_8_give_99_clips_ending_on_the_last_frame():
    starts = dense_starts(795, 8)
    assert len(starts) == 99
    assert starts[:3].tolist() == [0, 8, 16] and starts[-2:].tolist() == [776, 779]
    streamed = list(stream_clips(numbered_frames(795), 8))
    assert [s for s, _ in streamed] == starts.tolist()
    for start, clip in streamed:  # 16 consecutive frames from `start`
        assert clip[:, 0, 0, 0].tolist() == [(start + i) % 256 for i in range(16)]


@pytest.mark.parametrize("n, stride", [(16, 8), (17, 8), (24, 8), (100, 7), (40, 64)])
def test_dense_clips_start_at_0_and_end_on_the_last_frame(n, stride):
    starts = [s for s, _ in stream_clips(numbered_frames(n), stride)]
    assert starts == dense_starts(n, stride).tolist()
    assert starts[0] == 0 and starts[-1] == n - 16
    covered = np.zeros(n, bool)
    for start in starts:
        covered[start : start + 16] = True
    assert covered.all() or stride > 16  # a stride past the clip length skips frames


def test_a_recording_shorter_than_a_clip_gives_one_padded_clip():
    ((start, clip),) = stream_clips(numbered_frames(5), 8)
    assert start == 0 and clip.shape[0] == 16
    assert clip[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4] + [4] * 11
    ((_, black),) = stream_clips(numbered_frames(5), 8, pad="zero")
    assert black[5:].max() == 0 and black[4].min() == 4


def test_the_ring_buffer_holds_one_clip_of_frames():
    import weakref

    alive = []

    def frames():
        for i in range(200):
            frame = np.full((2, 2, 3), i % 256, np.uint8)
            alive.append(weakref.ref(frame))
            yield frame

    most = 0
    for _ in stream_clips(frames(), 8):
        most = max(most, sum(ref() is not None for ref in alive))
    assert most <= 17  # the ring's 16 frames, and the one being read


def test_layout_settings_are_checked():
    assert Layout().sampling == "dense" and Layout().clip_stride == 8
    with pytest.raises(ConfigError, match="--clip-stride"):
        Layout("pad", 16, frames=40)
    with pytest.raises(ConfigError, match="--frames"):
        Layout("pad", 16, frames=8)
    with pytest.raises(ConfigError, match="--frames only applies"):
        Layout("dense", 8, frames=32)
    with pytest.raises(ConfigError, match="--clip-stride 0"):
        Layout("dense", 0)


def test_short_video_is_centred_and_edge_padded():
    indices = frame_indices(10, Layout("pad", 16, frames=16))
    assert indices.tolist() == [0, 0, 0] + list(range(10)) + [9, 9, 9]


def test_zero_pad_marks_padding():
    indices = frame_indices(10, Layout("pad", 16, frames=16, pad="zero"))
    assert (indices == -1).sum() == 6 and indices[3] == 0


def test_long_video_is_subsampled_uniformly():
    indices = frame_indices(1000, Layout("pad", 16, frames=128))
    assert len(indices) == 128 and indices[0] == 0 and indices[-1] == 999
    assert np.all(np.diff(indices) > 0)


def test_uniform_sampling_stretches_short_videos():
    layout = Layout("uniform", 16, frames=32)
    indices = frame_indices(20, layout)
    assert len(indices) == 32 and indices[0] == 0 and indices[-1] == 19
    assert clip_valid(20, layout).all()


def test_clip_is_valid_when_half_its_frames_are_real():
    layout = Layout("pad", 16, frames=128)  # 8 clips
    assert clip_valid(40, layout).tolist() == [0, 0, 0, 1, 1, 0, 0, 0]
    # 48 frames sit at 40..87: clips 2 and 5 hold exactly 8 real frames each
    assert clip_valid(48, layout).tolist() == [0, 0, 1, 1, 1, 1, 0, 0]
    assert clip_valid(1, layout).sum() == 1  # a one-frame video keeps one valid clip


def test_fixed_clips_zero_pad_is_black():
    frames = np.full((4, 112, 112, 3), 200, np.uint8)
    starts, clips, valid = fixed_clips(frames, Layout("pad", 16, frames=16, pad="zero"))
    assert clips.shape == (1, 16, 112, 112, 3) and starts.tolist() == [0]
    assert clips[0, 0].max() == 0 and clips[0, 6].min() == 200
    _, edge, _ = fixed_clips(frames, Layout("pad", 16, frames=16))
    assert edge.min() == 200
