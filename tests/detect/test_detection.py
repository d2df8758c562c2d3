"""`detect` as a command: outputs checked against every input, bad settings and truth files
refused before any work, live sources that fail, detection from a cache."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from gesture_cache.cache.manifest import read_manifest
from gesture_cache.cli.main import main
from gesture_cache.common.errors import ConfigError, GestureCacheError
from gesture_cache.deploy.settings import DetectSettings
from gesture_cache.detect.detection import output_stems
from gesture_cache.detect.detector import load_detector
from gesture_cache.detect.live import detect_live
from gesture_cache.extract.extractor import extractor_from_spec
from gesture_cache.train.config import TrainConfig
from gesture_cache.train.fit import train
from tests.helpers import detect_args, run_with_timeout, write_video


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_detect_from_a_cache_scores_against_truth_with_na_labels(detector, tmp_path, capsys):
    out = tmp_path / "d"
    command = detect_args(detector, out, "--cache", str(detector.cache))
    assert main([*command, "--truth", str(detector.truth)]) == 0, capsys.readouterr().err
    saved = json.loads((out / "detection.json").read_text())["scores"]["overall"]
    assert saved["gestures"] == 2 * len(detector.unseen)
    assert saved["levenshtein_accuracy"] >= 0.5 and saved["f1"] >= 0.5, saved
    events = pd.read_csv(out / "events.csv", dtype=str, keep_default_na=False)
    assert set(events["label"]) <= {"NA", "null"} and len(events)
    # evaluate-detection reads the same files back as text and finds the same scores
    capsys.readouterr()
    assert main(["evaluate-detection", str(out / "events.csv"), str(detector.truth), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["overall"] == saved
    # every recording is rec.avi: one timeline each, none overwritten
    assert len(list(out.glob("*.timeline.png"))) == len(detector.unseen)


def test_output_stems_are_unique_for_sources_of_one_name():
    assert output_stems(["a/rec.avi", "b/rec.avi", "c.avi"]) == ["a_rec", "b_rec", "c"]
    assert output_stems(["0", "rtsp://host/cam"]) == ["0", "cam"]
    stems = output_stems(["a_b/rec.avi", "a/b_rec.avi", "x/a_b_rec.avi", "y/a_b_rec.avi"])
    assert len(set(stems)) == 4


def test_render_never_writes_over_its_source(detector, tmp_path, capsys):
    session = write_video(tmp_path / "session.avi", 80)
    before = sha256(session)
    command = ["detect", str(detector.run), str(session), "--out", str(tmp_path)]
    assert main([*command, "--random-weights", "0", "--render"]) == 0, capsys.readouterr().err
    assert sha256(session) == before
    rendered = cv2.VideoCapture(str(tmp_path / "session.detected.mp4"))
    assert int(rendered.get(cv2.CAP_PROP_FRAME_COUNT)) == 80


@pytest.mark.parametrize("clash", ["truth", "frames", "cache"])
def test_every_output_is_checked_against_every_input(detector, tmp_path, capsys, clash):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(20):
        cv2.imwrite(str(frames / f"{i:03d}.png"), np.full((48, 64, 3), i, np.uint8))
    out = tmp_path / "out"
    out.mkdir()
    truth = out / "events.csv"  # the truth file would be replaced by the events
    truth.write_text("file_path,action,start_frame,end_frame\n../frames,NA,0,5\n")
    if clash == "truth":
        command = ["detect", str(detector.run), str(frames), "--out", str(out)]
        command += ["--truth", str(truth)]
    elif clash == "frames":  # timelines would become frames of the folder read
        command = ["detect", str(detector.run), str(frames), "--out", str(frames / "sub")]
    else:  # the cache read is an input folder too
        command = ["detect", str(detector.run), detector.unseen[0], "--cache", str(detector.cache)]
        command += ["--out", str(detector.cache)]
    before = sorted(p.name for p in frames.iterdir())
    cache_before = sorted(p.name for p in detector.cache.iterdir())
    weights = [] if clash == "cache" else ["--random-weights", "0"]
    assert main([*command, *weights]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and err.count("\n") == 1, err
    assert sorted(p.name for p in frames.iterdir()) == before
    assert truth.read_text().startswith("file_path")
    assert sorted(p.name for p in detector.cache.iterdir()) == cache_before


def test_nan_speed_is_one_line_and_no_hang(detector, tmp_path, capsys):
    command = detect_args(detector, tmp_path / "d", "--cache", str(detector.cache))
    assert main([*command, "--speed", "nan"]) == 2
    err = capsys.readouterr().err
    assert "argument --speed: 'nan'" in err and err.count("\n") == 1, err
    assert main(["train", str(detector.cache), "--out", str(tmp_path / "r"), "--lr", "inf"]) == 2
    assert not (tmp_path / "r").exists() and not (tmp_path / "d").exists()


def test_a_live_reader_that_fails_ends_detection_with_its_message(detector, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(40):
        cv2.imwrite(str(frames / f"{i:03d}.png"), np.full((48, 64, 3), 3 * i, np.uint8))
    (frames / "030.png").write_bytes(b"not a png")  # fails when the reader reaches it
    spec = read_manifest(detector.cache)["extractor"]
    run_detector = load_detector(detector.run)
    extractor = extractor_from_spec(spec, random_seed=0)
    result = run_with_timeout(
        lambda: detect_live(run_detector, extractor, str(frames), DetectSettings(), speed=50)
    )
    error = result.get("error")
    assert isinstance(error, GestureCacheError) and "030.png" in str(error), result
    result = run_with_timeout(
        lambda: detect_live(
            run_detector, extractor, str(frames), DetectSettings(), speed=float("nan")
        )
    )
    assert isinstance(result.get("error"), ConfigError), result


def test_live_detection_reads_a_folder_of_frames(detector, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(40):
        cv2.imwrite(str(frames / f"{i:03d}.jpg"), np.full((48, 64, 3), 3 * i, np.uint8))
    spec = read_manifest(detector.cache)["extractor"]
    extractor = extractor_from_spec(spec, random_seed=0)
    live = detect_live(load_detector(detector.run), extractor, str(frames), DetectSettings(), 50)
    assert live.n_frames == 40 and len(live.clip_start) >= 1


def test_a_window_too_large_for_memory_is_refused_before_any_file(detector, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="--window-clips 100000.*half of this machine's memory"):
        train(detector.cache, run, TrainConfig(window_clips=100000, epochs=1))
    with pytest.raises(ConfigError, match="more than the 64 MB --memory-limit allows"):
        train(detector.cache, run, TrainConfig(batch_size=4096, memory_limit_mb=64, epochs=1))
    assert not run.exists()


def test_a_window_step_longer_than_the_recordings_warns(detector, tmp_path, caplog):
    config = TrainConfig(window_clips=2, window_step=50, epochs=1, units=(4,), dense=0)
    train(detector.cache, tmp_path / "run", config)
    assert "spans 51 clips, more than 10 of the 10 recordings" in caplog.text


def test_a_bad_truth_file_is_refused_before_any_detection(detector, tmp_path, capsys):
    truth = tmp_path / "truth.csv"
    truth.write_text(f"file_path,action,start_frame,end_frame\n{detector.unseen[0]},jump,0,5\n")
    out = tmp_path / "d"
    command = detect_args(detector, out, "--cache", str(detector.cache), "--truth", str(truth))
    assert main(command) == 2
    assert "label 'jump' is not one the run knows" in capsys.readouterr().err
    assert not out.exists()
    truth.write_text("file_path,action,start_frame,end_frame\nnot/there.avi,NA,0,5\n")
    assert main(command) == 2
    assert "not one of the sources" in capsys.readouterr().err and not out.exists()


def test_a_camera_index_is_ascii_digits_and_natural_order_never_crashes():
    from gesture_cache.detect.live import is_camera
    from gesture_cache.video.decode import natural_key

    assert is_camera("0") and not is_camera("٣") and not is_camera("²")
    assert sorted(["f10.jpg", "f2.jpg", "²", "f٣.jpg"], key=natural_key)[:2] == ["f2.jpg", "f٣.jpg"]


def test_detect_from_a_cache_given_a_file_says_sources_are_recording_ids(
    detector, tmp_path, capsys
):
    video = write_video(tmp_path / "v.avi", 40)
    command = ["detect", str(detector.run), str(video), "--cache", str(detector.cache)]
    assert main([*command, "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "each SOURCE is a recording id of the cache" in err and "s00/rec.avi" in err
