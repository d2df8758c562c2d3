"""`tune`: trials, resumed studies, pruning, PostgreSQL shared by workers, Ctrl-C, a
one-class cache."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import optuna
import pandas as pd
import pytest

from gesture_cache.cache.manifest import ExtractorRecord, read_manifest
from gesture_cache.cli.main import main
from gesture_cache.common.errors import ConfigError
from gesture_cache.train.config import TrainConfig
from gesture_cache.train.runs import runs_table
from gesture_cache.train.tune import open_study, tune
from tests.postgres import free_port


def tune_command(cache, out, storage: str, study: str, trials: int, epochs: int) -> list[str]:
    command = [sys.executable, "-m", "gesture_cache.cli", "tune", str(cache), "--out", str(out)]
    command += ["--trials", str(trials), "--epochs", str(epochs)]
    return command + ["--storage", storage, "--study", study, "--heartbeat", "1"]


def wait_for_epochs(process: subprocess.Popen, history, epochs: int, timeout: float = 180) -> None:
    """Until the trial's history.csv has `epochs` rows (or the process ends)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if history.exists() and len(history.read_text().splitlines()) > epochs:
            return
        time.sleep(0.05)


@pytest.mark.slow
def test_tune_runs_trials_and_resumes_the_study(small_cache, tmp_path, capsys):
    study = tune(small_cache, tmp_path, 2, TrainConfig(epochs=2, val_size=0.25))
    assert len(study.trials) == 2
    assert all((tmp_path / f"trial-{i:04d}" / "model.keras").exists() for i in range(2))
    assert (
        main(["tune", str(small_cache), "--out", str(tmp_path), "--trials", "1", "--epochs", "2"])
        == 0
    )
    out = capsys.readouterr().out
    assert "best: trial" in out and "val_loss" in out
    stored = optuna.load_study(
        study_name="gesture-cache", storage=f"sqlite:///{tmp_path / 'study.db'}"
    )
    assert len(stored.trials) == 3


def test_tuning_needs_a_validation_split_and_a_real_heartbeat(small_cache, tmp_path):
    with pytest.raises(ConfigError, match="--val-size"):
        tune(small_cache, tmp_path, 1, TrainConfig(val_size=0))
    for heartbeat in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match="--heartbeat"):
            tune(small_cache, tmp_path / "h", 1, TrainConfig(), heartbeat=heartbeat)
    assert not (tmp_path / "h").exists()


@pytest.mark.slow
def test_two_workers_started_together_share_one_new_study(small_cache, tmp_path):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"  # fresh: the workers race to create it
    command = [
        sys.executable,
        "-m",
        "gesture_cache.cli",
        "tune",
        str(small_cache),
        "--out",
        str(tmp_path / "trials"),
        "--trials",
        "2",
        "--epochs",
        "1",
        "--storage",
        storage,
        "--study",
        "shared",
    ]
    workers = [
        subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for worker in workers:
        assert worker.wait(timeout=300) == 0, worker.stderr.read()[-2000:]
    trials = optuna.load_study(study_name="shared", storage=storage).trials
    assert len(trials) == 4 and len({t.number for t in trials}) == 4
    assert len(list((tmp_path / "trials").glob("trial-*/model.keras"))) == 4


@pytest.mark.slow
def test_ctrl_c_stops_the_search_and_fails_the_interrupted_trial(small_cache, tmp_path):
    out = tmp_path / "search"
    command = [sys.executable, "-m", "gesture_cache.cli", "tune", str(small_cache)]
    command += ["--out", str(out), "--trials", "5", "--epochs", "400"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_epochs(process, out / "trial-0000" / "history.csv", 2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    trials = optuna.load_study(study_name="gesture-cache", storage=f"sqlite:///{out / 'study.db'}")
    states = [t.state for t in trials.trials]
    assert states == [optuna.trial.TrialState.FAIL], states  # not COMPLETE, and no next trial


@pytest.mark.slow
def test_a_trial_behind_the_median_is_pruned_and_its_run_marked(small_cache, tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = open_study(storage, "gesture-cache")
    study.set_user_attr(
        "cache_fingerprint", json.loads((small_cache / "manifest.json").read_text())["fingerprint"]
    )
    for _ in range(2):  # two finished trials no real run can keep up with
        study.add_trial(
            optuna.trial.create_trial(value=0.0, intermediate_values=dict.fromkeys(range(10), 0.0))
        )
    tune(small_cache, tmp_path, 1, TrainConfig(epochs=8, val_size=0.25), storage=storage)
    trial = optuna.load_study(study_name="gesture-cache", storage=storage).trials[-1]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert sorted(trial.intermediate_values) == [0, 1, 2, 3]  # warm-up of 3 epochs, then cut
    run = tmp_path / f"trial-{trial.number:04d}"
    assert json.loads((run / "config.json").read_text())["status"] == "pruned"
    assert len(pd.read_csv(run / "history.csv")) == 4
    assert runs_table(tmp_path).set_index("run").loc[run.name, "status"] == "pruned"


def test_a_study_of_another_cache_is_refused(small_cache, tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    open_study(storage, "gesture-cache").set_user_attr("cache_fingerprint", "0" * 64)
    with pytest.raises(ConfigError, match="fingerprint 000000000000.*use another --study"):
        tune(small_cache, tmp_path, 1, TrainConfig(epochs=1), storage=storage)
    assert not list(tmp_path.glob("trial-*"))


def test_an_unreachable_storage_is_one_clear_line(small_cache, tmp_path, capsys):
    url = f"postgresql://someone:hunter2@127.0.0.1:{free_port()}/nothing"
    code = main(["tune", str(small_cache), "--out", str(tmp_path), "--storage", url])
    err = capsys.readouterr().err
    assert code == 2 and "cannot open the study" in err and "Connection refused" in err
    assert "hunter2" not in err and "someone:***@" in err
    assert main(["tune", str(small_cache), "--out", str(tmp_path), "--storage", "nonsense"]) == 2
    assert "is not a database URL" in capsys.readouterr().err


def test_a_wrong_postgres_database_is_one_clear_line(small_cache, tmp_path, postgres_url, capsys):
    url = postgres_url.rsplit("/", 1)[0] + "/no_such_database"
    assert main(["tune", str(small_cache), "--out", str(tmp_path), "--storage", url]) == 2
    err = capsys.readouterr().err
    assert "cannot open the study" in err and "no_such_database" in err


@pytest.mark.slow
def test_two_workers_share_a_postgres_study(small_cache, tmp_path, postgres_url):
    out = tmp_path / "trials"
    command = tune_command(small_cache, out, postgres_url, "together", trials=2, epochs=1)
    workers = [
        subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # started together: both race to create the study
    for worker in workers:
        assert worker.wait(timeout=300) == 0, worker.stderr.read()[-2000:]
    trials = optuna.load_study(study_name="together", storage=postgres_url).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 4
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    runs = sorted(p.parent.name for p in out.glob("trial-*/model.keras"))
    assert runs == [f"trial-{i:04d}" for i in range(4)]


@pytest.mark.slow
def test_a_killed_worker_leaves_the_postgres_study_usable(small_cache, tmp_path, postgres_url):
    out = tmp_path / "trials"
    doomed = subprocess.Popen(
        tune_command(small_cache, out, postgres_url, "killed", trials=3, epochs=400),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_epochs(doomed, out / "trial-0000" / "history.csv", 2)
    doomed.kill()  # mid-trial: no chance to tell the study anything
    doomed.wait()
    killed_at = time.monotonic()
    stuck = optuna.load_study(study_name="killed", storage=postgres_url).trials
    assert [t.state for t in stuck] == [optuna.trial.TrialState.RUNNING]
    time.sleep(max(0.0, killed_at + 5 - time.monotonic()))  # silent for 4 heartbeats: dead
    survivor = subprocess.run(
        tune_command(small_cache, out, postgres_url, "killed", trials=1, epochs=1),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert survivor.returncode == 0, survivor.stderr[-2000:]
    first, retry = optuna.load_study(study_name="killed", storage=postgres_url).trials
    assert first.state == optuna.trial.TrialState.FAIL
    assert retry.state == optuna.trial.TrialState.COMPLETE
    assert retry.params == first.params and retry.system_attrs["failed_trial"] == 0
    assert (out / "trial-0001" / "model.keras").exists()
    statuses = runs_table(out).set_index("run")["status"]
    assert statuses["trial-0000"] == "lost" and statuses["trial-0001"] == "finished"


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
