"""Schema 2: dense clips of whole recordings, annotated segments, frame folders, windows chosen
at training time, and schema-1 caches still working."""

from __future__ import annotations

import shutil

import cv2
import keras
import numpy as np
import pandas as pd
import pytest

from gesture_cache import open_cache
from gesture_cache.backbones.c3d.network import build_c3d, randomize_weights
from gesture_cache.cache.manifest import read_failures
from gesture_cache.cache.merge import merge_caches
from gesture_cache.cache.verify import verify_cache
from gesture_cache.cli.main import main
from gesture_cache.extract.config import ExtractConfig
from gesture_cache.extract.extraction import build_cache
from gesture_cache.train.config import TrainConfig
from gesture_cache.train.fit import train
from gesture_cache.train.metrics import evaluate_run
from tests.helpers import clips_of, write_v1_cache, write_video

TINY = {"epochs": 2, "patience": 2, "units": (4,), "dense": 0}


@pytest.mark.slow
def test_a_long_recording_gives_a_clip_every_8_frames_each_c3d_of_its_16_frames(tmp_path):
    """The whole extraction, end to end: clip starts as test_clips counts them for 795 frames
    (here 131 frames, 16 clips: C3D on a CPU costs ~0.6 s a clip), the last aligned to the
    last frame, and each clip's features those of its own 16 frames."""
    video = write_video(tmp_path / "long.avi", 131, 32, 24)
    (tmp_path / "meta.csv").write_text("file_path,action\nlong.avi,wave\n")
    out = tmp_path / "c"
    build_cache(tmp_path / "meta.csv", out, ExtractConfig(random_weights=0, batch_clips=5))
    cache = open_cache(out)
    assert cache.clip_start.tolist() == [*range(0, 113, 8), 115]
    # independently: decode, resize, subtract the mean, crop, plain network to fc7
    capture = cv2.VideoCapture(str(video))
    frames = []
    while (read := capture.read())[0]:
        frames.append(cv2.resize(read[1], (171, 128)).astype(np.float32))
    frames = (np.stack(frames) - np.array([90.25, 97.66, 101.41], np.float32))[:, 8:120, 29:141]
    network = build_c3d()
    randomize_weights(network, 0)
    fc7 = keras.Model(network.inputs, network.get_layer("fc7").output)
    chosen = [0, 7, 15]  # the first, one across a batch boundary (5 clips a batch), the last
    starts = cache.clip_start[chosen]
    expected = fc7.predict(np.stack([frames[s : s + 16] for s in starts]), verbose=0)
    np.testing.assert_allclose(
        cache.features[chosen].astype(np.float32), expected, rtol=1e-2, atol=2e-3
    )


@pytest.fixture(scope="module")
def annotated(tmp_path_factory):
    """One 600-frame recording annotated with 6 segments of 3 gestures, plus broken rows."""
    root = tmp_path_factory.mktemp("annotated")
    write_video(root / "session.avi", 600, 32, 24)
    rows = [
        ("session.avi", "wave", 10, 70),
        ("session.avi", "swipe", 100, 160),
        ("session.avi", "click", 200, 250),
        ("session.avi", "wave", 300, 370),
        ("session.avi", "swipe", 400, 450),
        ("session.avi", "click", 500, 580),
        ("session.avi", "wave", 560, 700),  # past the end: a row failure
        ("session.avi", "click", 90, 80),  # start >= end: a row failure
        ("session.avi", "", 120, 130),  # no label
    ]
    table = pd.DataFrame(rows, columns=["file_path", "action", "start_frame", "end_frame"])
    table.to_csv(root / "segments.csv", index=False)
    out = root / "cache"
    summary = build_cache(
        root / "segments.csv", out, ExtractConfig(random_weights=0, clip_stride=16)
    )
    return root, out, summary


@pytest.mark.slow
def test_an_annotated_recording_is_extracted_once_with_its_segments(annotated):
    root, out, summary = annotated
    cache = open_cache(out)
    assert summary.cached == 1 and cache.manifest["recordings"] == 1
    assert cache.manifest["clips"] == len(cache.clip_start) == 38  # 0, 16, ..., 576, and 584
    segments = cache.segments
    assert list(zip(segments["label"], segments["start_frame"], segments["end_frame"])) == [
        ("wave", 10, 70),
        ("swipe", 100, 160),
        ("click", 200, 250),
        ("wave", 300, 370),
        ("swipe", 400, 450),
        ("click", 500, 580),
    ]
    failures = read_failures(out)
    assert {r["row"]: r["reason"] for r in failures.values()} == {
        7: "bad_segment",
        8: "bad_row",
        9: "empty_label",
    }
    assert "outside session.avi (600 frames)" in failures["session.avi#7"]["message"]
    assert summary.overlaps == 0 and verify_cache(out).problems == []
    again = build_cache(root / "segments.csv", out, ExtractConfig(random_weights=0, clip_stride=16))
    assert again.cached == 0 and again.skipped == 1 and sum(again.failed.values()) == 0


@pytest.mark.slow
def test_windows_change_without_extraction(annotated, tmp_path, monkeypatch):
    _, out, _ = annotated

    def no_c3d(*args, **kwargs):
        raise AssertionError("train built C3D")

    monkeypatch.setattr("gesture_cache.backbones.c3d.backbone.build_c3d", no_c3d)
    for flags in (
        [],
        ["--window-clips", "4"],
        ["--window-clips", "8", "--window-sampling", "random"],
        ["--window-clips", "3", "--window-step", "2", "--window-sampling", "center"],
    ):
        run = tmp_path / f"run{len(flags)}"
        command = ["train", str(out), "--out", str(run), "--epochs", "2", "--units", "4", *flags]
        assert main(command) == 0, flags
        config = pd.read_json(run / "config.json", typ="series")
        clips = int(flags[1]) if flags else 8
        assert config["window"]["clips"] == clips
        assert len(pd.read_csv(run / "split.csv")) == 6


@pytest.mark.slow
def test_background_samples_cover_what_no_segment_does(annotated, tmp_path):
    from gesture_cache.data.samples import cache_samples

    _, out, _ = annotated
    samples = cache_samples(open_cache(out), background=True)
    background = samples.labels == "no_gesture"
    assert background.sum() >= 4 and (~background).sum() == 6
    result = train(out, tmp_path / "run", TrainConfig(**TINY, background=True, test_size=0.3))
    assert "no_gesture" in result.metrics["classes"]


def test_time_segments_and_frame_folders(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        cv2.imwrite(str(folder / f"img{i}.jpg"), rng.integers(0, 255, (24, 32, 3), np.uint8))
    (tmp_path / "meta.csv").write_text(
        "file_path,action,start_time,end_time,fps\n"
        "frames,wave,0.0,0.5,20\n"
        "frames,click,1.0,2.0,20\n"
    )
    out = tmp_path / "c"
    summary = build_cache(
        tmp_path / "meta.csv", out, ExtractConfig(random_weights=0, clip_stride=16)
    )
    assert summary.cached == 1, read_failures(out)
    cache = open_cache(out)
    assert cache.recordings["n_frames"].tolist() == [40] and cache.recordings["fps"][0] == 20
    assert cache.segments["start_frame"].tolist() == [0, 20]
    assert cache.segments["end_frame"].tolist() == [10, 40]


def test_overlapping_segments_of_different_labels_are_reported(tmp_path, caplog):
    write_video(tmp_path / "v.avi", 60)
    (tmp_path / "meta.csv").write_text(
        "file_path,action,start_frame,end_frame\nv.avi,wave,0,30\nv.avi,click,20,50\n"
    )
    summary = build_cache(
        tmp_path / "meta.csv", tmp_path / "c", ExtractConfig(random_weights=0, clip_stride=32)
    )
    assert summary.overlaps == 1 and "overlap with different labels" in caplog.text


@pytest.mark.slow
def test_a_schema_1_cache_still_trains_evaluates_and_predicts(tmp_path, capsys):
    labels = ["a", "b"] * 8
    v1 = write_v1_cache(tmp_path / "v1", labels)
    assert verify_cache(v1).problems == []
    assert main(["info", str(v1)]) == 0
    out = capsys.readouterr().out
    assert "schema       version 1" in out and "videos       16" in out
    result = train(v1, tmp_path / "run", TrainConfig(**TINY, test_size=0.25, val_size=0))
    assert result.metrics["samples"] == 4
    assert evaluate_run(tmp_path / "run") == result.metrics
    video = write_video(tmp_path / "new.avi", 20)
    code = main(["predict", str(tmp_path / "run"), str(video), "--random-weights", "0", "--json"])
    assert code == 0 and '"label"' in capsys.readouterr().out


def test_merge_refuses_to_mix_schema_versions(tmp_path, small_cache):
    v1 = write_v1_cache(tmp_path / "v1", ["a", "b"])
    with pytest.raises(Exception, match="versions are never mixed"):
        merge_caches([small_cache, v1], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_a_merged_cache_keeps_every_clip_of_its_parts(tmp_path, small_cache):
    part = tmp_path / "part"
    shutil.copytree(small_cache, part)
    merged = merge_caches([part], tmp_path / "merged")
    cache, whole = open_cache(tmp_path / "merged"), open_cache(small_cache)
    assert merged["clips"] == whole.manifest["clips"]
    for recording_id in whole.recordings["recording_id"]:
        np.testing.assert_array_equal(clips_of(cache, recording_id), clips_of(whole, recording_id))
