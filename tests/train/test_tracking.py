"""Runs where users look: TensorBoard event files read back with TensorBoard's own reader,
and MLflow against a real `mlflow server` started here on 127.0.0.1 (SQLite store), read
back through MLflow's client; a server that is down; a run's config.json run again."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from gesture_cache.cli.main import main
from gesture_cache.common.errors import ConfigError
from gesture_cache.train.config import load_config_file

mlflow = pytest.importorskip("mlflow")


event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


TRAIN = ["--epochs", "2", "--window-clips", "4"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(folder: Path) -> tuple[subprocess.Popen, str]:
    """`mlflow server` with a SQLite backend store and a folder of artifacts."""
    port = free_port()
    executable = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    process = subprocess.Popen(
        [
            executable,
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{folder / 'mlflow.db'}",
            "--default-artifact-root",
            str(folder / "artifacts"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip  (its own process group: the server and its workers stop together)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            assert process.poll() is None, "mlflow server ended"
            assert time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.5)
    return process, url


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process, url = start_server(tmp_path_factory.mktemp("mlflow"))
    yield url
    stop(process)


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    os.killpg(process.pid, sig)
    process.wait(timeout=30)


@pytest.fixture
def tracked(server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", f"test-{time.monotonic_ns()}")
    return mlflow.MlflowClient(server)


def runs_of(client) -> list:
    experiment = client.get_experiment_by_name(os.environ["MLFLOW_EXPERIMENT_NAME"])
    return client.search_runs([experiment.experiment_id])


@pytest.mark.slow
def test_a_run_is_logged_to_mlflow_and_tensorboard(tracked, small_cache, tmp_path):
    run = tmp_path / "run"
    assert main(["train", str(small_cache), "--out", str(run), *TRAIN]) == 0
    (logged,) = runs_of(tracked)
    assert logged.info.status == "FINISHED" and logged.info.run_name == "run"
    saved = json.loads((run / "config.json").read_text())
    assert logged.data.params["lr"] == str(saved["hparams"]["lr"])
    assert logged.data.params["window_clips"] == str(saved["window"]["clips"])
    assert logged.data.tags["cache_fingerprint"] == saved["cache"]["fingerprint"]
    assert logged.data.tags["backbone"] == saved["extractor"]["model"]
    history = tracked.get_metric_history(logged.info.run_id, "val_loss")
    expected = pd.read_csv(run / "history.csv")["val_loss"].tolist()
    assert [m.step for m in history] == [0, 1]
    assert [m.value for m in history] == pytest.approx(expected)
    metrics = json.loads((run / "metrics.json").read_text())
    assert logged.data.metrics["test_accuracy"] == pytest.approx(metrics["accuracy"])
    (dataset,) = logged.inputs.dataset_inputs
    assert saved["cache"]["fingerprint"].startswith(dataset.dataset.digest)
    artifacts = {a.path for a in tracked.list_artifacts(logged.info.run_id)}
    assert {"config.json", "metrics.json", "history.csv", "model.keras"} <= artifacts
    assert {"learning_curves.png", "confusion_matrix.png"} <= artifacts

    events = {}
    for part in ("train", "validation"):
        reader = event_accumulator.EventAccumulator(str(run / "tensorboard" / part))
        reader.Reload()
        events[part] = reader.Tags()["tensors"]
    assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"} <= set(events["train"])
    assert {"epoch_loss", "epoch_accuracy"} <= set(events["validation"])
    reader = event_accumulator.EventAccumulator(str(run / "tensorboard"))
    reader.Reload()
    assert "_hparams_/session_start_info" in reader.Tags()["tensors"]


@pytest.mark.slow
def test_a_search_is_a_parent_run_with_a_child_per_trial(tracked, small_cache, tmp_path):
    out = tmp_path / "search"
    assert (
        main(["tune", str(small_cache), "--out", str(out), "--trials", "2", "--epochs", "1"]) == 0
    )
    logged = runs_of(tracked)
    parents = [r for r in logged if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in logged if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert {c.info.run_name for c in children} == {"trial-0000", "trial-0001"}
    # the parent says which trial was best, by the value the study ranks trials on
    lowest = {
        child.info.run_name: min(
            m.value for m in tracked.get_metric_history(child.info.run_id, "val_loss")
        )
        for child in children
    }
    best = min(lowest, key=lowest.get)
    summary = parents[0].data
    assert summary.tags["best_trial"] == best and parents[0].info.status == "FINISHED"
    assert summary.metrics["best_val_loss"] == pytest.approx(lowest[best])


@pytest.mark.slow
def test_a_server_that_is_down_is_one_warning_and_the_run_finishes(
    small_cache, tmp_path, monkeypatch, caplog
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://user:hunter2@127.0.0.1:{free_port()}")
    run = tmp_path / "run"
    assert main(["train", str(small_cache), "--out", str(run), *TRAIN, "--no-tensorboard"]) == 0
    warned = [r.getMessage() for r in caplog.records if "nothing is tracked" in r.getMessage()]
    assert len(warned) == 1 and "hunter2" not in warned[0]
    assert (run / "metrics.json").is_file() and not (run / "tensorboard").exists()
    assert "hunter2" not in "".join(p.read_text() for p in run.glob("*.json"))


@pytest.mark.slow
def test_a_search_against_a_server_that_is_down_warns_once(
    small_cache, tmp_path, monkeypatch, caplog
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    out = tmp_path / "search"
    command = ["tune", str(small_cache), "--out", str(out), "--trials", "2", "--epochs", "1"]
    assert main([*command, "--no-tensorboard"]) == 0
    warned = [r.getMessage() for r in caplog.records if "nothing is tracked" in r.getMessage()]
    assert len(warned) == 1, warned
    assert (out / "trial-0001" / "metrics.json").is_file()


@pytest.mark.slow
def test_a_uri_that_is_not_one_and_a_tensorboard_folder_in_the_way_are_one_warning_each(
    small_cache, tmp_path, monkeypatch, caplog
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "not a uri")
    run = tmp_path / "run"
    run.mkdir()
    (run / "tensorboard").write_text("a file where the event files would go")
    assert main(["train", str(small_cache), "--out", str(run), *TRAIN]) == 0
    warned = [r.getMessage() for r in caplog.records if "the run goes on" in r.getMessage()]
    assert len(warned) == 2, warned
    assert "nothing is tracked in MLflow (not a uri)" in warned[1]
    assert "not writing TensorBoard events" in warned[0] and str(run / "tensorboard") in warned[0]
    assert (run / "metrics.json").is_file() and (run / "tensorboard").read_text().startswith("a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no store made of the text


@pytest.mark.slow
def test_a_runs_config_repeats_it(small_cache, tmp_path):
    first, again = tmp_path / "first", tmp_path / "again"
    assert main(["train", str(small_cache), "--out", str(first), *TRAIN, "--lr", "0.003"]) == 0
    assert main(["train", str(small_cache), "--out", str(again),
                 "--config", str(first / "config.json")]) == 0  # fmt: skip
    a, b = (pd.read_csv(run / "history.csv") for run in (first, again))
    pd.testing.assert_frame_equal(a, b, rtol=1e-5)
    assert (first / "split.csv").read_text() == (again / "split.csv").read_text()
    assert json.loads((again / "config.json").read_text())["hparams"]["lr"] == 0.003


def test_unknown_settings_in_a_config_are_refused_by_name(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"hparams": {"lr": 0.01, "learning_rat": 0.1}}))
    with pytest.raises(ConfigError, match="learning_rat"):
        load_config_file(path)


@pytest.mark.slow
def test_a_server_that_goes_away_mid_run_is_one_warning(small_cache, tmp_path, monkeypatch, caplog):
    import keras

    from gesture_cache.train.config import TrainConfig
    from gesture_cache.train.fit import train
    from gesture_cache.train.tracking import Tracking

    process, url = start_server(tmp_path / "mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)

    class StopTheServer(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                stop(process, signal.SIGKILL)

    config = TrainConfig(epochs=3, window_clips=4)
    result = train(small_cache, tmp_path / "run", config, callbacks=[StopTheServer()],
                   tracking=Tracking(tensorboard=False, mlflow=True))  # fmt: skip
    assert not result.interrupted and (tmp_path / "run" / "metrics.json").is_file()
    warned = [r.getMessage() for r in caplog.records if "MLflow stopped tracking" in r.getMessage()]
    assert len(warned) == 1 and "epoch 1" in warned[0]


@pytest.mark.slow
def test_a_ctrl_c_before_the_first_epoch_ends_marks_both_runs(tracked, small_cache, tmp_path):
    import keras

    from gesture_cache.train.config import TrainConfig
    from gesture_cache.train.fit import train
    from gesture_cache.train.tracking import Tracking

    class CtrlC(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raise KeyboardInterrupt

    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(small_cache, run, TrainConfig(epochs=3, window_clips=4), callbacks=[CtrlC()],
              tracking=Tracking(tensorboard=False, mlflow=True))  # fmt: skip
    assert json.loads((run / "config.json").read_text())["status"] == "interrupted"
    (logged,) = runs_of(tracked)
    assert logged.info.status == "KILLED"
    assert mlflow.active_run() is None


@pytest.mark.slow
def test_a_resumed_run_goes_on_in_its_own_mlflow_run_and_event_files(
    tracked, small_cache, tmp_path
):
    import keras

    from gesture_cache.train.config import TrainConfig
    from gesture_cache.train.fit import train
    from gesture_cache.train.tracking import Tracking

    class CtrlCAfterTheFirstEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    run = tmp_path / "run"
    config, stop = TrainConfig(epochs=3, window_clips=4), CtrlCAfterTheFirstEpoch()
    first = train(small_cache, run, config, callbacks=[stop], tracking=Tracking(mlflow=True))
    assert first.interrupted
    (logged,) = runs_of(tracked)
    assert logged.info.status == "KILLED"
    assert main(["train", "--resume", "--out", str(run)]) == 0
    (logged,) = runs_of(tracked)  # the same run, not a second one
    assert logged.info.status == "FINISHED"
    history = tracked.get_metric_history(logged.info.run_id, "val_loss")
    assert sorted(m.step for m in history) == [0, 1, 2]
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(
        pd.read_csv(run / "history.csv")["val_loss"].tolist()
    )
    reader = event_accumulator.EventAccumulator(str(run / "tensorboard" / "validation"))
    reader.Reload()
    assert [e.step for e in reader.Tensors("epoch_loss")] == [0, 1, 2]


def test_a_json_that_is_not_a_runs_config_is_refused(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"accuracy": 0.9, "macro_f1": 0.8}))
    with pytest.raises(ConfigError, match="not a run's config.json"):
        load_config_file(path)


@pytest.fixture(scope="module")
def synthetic_cache(tmp_path_factory) -> Path:
    from tests.helpers import write_cache

    rows = [(f"r{i:02d}", "abc"[i % 3], "", "") for i in range(24)]
    return write_cache(tmp_path_factory.mktemp("synthetic") / "cache", rows, clips=4, dim=16)


@pytest.mark.slow
def test_the_same_search_again_continues_its_one_parent_run(tracked, synthetic_cache, tmp_path):
    out = tmp_path / "search"
    for _ in range(2):
        assert main(["tune", str(synthetic_cache), "--out", str(out), "--trials", "1",
                     "--epochs", "1"]) == 0  # fmt: skip
    logged = runs_of(tracked)
    parents = [r for r in logged if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in logged if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert parents[0].data.tags["best_trial"] in {c.info.run_name for c in children}


@pytest.mark.slow
@pytest.mark.parametrize("password", ["SeCrEt/pa@ss:wd", "SeCrEt%40x%2Fy"])
def test_credentials_in_the_tracking_uri_are_never_shown(
    server, synthetic_cache, tmp_path, monkeypatch, capfd, password
):
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    with_secret = server.replace("http://", f"http://alice:{password}@")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", with_secret)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", f"test-{time.monotonic_ns()}")
    run = tmp_path / "run"
    assert main(["train", str(synthetic_cache), "--out", str(run), "--epochs", "1",
                 "--window-clips", "2"]) == 0  # fmt: skip
    shown = capfd.readouterr()
    written = "".join(p.read_text(errors="replace") for p in run.rglob("*.json"))
    for text in (shown.out, shown.err, written):
        assert "SeCrEt" not in text
    assert "View run" not in shown.err or server in shown.err  # MLflow's own line, clean
    (logged,) = runs_of(mlflow.MlflowClient(server))
    assert logged.info.status == "FINISHED"
