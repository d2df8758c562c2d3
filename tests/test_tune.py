from __future__ import annotations

import signal
import subprocess
import sys
import time

import optuna
import pytest

from gesture_cache.cli import main
from gesture_cache.config import TrainConfig
from gesture_cache.errors import ConfigError
from gesture_cache.tune import tune


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


def test_tuning_needs_a_validation_split(small_cache, tmp_path):
    with pytest.raises(ConfigError, match="--val-size"):
        tune(small_cache, tmp_path, 1, TrainConfig(val_size=0))


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
    history = out / "trial-0000" / "history.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if history.exists() and len(history.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    trials = optuna.load_study(study_name="gesture-cache", storage=f"sqlite:///{out / 'study.db'}")
    states = [t.state for t in trials.trials]
    assert states == [optuna.trial.TrialState.FAIL], states  # not COMPLETE, and no next trial
