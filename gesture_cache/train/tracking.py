"""Runs where users already look: TensorBoard event files in every run folder (Keras'
TensorBoard callback and TensorBoard's hparams plugin) and, when asked, MLflow (every setting
as a param, metrics per epoch and at the end, the cache as a dataset input, the run's files
as artifacts; a search is a parent run with a child run per trial).

Tracking never stops a run: a folder that cannot be written, a tracking server that is down,
refuses or goes away mid-run is one warning, and the run folder is complete either way.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import keras

from gesture_cache import __version__
from gesture_cache.cache.remote import credentials, redacted
from gesture_cache.common.errors import first_line
from gesture_cache.common.interrupts import acted_on
from gesture_cache.train.run_folder import save_json

log = logging.getLogger(__name__)

TENSORBOARD = "tensorboard"  # RUN/tensorboard/
ARTIFACTS = (
    "config.json", "metrics.json", "history.csv", "learning_curves.png",
    "confusion_matrix.png", "model.keras",
)  # fmt: skip


@dataclass(frozen=True)
class Tracking:
    tensorboard: bool = True
    mlflow: bool | None = None  # --mlflow; None: on when MLFLOW_TRACKING_URI is set
    parent_run: str | None = None  # the MLflow run of the search a trial belongs to

    @property
    def uses_mlflow(self) -> bool:
        if self.mlflow is not None:
            return self.mlflow
        return bool(os.environ.get("MLFLOW_TRACKING_URI"))


def use_mlflow():
    """MLflow in its experiment, set to fail in seconds, not minutes of retries, when the
    server is away (its own variables, left alone when the user set them). Credentials in
    MLFLOW_TRACKING_URI move to MLflow's own MLFLOW_TRACKING_USERNAME/PASSWORD, so that
    neither MLflow's messages ("View run ... at URI") nor anything we record shows them."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    user, password, uri = credentials(os.environ.get("MLFLOW_TRACKING_URI", ""))
    if user is not None:
        os.environ["MLFLOW_TRACKING_URI"] = uri
        os.environ.setdefault("MLFLOW_TRACKING_USERNAME", user)
        if password is not None:
            os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", password)
    import mlflow

    mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", "gesture-cache"))
    return mlflow


def settings_of(run_config: dict) -> dict[str, str | int | float | bool]:
    """Every training setting and the window, as flat scalars (what MLflow params and the
    hparams plugin take)."""
    flat: dict = {}
    for name, value in {**run_config["hparams"], **run_config.get("window", {})}.items():
        key = name if name in run_config["hparams"] else f"window_{name}"
        if isinstance(value, list | tuple):
            value = ",".join(map(str, value))
        elif isinstance(value, dict):  # --mirror's table
            value = ",".join(f"{k}={v}" for k, v in value.items())
        flat[key] = "none" if value is None else value
    return flat


def tensorboard_callbacks(run_dir: Path, run_config: dict) -> list[keras.callbacks.Callback]:
    """Loss, accuracy and learning rate per epoch (train and validation) and the settings
    (hparams plugin) under RUN/tensorboard; nothing, with a warning, when it cannot be
    written."""
    folder = run_dir / TENSORBOARD
    try:
        folder.mkdir(exist_ok=True)
        (folder / ".writable").touch()
        (folder / ".writable").unlink()
    except OSError as error:
        log.warning("not writing TensorBoard events: %s (%s); the run goes on", folder, error)
        return []
    events = [
        LearningRate(),
        keras.callbacks.TensorBoard(str(folder), write_graph=False, write_steps_per_second=False),
    ]
    try:
        from tensorboard.plugins.hparams import api as hp
    except ImportError:
        log.warning("TensorBoard is not installed: its HParams tab gets no settings")
        return events
    return [*events, hp.KerasCallback(str(folder), settings_of(run_config), trial_id=run_dir.name)]


class LearningRate(keras.callbacks.Callback):
    """The optimizer's learning rate in each epoch's logs, for the callbacks after it."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["learning_rate"] = float(
                keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
            )


class MlflowRun(keras.callbacks.Callback):
    """One run folder as one MLflow run; every MLflow call guarded, the first failure
    warned about once and the rest of the run untracked."""

    def __init__(self, tracking: Tracking, run_dir: Path, run_config: dict):
        super().__init__()
        self.run_dir, self.active = run_dir, False
        try:
            import mlflow
        except ImportError:
            log.warning("--mlflow: MLflow is not installed (pip install 'gesture_cache[mlflow]')")
            return
        self.mlflow = mlflow
        resumed = run_config.get("mlflow_run_id")  # `train --resume` goes on in the same run
        uri = redacted(mlflow.get_tracking_uri())
        try:
            use_mlflow()
            if resumed:
                mlflow.start_run(run_id=resumed)
                self.active = True
            else:
                started = mlflow.start_run(run_name=run_dir.name, parent_run_id=tracking.parent_run)
                self.active = True
                mlflow.log_params(settings_of(run_config))
                mlflow.set_tags(tags_of(run_config, run_dir))
                mlflow.log_input(cache_dataset(mlflow, run_config), context="training")
                run_config["mlflow_run_id"] = started.info.run_id
                save_json(run_dir, "config.json", run_config)
        except Exception as error:  # noqa: BLE001 - any tracking failure, one line
            self.fail(f"nothing is tracked in MLflow ({uri}): {mlflow_error(error)}")
            return
        log.info("MLflow: run %s in %s", mlflow.active_run().info.run_id, uri)

    def fail(self, message: str) -> None:
        log.warning("%s; the run goes on", message)
        if self.active:
            try:
                self.mlflow.end_run(status="FAILED")
            except Exception:  # noqa: BLE001 - the server is gone
                pass
        self.active = False

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.active and logs:
            try:
                self.mlflow.log_metrics({k: float(v) for k, v in logs.items()}, step=epoch)
            except Exception as error:  # noqa: BLE001
                self.fail(f"MLflow stopped tracking at epoch {epoch + 1}: {mlflow_error(error)}")

    def finish(self, metrics: dict, interrupted: bool) -> None:
        """The final scores and the run's files, then the run's end."""
        if not self.active:
            return
        try:
            part = metrics.get("split", "test")
            self.mlflow.log_metrics(
                {f"{part}_accuracy": metrics["accuracy"], f"{part}_macro_f1": metrics["macro_f1"]}
            )
            for name in ARTIFACTS:
                if (self.run_dir / name).is_file():
                    self.mlflow.log_artifact(str(self.run_dir / name))
            self.mlflow.end_run(status="KILLED" if interrupted else "FINISHED")
        except Exception as error:  # noqa: BLE001
            self.fail(f"MLflow could not take the run's results: {mlflow_error(error)}")
        self.active = False


def tags_of(run_config: dict, run_dir: Path) -> dict[str, str]:
    cache = run_config["cache"]
    return {
        "cache_fingerprint": cache["fingerprint"],
        "backbone": run_config["extractor"]["model"],
        "split": str(run_config.get("split", "")),
        "gesture_cache_version": __version__,
        "run_folder": str(run_dir.resolve()),
    }


def cache_dataset(mlflow, run_config: dict):
    """The cache as an MLflow dataset: its path (or URL) as the source, its fingerprint as
    the digest, so MLflow shows which features a model was trained on."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    cache = run_config["cache"]
    source = resolve_dataset_source(str(cache.get("url") or Path(cache["path"]).resolve()))
    return MetaDataset(
        source=source, name=Path(cache["path"]).name, digest=cache["fingerprint"][:36]
    )


def mlflow_error(error: Exception) -> str:
    """An error's first line, long enough for the fix MLflow's messages end with, its
    credentials redacted."""
    return redacted(first_line(error)[:700])


@contextmanager
def tracked_run(tracking: Tracking | None, run_dir: Path, run_config: dict) -> Iterator[list]:
    """The tracking callbacks of one run (an MlflowRun among them when MLflow is on). A run
    that stops before it finishes (Ctrl-C, an error) ends its MLflow run as KILLED or
    FAILED instead of leaving it "running" in the UI."""
    tracking = tracking or Tracking()
    found: list = tensorboard_callbacks(run_dir, run_config) if tracking.tensorboard else []
    try:
        if tracking.uses_mlflow:
            found.append(MlflowRun(tracking, run_dir, run_config))
        yield found
    except BaseException as error:
        stopped = acted_on(error)  # and then no repeat of the Ctrl-C cuts the ending short
        if tracking.uses_mlflow:
            end_active_mlflow_run("KILLED" if stopped else "FAILED")
        raise


def end_active_mlflow_run(status: str) -> None:
    """End this process's active MLflow run, if any (also one a Ctrl-C caught starting)."""
    mlflow = sys.modules.get("mlflow")
    try:
        if mlflow is not None and mlflow.active_run() is not None:
            mlflow.end_run(status=status)
    except Exception:  # noqa: BLE001 - the server is gone; the run folder is what counts
        pass


def finish_tracking(callbacks: list, metrics: dict, interrupted: bool) -> None:
    for callback in callbacks:
        if isinstance(callback, MlflowRun):
            callback.finish(metrics, interrupted)
