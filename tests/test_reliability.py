"""What a new user's bad inputs and faults broke in detection, segments and the sharing
commands, each tested as a class: every output against every input, every float flag,
every worker thread, every CSV reader, every run-folder reader."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from gesture_cache.cache.manifest import ExtractorRecord, read_manifest
from gesture_cache.cli.arguments import finite_float
from gesture_cache.cli.main import main
from gesture_cache.cli.parser import build_parser
from gesture_cache.cli.tables import shown
from gesture_cache.common.errors import ConfigError, GestureCacheError, RunError
from gesture_cache.common.files import staging_folder
from gesture_cache.deploy.settings import DetectSettings
from gesture_cache.detect.detection import output_stems
from gesture_cache.detect.detector import load_detector
from gesture_cache.detect.live import detect_live
from gesture_cache.extract import local_engine
from gesture_cache.extract.config import ExtractConfig
from gesture_cache.extract.extraction import build_cache
from gesture_cache.extract.extractor import extractor_from_spec
from gesture_cache.sources.meta import check_rows, read_meta
from gesture_cache.train.config import TrainConfig
from gesture_cache.train.fit import train
from gesture_cache.video.decode import Frames
from tests.helpers import write_video


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def detect_args(detector, out: Path, *extra: str) -> list[str]:
    return ["detect", str(detector.run), *detector.unseen, "--out", str(out), *extra]


# --- 4, 5, 16: detection from a cache, labels pandas would call missing, same-named sources -


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


# --- 1: no output replaces an input ------------------------------------------------------


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


# --- 2: every float flag is finite; a dying worker thread ends the command ---------------


def test_every_float_flag_refuses_nan_and_infinity():
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    floats = []
    for name, sub in commands.choices.items():
        for action in sub._actions:
            assert action.type is not float, f"{name} {action.option_strings}: plain float"
            if action.type is finite_float:
                floats.append((name, action.option_strings[0]))
    assert ("detect", "--speed") in floats and ("train", "--lr") in floats
    assert len(floats) >= 10
    for text in ("nan", "inf", "-inf", "NaN"):
        with pytest.raises(argparse.ArgumentTypeError):
            finite_float(text)


def test_nan_speed_is_one_line_and_no_hang(detector, tmp_path, capsys):
    command = detect_args(detector, tmp_path / "d", "--cache", str(detector.cache))
    assert main([*command, "--speed", "nan"]) == 2
    err = capsys.readouterr().err
    assert "argument --speed: 'nan'" in err and err.count("\n") == 1, err
    assert main(["train", str(detector.cache), "--out", str(tmp_path / "r"), "--lr", "inf"]) == 2
    assert not (tmp_path / "r").exists() and not (tmp_path / "d").exists()


def run_with_timeout(function, seconds: float = 60):
    """Call `function` in a thread; fail the test (not hang it) if it does not return."""
    result = {}

    def call():
        try:
            result["value"] = function()
        except BaseException as error:  # noqa: BLE001 - handed back to the test
            result["error"] = error

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "it hung"
    return result


def test_a_decode_worker_that_dies_ends_the_extraction(monkeypatch):
    def broken(job, extractor):
        raise RuntimeError("decoder bug")
        yield  # a generator, as job_events is

    monkeypatch.setattr(local_engine, "job_events", broken)
    workers = local_engine.DecodeWorkers([object(), object()], None, workers=2, capacity=4)
    result = run_with_timeout(lambda: list(workers))
    workers.close()
    assert isinstance(result.get("error"), RuntimeError), result


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


# --- 3, 18: windows the cache cannot give, or memory cannot hold --------------------------


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


# --- 12: --background with nothing to learn it from ---------------------------------------


def test_background_without_background_stretches_is_refused(small_cache, tmp_path, detector):
    run = tmp_path / "run"
    with pytest.raises(RunError, match="no background stretches"):
        train(small_cache, run, TrainConfig(background=True, epochs=1))
    assert not run.exists()
    old = tmp_path / "old"  # a run written before this check: no background class in it
    shutil.copytree(detector.run, old)
    config = json.loads((old / "config.json").read_text())
    config["classes"] = [c for c in config["classes"] if c != "no_gesture"]
    (old / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunError, match="no background class"):
        load_detector(old)


# --- 13: the truth file is checked before any work -----------------------------------------


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


# --- 10, 18: evaluate-detection names the file, row and column -----------------------------


@pytest.fixture
def detected(detector, tmp_path):
    out = tmp_path / "d"
    command = detect_args(detector, out, "--cache", str(detector.cache))
    assert main(command) == 0
    return out


@pytest.mark.parametrize(
    "name, column, value",
    [
        ("events.csv", "start_frame", "abc"),
        ("events.csv", "fired_frame", ""),
        ("recordings.csv", "n_frames", "many"),
        ("recordings.csv", "fps", "inf"),
    ],
)
def test_evaluate_detection_names_a_bad_cell(detector, detected, capsys, name, column, value):
    table = pd.read_csv(detected / name, dtype=str, keep_default_na=False)
    if not len(table):
        pytest.skip("no events to damage")
    table.loc[0, column] = value
    table.to_csv(detected / name, index=False)
    capsys.readouterr()
    assert main(["evaluate-detection", str(detected / "events.csv"), str(detector.truth)]) == 2
    err = capsys.readouterr().err
    assert f"{name} row 1: column {column}" in err and err.count("\n") == 1, err


def test_events_of_a_recording_not_in_recordings_csv_are_an_error(detector, detected, capsys):
    events = pd.read_csv(detected / "events.csv", dtype=str, keep_default_na=False)
    extra = {c: "1" for c in events.columns} | {"recording": "ghost.avi", "label": "NA"}
    pd.concat([events, pd.DataFrame([extra])]).to_csv(detected / "events.csv", index=False)
    capsys.readouterr()
    assert main(["evaluate-detection", str(detected / "events.csv"), str(detector.truth)]) == 2
    assert "'ghost.avi' is not in" in capsys.readouterr().err


# --- 7, 18: run-folder readers -----------------------------------------------------------


def test_every_run_folder_reader_refuses_links_out(detector, tmp_path, capsys):
    run = tmp_path / "runs" / "copied"
    shutil.copytree(detector.run, run)
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"accuracy": 0.123, "macro_f1": 0.5}))
    (run / "metrics.json").unlink()
    (run / "metrics.json").symlink_to(secret)
    assert main(["runs", str(tmp_path / "runs"), "--format", "csv"]) == 0
    assert "0.123" not in capsys.readouterr().out
    outside = tmp_path / "config.json"
    shutil.copy(run / "config.json", outside)
    (run / "config.json").unlink()
    (run / "config.json").symlink_to(outside)
    assert main(["runs", str(tmp_path / "runs"), "--format", "csv"]) == 0
    assert "link out" in capsys.readouterr().out
    video = str(write_video(tmp_path / "x.avi", 20))
    for command in (
        ["evaluate", str(run)],
        ["detect", str(run), video, "--out", str(tmp_path / "d"), "--random-weights", "0"],
        ["predict", str(run), video, "--random-weights", "0"],
        ["train", "--out", str(run), "--resume"],
    ):
        assert main(command) == 2, command
        assert "outside" in capsys.readouterr().err, command


def test_runs_shows_training_seconds_of_a_copied_run(detector, tmp_path, capsys):
    copy = tmp_path / "runs" / "copy"
    copy.mkdir(parents=True)
    for path in detector.run.iterdir():  # a plain copy: new file times
        if path.is_file():
            shutil.copyfile(path, copy / path.name)
    assert main(["runs", str(tmp_path / "runs"), "--format", "csv"]) == 0
    table = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    seconds = json.loads((detector.run / "config.json").read_text())["train_seconds"]
    assert seconds > 0 and table["seconds"].iloc[0] == pytest.approx(seconds)


# --- 5, 18: CSV readers -------------------------------------------------------------------


def test_meta_labels_stay_text_and_a_repeated_column_is_refused(tmp_path):
    csv = tmp_path / "meta.csv"
    csv.write_text("file_path,action\na.avi,NA\nb.avi,null\nc.avi,None\nd.avi,nan\n")
    assert [r.label for r in read_meta(csv)] == ["NA", "null", "None", "nan"]
    csv.write_text("file_path,action,action\na.avi,wave,click\n")
    with pytest.raises(ConfigError, match="'action' appears more than once"):
        read_meta(csv)


# --- 6: bit depth and mixed sizes ----------------------------------------------------------


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


def test_check_reports_a_folder_of_mixed_sizes(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i, size in enumerate([(48, 64), (48, 64), (96, 128)]):
        cv2.imwrite(str(folder / f"{i}.jpg"), np.zeros((*size, 3), np.uint8))
    (tmp_path / "meta.csv").write_text("file_path,action\nmixed,wave\n")
    table = check_rows(read_meta(tmp_path / "meta.csv"))
    assert table["size"].iloc[0] == "mixed"
    assert "64x48 (2 frames), 128x96 (1 frames)" in table["problem"].iloc[0]


# --- 17: check applies exactly extract's rules --------------------------------------------


def test_check_rejects_exactly_the_rows_extract_rejects(tmp_path, capsys):
    write_video(tmp_path / "rec.avi", 48, fps=25)  # 48 frames, 1.92 s
    write_video(tmp_path / "same.avi", 20, fps=25)
    (tmp_path / "meta.csv").write_text(
        "file_path,action,start_frame,end_frame,start_time,end_time\n"
        "rec.avi,wave,0,20,,\n"  # fine
        "rec.avi,wave,40,60,,\n"  # past the end
        "rec.avi,wave,,,1.5,2.5\n"  # beyond the length
        "rec.avi,click,,,1.0,1.01\n"  # rounds to an empty segment at 25 fps
        "rec.avi,click,20,30,0.0,0.4\n"  # frames and times disagree
        "rec.avi,click,20,30,0.8,1.2\n"  # frames and times agree
        "same.avi,wave,,,,\n"
        "same.avi,click,,,,\n"  # another label for the whole of same.avi
    )
    table = check_rows(read_meta(tmp_path / "meta.csv"))
    rejected_by_check = set(table.loc[~table["usable"], "row"])
    assert rejected_by_check == {2, 3, 4, 5, 7, 8}, table.to_string()
    assert "round to an empty segment" in table.loc[table["row"] == 4, "problem"].iloc[0]
    assert "disagree" in table.loc[table["row"] == 5, "problem"].iloc[0]
    config = ExtractConfig(random_weights=0, clip_stride=32)
    build_cache(tmp_path / "meta.csv", tmp_path / "cache", config)
    failures = [json.loads(line) for line in (tmp_path / "cache" / "failures.jsonl").open()]
    rejected_by_extract = {f["row"] for f in failures if f["recording_id"] == "rec.avi"}
    if any(f["recording_id"] == "same.avi" for f in failures):
        rejected_by_extract |= {7, 8}  # the recording fails as a whole, named by its first row
    assert rejected_by_extract == rejected_by_check, failures


def test_info_quotes_labels_that_would_read_ambiguously():
    assert shown("wave") == "wave" and shown("Swiping Left") == "Swiping Left"
    assert shown("a, b") == '"a, b"' and shown("two\nlines") == '"two\\nlines"'
    assert shown(" padded") == '" padded"' and shown("") == '""'


# --- 8, 9, 14: exports and merges --------------------------------------------------------


def test_extra_columns_named_like_our_own_export_in_their_namespace(small_cache, tmp_path):
    from gesture_cache.cache.manifest import CachedRecording, Segment
    from gesture_cache.cache.writer import CacheWriter

    extractor = read_manifest(small_cache)["extractor"]
    extra = {"label": "theirs", "recording_id": "x", "row": "99", "group": "mine"}
    with CacheWriter(
        tmp_path / "cache", ExtractorRecord(extractor, 4096), dtype="float16", shard_size=4
    ) as writer:
        writer.add(
            CachedRecording(
                "v.avi", "0" * 64, np.zeros((2, 4096), np.float32), np.array([0, 8]),
                np.ones(2, bool), [Segment("wave", 0, 24, "", 1, extra)], 24, 25.0, 48, 64,
            )
        )  # fmt: skip
    assert main(["export-features", str(tmp_path / "cache"), "--out", str(tmp_path / "p")]) == 0
    segments = pd.read_parquet(tmp_path / "p" / "segments.parquet")
    assert segments.loc[0, "label"] == "wave" and segments.loc[0, "extra/label"] == "theirs"
    assert segments.loc[0, "row"] == 1 and segments.loc[0, "extra/row"] == "99"


def test_merge_into_a_link_is_a_one_line_error(small_cache, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "empty")
    assert main(["merge", str(small_cache), "--out", str(tmp_path / "link")]) == 2
    err = capsys.readouterr().err
    assert "is a link" in err and err.count("\n") == 1


def test_staging_folders_are_per_process_and_a_dead_ones_are_removed(small_cache, tmp_path):
    out = tmp_path / "merged"
    first, second = staging_folder(out), staging_folder(out)
    assert first != second and first.is_dir() and second.is_dir()  # this process is alive
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = os.uname().nodename
    leftover = tmp_path / f".merged.building-{host}-{dead.pid}-abc"
    (leftover / "part-00000.h5").parent.mkdir()
    (leftover / "part-00000.h5").write_bytes(b"half")
    assert main(["merge", str(small_cache), "--out", str(out)]) == 0
    assert not leftover.exists() and first.exists()
    assert read_manifest(out)["recordings"] == read_manifest(small_cache)["recordings"]


# --- 11: a closed pipe -------------------------------------------------------------------


@pytest.mark.parametrize("command", [["info"], ["verify"], ["info", "--json"]])
def test_a_closed_pipe_ends_quietly(small_cache, command):
    read_end, write_end = os.pipe()
    os.close(read_end)  # `| head -1` that has already gone
    process = subprocess.run(
        [sys.executable, "-m", "gesture_cache.cli", command[0], str(small_cache), *command[1:]],
        stdout=write_end,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
    )
    os.close(write_end)
    assert process.returncode == 141 and process.stderr == "", process.stderr


# --- 15: tune ----------------------------------------------------------------------------


def test_tune_on_a_one_class_cache_adds_no_trial(small_cache, tmp_path, capsys):
    from gesture_cache.cache.manifest import CachedRecording, Segment
    from gesture_cache.cache.writer import CacheWriter

    extractor = read_manifest(small_cache)["extractor"]
    with CacheWriter(
        tmp_path / "cache", ExtractorRecord(extractor, 8), dtype="float16", shard_size=4
    ) as writer:
        for i in range(4):
            writer.add(
                CachedRecording(
                    f"v{i}.avi", f"{i:064x}", np.zeros((2, 8), np.float32), np.array([0, 8]),
                    np.ones(2, bool), [Segment("wave", 0, 24)], 24, 25.0, 48, 64,
                )
            )  # fmt: skip
    out = tmp_path / "search"
    assert main(["tune", str(tmp_path / "cache"), "--out", str(out), "--trials", "1"]) == 2
    assert "one class" in capsys.readouterr().err
    assert not (out / "study.db").exists()


@pytest.mark.slow
def test_ctrl_c_in_tune_marks_the_trial_interrupted_without_a_traceback(detector, tmp_path):
    import optuna

    out = tmp_path / "search"
    command = [sys.executable, "-m", "gesture_cache.cli", "tune", str(detector.cache)]
    command += ["--out", str(out), "--trials", "3", "--epochs", "500"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = out / "trial-0000" / "config.json"
    for _ in range(1200):  # as soon as the first trial has its folder, maybe before an epoch
        if started.exists():
            break
        assert process.poll() is None, process.communicate()
        threading.Event().wait(0.1)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    config = json.loads((out / "trial-0000" / "config.json").read_text())
    assert config["status"] == "interrupted"
    study = optuna.load_study(study_name="gesture-cache", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["FAIL"]


# --- messages that say what to do ----------------------------------------------------------


def test_a_keras_backend_variable_is_named_as_the_variable(monkeypatch):
    from gesture_cache.backbones.keras_backends import use_backend

    monkeypatch.setenv("KERAS_BACKEND", "mxnet")
    with pytest.raises(ConfigError, match="KERAS_BACKEND=mxnet is not a backend"):
        use_backend(None)
    with pytest.raises(ConfigError, match="--backend 'mxnet'"):
        use_backend("mxnet")


@pytest.mark.parametrize("text", ["pca:²", "pca:٣", "pca:3.0", "pca:-1"])
def test_reduce_takes_ascii_digits_only(text):
    with pytest.raises(ConfigError, match="use pca:N"):
        TrainConfig(reduce=text)


def test_a_camera_index_is_ascii_digits_and_natural_order_never_crashes():
    from gesture_cache.detect.live import is_camera
    from gesture_cache.video.decode import natural_key

    assert is_camera("0") and not is_camera("٣") and not is_camera("²")
    assert sorted(["f10.jpg", "f2.jpg", "²", "f٣.jpg"], key=natural_key)[:2] == ["f2.jpg", "f٣.jpg"]


def test_merge_names_the_field_the_extractors_differ_in(tmp_path):
    from gesture_cache.cache.merge import merge_caches
    from tests.helpers import SYNTHETIC_EXTRACTOR, write_cache

    rows = [("a.avi", "wave", "", ""), ("b.avi", "clap", "", "")]
    first = write_cache(tmp_path / "a", rows)
    other = write_cache(tmp_path / "b", [("c.avi", "wave", "", "")],
                        extractor={**SYNTHETIC_EXTRACTOR, "clip_stride": 4})  # fmt: skip
    with pytest.raises(GestureCacheError, match="differs in: clip_stride"):
        merge_caches([first, other], tmp_path / "merged")


def test_repair_counts_recordings_kept_and_shards_set_aside_apart(tmp_path, capsys):
    from tests.helpers import write_cache

    rows = [(f"r{i}.avi", ("wave", "clap")[i % 2], "", "") for i in range(6)]
    cache = write_cache(tmp_path / "cache", rows, shard_size=2)
    (cache / "part-00001.h5").write_bytes(b"not a shard any more")
    assert main(["repair", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "4 recordings kept; 1 damaged shard set aside as damaged-part-00001.h5" in out
    assert "(2 recordings listed in them)" in out


def test_detect_from_a_cache_given_a_file_says_sources_are_recording_ids(
    detector, tmp_path, capsys
):
    video = write_video(tmp_path / "v.avi", 40)
    command = ["detect", str(detector.run), str(video), "--cache", str(detector.cache)]
    assert main([*command, "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "each SOURCE is a recording id of the cache" in err and "s00/rec.avi" in err
