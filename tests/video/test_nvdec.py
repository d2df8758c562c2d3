"""Decoding on the GPU's video engine (video/nvdec.py): which decoder `--decoder` picks and
says, and, where NVDEC runs, the same frames as OpenCV's within the colour conversion's
rounding, decoders reused across recordings, and what NVDEC cannot open left to OpenCV."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from gesture_cache.cli.main import main
from gesture_cache.common.errors import ConfigError
from gesture_cache.video.decode import Frames
from gesture_cache.video.nvdec import Nvdec, chosen_decoder, nvdec_unavailable

# Two decoders' YUV -> RGB conversions (rounding, chroma upsampling) of one decoded picture:
# the bound a frame's mean absolute difference must stay within, in levels of 255.
MEAN_LEVELS = 2.0


@pytest.fixture
def without_pynvvideocodec(monkeypatch):
    """This process as on a machine without PyNvVideoCodec installed."""
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", None)  # import raises ImportError
    nvdec_unavailable.cache_clear()
    yield
    nvdec_unavailable.cache_clear()


def test_auto_decodes_with_opencv_where_nvdec_cannot_run_and_says_why(without_pynvvideocodec):
    nvdec, decoding = chosen_decoder("auto")
    assert nvdec is None
    assert decoding == (
        "OpenCV on the CPU; NVDEC unused: PyNvVideoCodec is not installed "
        "(pip install 'gesture_cache[nvdec]')"
    )
    assert chosen_decoder("opencv") == (None, "OpenCV on the CPU (--decoder opencv)")


def test_asking_for_nvdec_where_it_cannot_run_is_refused_naming_the_flag(
    without_pynvvideocodec, tmp_path, synth_csv, capsys
):
    with pytest.raises(ConfigError, match="--decoder nvdec: PyNvVideoCodec is not installed"):
        chosen_decoder("nvdec")
    args = ["extract", str(synth_csv), "--out", str(tmp_path / "c"), "--random-weights", "0"]
    assert main([*args, "--decoder", "nvdec"]) == 2
    assert "--decoder nvdec" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()  # refused before anything was written
    assert main([*args, "--decoder", "nvdec", "--engine", "ray"]) == 2
    assert "goes with --engine local" in capsys.readouterr().err


@pytest.fixture
def nvdec() -> Nvdec:
    if why_not := nvdec_unavailable():
        pytest.skip(f"NVDEC cannot decode here: {why_not}")
    return Nvdec()


@pytest.fixture(scope="module")
def h264_videos(tmp_path_factory, shared_videos) -> list:
    """Megamind.avi (MPEG-4 part 2) re-encoded as H.264, at two sizes."""
    if not shutil.which("ffmpeg"):
        pytest.skip("ffmpeg is not installed")
    folder = tmp_path_factory.mktemp("h264")
    videos = []
    for size in ("720:528", "320:240"):
        path = folder / f"megamind_{size.replace(':', 'x')}.mp4"
        subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-i", str(shared_videos / "Megamind.avi"),
             "-vf", f"scale={size}", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)],
            check=True,
        )  # fmt: skip
        videos.append(path)
    return videos


def test_nvdec_gives_opencvs_frames_within_the_colour_conversion(nvdec, h264_videos):
    for video in [*h264_videos, h264_videos[0]]:  # one decoder a thread, reconfigured
        on_gpu = Frames(video, None, nvdec=nvdec)
        on_cpu = Frames(video, None)
        pairs = list(zip(on_gpu, on_cpu, strict=True))  # as many frames from each
        differences = [np.abs(g.astype(int) - c.astype(int)).mean() for g, c in pairs]
        assert max(differences) <= MEAN_LEVELS, (video.name, max(differences))
        assert on_gpu.probe.claimed_frames == on_cpu.probe.claimed_frames
        assert on_gpu.probe.fps == pytest.approx(on_cpu.probe.fps, rel=1e-3)
    assert nvdec.refused == {}


def test_what_nvdec_cannot_open_is_decoded_by_opencv_and_counted(nvdec, shared_videos):
    tree = shared_videos / "tree.avi"  # Cinepak: no NVDEC decodes it
    frames = np.stack(list(Frames(tree, None, nvdec=nvdec)))
    assert np.array_equal(frames, np.stack(list(Frames(tree, None))))
    assert sum(nvdec.refused.values()) == 1
