"""Gesture detection in continuous recordings: events, scores, live sources, bad input."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from gesture_cache.cli.main import main
from gesture_cache.common.errors import ConfigError, RunError
from gesture_cache.deploy.settings import DetectSettings
from gesture_cache.detect.detector import detect_offline, load_detector
from gesture_cache.detect.events import EventTracker
from gesture_cache.detect.live import detect_live
from gesture_cache.detect.scoring import Interval, score_recording
from gesture_cache.extract.extractor import Extractor, extractor_from_spec
from gesture_cache.train.config import TrainConfig
from gesture_cache.train.fit import train
from gesture_cache.train.run_folder import read_run_config
from tests.helpers import WITH_TOY, write_video
from tests.toy_backbone.backbone import Toy
from tests.toy_backbone.options import Options

CLASSES = ["click", "no_gesture", "wave"]


def run_tracker(probabilities: list[list[float]], settings: DetectSettings | None = None) -> list:
    settings = settings or DetectSettings(smoothing=1)
    tracker = EventTracker("r", CLASSES, "no_gesture", settings, half_stride=4, fps=25)
    fired = [
        tracker.update(8 * i + 8, 8 * i + 16, np.array(p)) for i, p in enumerate(probabilities)
    ]
    return tracker.finish(), [f for f in fired if f]


def test_hysteresis_fires_once_per_gesture_and_ends_below_off():
    idle, wave, click = [0.05, 0.9, 0.05], [0.05, 0.05, 0.9], [0.9, 0.05, 0.05]
    middling = [0.05, 0.45, 0.5]  # wave above off (0.4), below on (0.6): no new firing
    events, fired = run_tracker([idle, wave, wave, middling, wave, idle, idle, click, idle])
    assert [(e.label, e.start_frame, e.end_frame) for e in events] == [
        ("wave", 12, 44),
        ("click", 60, 68),
    ]
    assert [(e.label, e.fired_frame) for e in fired] == [("wave", 24), ("click", 72)]


def test_events_of_one_label_closer_than_min_gap_merge():
    idle, wave = [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]
    events, _ = run_tracker([wave, idle, wave], DetectSettings(smoothing=1, min_gap=8))
    assert len(events) == 1 and events[0].end_frame == 28
    events, _ = run_tracker([wave, idle, wave], DetectSettings(smoothing=1, min_gap=0))
    assert len(events) == 2


def test_settings_are_checked():
    with pytest.raises(ConfigError, match="--off"):
        DetectSettings(on=0.3, off=0.5)
    with pytest.raises(ConfigError, match="--smoothing"):
        DetectSettings(smoothing=0)


def test_scores_of_a_recording_by_hand():
    truth = pd.DataFrame(
        {
            "label": ["wave", "click", "wave"],
            "start_frame": [100, 300, 500],
            "end_frame": [140, 340, 540],
        }
    )
    events = pd.DataFrame(
        {
            "label": ["wave", "click", "click", "wave"],
            "start_frame": [104, 150, 298, 600],
            "end_frame": [142, 170, 338, 640],
            "fired_frame": [120, 160, 316, 620],
        }
    )
    result = score_recording(truth, events, n_frames=1000, fps=25)
    # detected wave click click wave vs. true wave click wave: one insertion
    assert result["edit_distance"] == 1 and result["levenshtein_accuracy"] == pytest.approx(2 / 3)
    assert result["true_positives"] == 2 and result["false_firings"] == 2
    assert result["delays_frames"] == [20, 16]
    assert result["background_minutes"] == pytest.approx(880 / 25 / 60)
    assert Interval("a", 0, 10).iou(Interval("a", 5, 15)) == pytest.approx(5 / 15)


def test_a_run_without_background_is_refused(small_cache, tmp_path, capsys):
    train(small_cache, tmp_path / "run", TrainConfig(epochs=1, units=(4,), dense=0))
    with pytest.raises(RunError, match="without a background class"):
        load_detector(tmp_path / "run")
    video = write_video(tmp_path / "v.avi", 40)
    command = ["detect", str(tmp_path / "run"), str(video), "--out", str(tmp_path / "d")]
    assert main([*command, "--random-weights", "0"]) == 2
    assert "--background" in capsys.readouterr().err


@pytest.mark.slow
def test_detection_on_unseen_recordings_scores_well(detect_demo):
    scores = detect_demo.detection.scores["overall"]
    assert scores["levenshtein_accuracy"] >= 0.85, scores
    assert scores["f1"] >= 0.8, scores
    out = detect_demo.detection.out
    for name in ("events.csv", "recordings.csv", "windows.npz", "detection.json"):
        assert (out / name).stat().st_size > 0, name
    assert len(list(out.glob("*.timeline.png"))) == 3
    saved = json.loads((out / "detection.json").read_text())
    assert saved["settings"]["on"] == 0.6 and saved["scores"]["overall"]["f1"] == scores["f1"]


@pytest.mark.slow
def test_evaluate_detection_recomputes_the_scores(detect_demo, capsys):
    out = detect_demo.detection.out
    truth = detect_demo.run.parent / "unseen" / "segments.csv"
    assert main(["evaluate-detection", str(out / "events.csv"), str(truth), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == detect_demo.detection.scores
    assert main(["evaluate-detection", str(out / "events.csv"), str(truth)]) == 0
    assert "Levenshtein accuracy" in capsys.readouterr().out


def detector_and_extractor(run):
    saved = read_run_config(run)
    return load_detector(run), extractor_from_spec(saved["extractor"], random_seed=0)


@pytest.mark.slow
def test_live_mode_finds_what_offline_finds(detect_demo):
    detector, extractor = detector_and_extractor(detect_demo.run)
    source = sorted(str(p) for p in (detect_demo.run.parent / "unseen").glob("*.avi"))[0]
    offline = detect_offline(detector, extractor, source, DetectSettings())
    fired = []
    live = detect_live(
        detector,
        extractor,
        source,
        DetectSettings(),
        speed=1.0,
        on_event=lambda e, latency: fired.append((e, latency)),
    )
    assert live.skipped == 0, "the machine fell behind at real time"
    assert [e.label for e in live.events] == [e.label for e in offline.events]
    for a, b in zip(live.events, offline.events):
        assert abs(a.fired_frame - b.fired_frame) <= extractor.layout.clip_stride
    assert len(fired) >= len(live.events) - 1 and all(latency < 5 for _, latency in fired)


@pytest.mark.slow
def test_live_mode_skips_clips_when_it_cannot_keep_up(detect_demo):
    detector, extractor = detector_and_extractor(detect_demo.run)
    slow = Toy(Options(seconds_per_clip=0.1), random_seed=0)  # 10 clips/s: behind at 20x
    extractor = Extractor(slow, extractor.layout)
    source = sorted(str(p) for p in (detect_demo.run.parent / "unseen").glob("*.avi"))[0]
    live = detect_live(detector, extractor, source, DetectSettings(), speed=20.0)
    assert live.skipped > 0 and len(live.clip_start) + live.skipped >= 20
    assert (np.diff(live.clip_start) > 0).all()


@pytest.mark.slow
def test_ctrl_c_during_a_live_run_writes_the_events_so_far(detect_demo, tmp_path):
    source = sorted(str(p) for p in (detect_demo.run.parent / "unseen").glob("*.avi"))[0]
    out = tmp_path / "live"
    command = [sys.executable, "-c", WITH_TOY, "detect", str(detect_demo.run), source]
    command += ["--out", str(out), "--random-weights", "0", "--realtime", "--speed", "0.5"]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Ctrl-C once the live run is under way (detection.json is written just before it
    # starts), not at a fixed time: a loaded machine may still be starting up
    deadline = time.monotonic() + 120
    while not (out / "detection.json").exists() and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-2000:]
        time.sleep(0.2)
    time.sleep(4)  # frames are flowing
    assert process.poll() is None, "the 29 s live run ended before Ctrl-C"
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert (out / "events.csv").exists() and (out / "recordings.csv").exists()
    assert pd.read_csv(out / "recordings.csv")["n_frames"].iloc[0] > 0


@pytest.mark.slow
def test_bad_sources_and_truth_get_messages(detect_demo, tmp_path, capsys):
    run = str(detect_demo.run)
    out = ["--out", str(tmp_path / "d"), "--random-weights", "0"]
    assert main(["detect", run, str(tmp_path / "nope.avi"), *out]) == 2
    assert "nope.avi" in capsys.readouterr().err
    assert main(["detect", run, "7", *out]) == 2
    assert "camera '7' cannot be opened" in capsys.readouterr().err
    short = write_video(tmp_path / "short.avi", 10)  # shorter than one window
    truth = tmp_path / "truth.csv"
    truth.write_text("file_path,action,start_frame,end_frame\nshort.avi,jump,0,5\n")
    fresh = ["--out", str(tmp_path / "t"), "--random-weights", "0"]
    assert main(["detect", run, str(short), *fresh, "--truth", str(truth)]) == 2
    assert "label 'jump' is not one the run knows" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()  # the truth file is checked before any work
    assert (
        main(["detect", run, str(short), "--out", str(tmp_path / "e"), "--random-weights", "0"])
        == 0
    )
