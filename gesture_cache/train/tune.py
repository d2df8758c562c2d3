"""Hyperparameter search with Optuna over a cache.

The study lives in a storage URL (SQLite by default, in the output folder; PostgreSQL for
several machines), so several processes can work on one search: each runs
`gesture-cache tune` with the same `--storage` and `--study`. Every trial is a normal run
folder; trials are compared on their best validation loss (the test split stays unseen).
Each worker sends a heartbeat while it trains: a trial whose worker died (killed, machine
lost) is marked failed by the next worker that starts a trial and run again once.
"""

from __future__ import annotations

import logging
import math
import random
import time
import warnings
from dataclasses import replace
from pathlib import Path

import keras
import optuna
import pandas as pd
import sqlalchemy
from optuna.storages import RetryHeartbeatStaleTrialCallback

from gesture_cache.cache.manifest import read_manifest
from gesture_cache.common.errors import ConfigError, GestureCacheError
from gesture_cache.common.interrupts import acted_on, caused_by_interrupt
from gesture_cache.train.config import TrainConfig, parse_units
from gesture_cache.train.fit import train
from gesture_cache.train.model import parameter_count
from gesture_cache.train.prepare import open_training_cache
from gesture_cache.train.run_folder import read_run_config, save_json
from gesture_cache.train.tracking import Tracking, mlflow_error, use_mlflow

log = logging.getLogger(__name__)


MLFLOW_PARENT = "mlflow_run_id"  # the study attribute naming its MLflow run

UNITS_CHOICES = ["64", "128", "256", "128,64", "256,64"]
CELL_CHOICES = ["lstm", "gru"]
DENSE_CHOICES = [0, 32, 64]


def largest_trial(base: TrainConfig) -> TrainConfig:
    """The search space's largest model (most parameters), whose training state the memory
    budget of the cache every trial shares must leave room for."""
    width = 4096  # the largest features a backbone gives; only the order of sizes matters here
    candidates = [
        replace(base, units=parse_units(units), cell=cell, dense=dense)
        for units in UNITS_CHOICES
        for cell in CELL_CHOICES
        for dense in DENSE_CHOICES
    ]
    return max(candidates, key=lambda c: parameter_count(c.units, c.cell, c.dense, width, 2))


def suggest(trial: optuna.Trial, base: TrainConfig) -> TrainConfig:
    """The search space: recurrent sizes and cell, dense size, dropout, learning rate, batch,
    and the temporal window (free: nothing is re-extracted)."""
    return replace(
        base,
        units=parse_units(trial.suggest_categorical("units", UNITS_CHOICES)),
        cell=trial.suggest_categorical("cell", CELL_CHOICES),
        dense=trial.suggest_categorical("dense", DENSE_CHOICES),
        dropout=trial.suggest_float("dropout", 0.0, 0.5),
        lr=trial.suggest_float("lr", 1e-4, 3e-3, log=True),
        batch_size=trial.suggest_categorical("batch_size", [8, 16, 32]),
        window_clips=trial.suggest_categorical("window_clips", [4, 8]),
    )


def tune(
    cache_path: str | Path,
    out: str | Path,
    trials: int,
    base: TrainConfig,
    storage: str | None = None,
    study_name: str = "gesture-cache",
    heartbeat: float = 30.0,
    tracking: Tracking | None = None,
) -> optuna.Study:
    """Run `trials` more trials of the study (created on first use, resumed after).

    Ctrl-C stops the search: the trial it interrupted is marked failed (never ranked with
    its partial loss) and KeyboardInterrupt reaches the caller. A worker silent for
    4 x `heartbeat` seconds is taken for dead and its trial retried."""
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ConfigError(f"--trials {trials}: give a whole number of at least 1")
    if base.val_size <= 0:
        raise ConfigError("tuning compares validation losses: --val-size must be above 0")
    if not (heartbeat > 0 and math.isfinite(heartbeat)):
        raise ConfigError(f"--heartbeat {heartbeat}: give a number of seconds above 0")
    manifest = read_manifest(cache_path)
    fingerprint = manifest["fingerprint"]
    if len(manifest["classes"]) + bool(base.background) < 2:
        raise ConfigError(
            f"cache {cache_path} has one class ({', '.join(manifest['classes'])}): a search "
            "needs at least two (--background adds the background class); nothing was tried"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    study = open_study(url, study_name, heartbeat)
    known = study.user_attrs.get("cache_fingerprint")
    if known is None:
        study.set_user_attr("cache_fingerprint", fingerprint)
    elif known != fingerprint:
        raise ConfigError(
            f"study {study_name!r} in {url} searches a cache with fingerprint {known[:12]}, "
            f"not {cache_path} ({fingerprint[:12]}); use another --study"
        )

    # opened once for every trial, within the budget of the largest model the search tries
    cache = open_training_cache(cache_path, largest_trial(base), manifest)
    tracking = tracking or Tracking()
    parent = search_run(tracking, study, fingerprint)
    if parent is None and tracking.uses_mlflow:  # warned once: the trials do not try again
        tracking = replace(tracking, mlflow=False)
    stopped: list[BaseException] = []  # what ended the search inside a trial

    def objective(trial: optuna.Trial) -> float:
        run_dir = out / f"trial-{trial.number:04d}"
        trial.set_user_attr("run", str(run_dir))
        pruning = PruneBehind(trial)
        try:
            trial_tracking = replace(tracking, parent_run=parent)
            result = train(
                cache, run_dir, suggest(trial, base), callbacks=[pruning], tracking=trial_tracking
            )
            if result.interrupted:
                raise KeyboardInterrupt
        except BaseException as error:
            # the trial fails (NaN, never ranked) and the search stops; the caller gets the
            # error itself, not a traceback logged by Optuna. train() marks an interrupted
            # run folder itself; one that failed is marked here.
            if acted_on(error):
                error = KeyboardInterrupt()
            elif not isinstance(error, GestureCacheError):
                raise
            elif (run_dir / "config.json").is_file():
                mark_run(run_dir, "failed")
            stopped.append(error)
            study.stop()
            return float("nan")
        if pruning.pruned:
            mark_run(run_dir, "pruned")
            raise optuna.TrialPruned(f"validation loss behind the median at epoch {pruning.epoch}")
        history = pd.read_csv(run_dir / "history.csv")
        best = history["val_loss"].idxmin()
        trial.set_user_attr("val_accuracy", float(history.loc[best, "val_accuracy"]))
        return float(history.loc[best, "val_loss"])

    try:
        study.optimize(objective, n_trials=trials)
    except BaseException as error:
        end_search_run(parent, study, error)
        raise
    end_search_run(parent, study, stopped[0] if stopped else None)
    if stopped:
        raise stopped[0]
    return study


def search_run(tracking: Tracking, study: optuna.Study, fingerprint: str) -> str | None:
    """With MLflow: the search's parent run (each trial's run is a child of it), or None
    (with a warning) when MLflow cannot be reached. One parent a study: a search that
    continues a study (the same --study again, or another worker) continues its run, whose
    id the study keeps."""
    if not tracking.uses_mlflow:
        return None
    try:
        mlflow = use_mlflow()
        client = mlflow.MlflowClient()
        known = study.user_attrs.get(MLFLOW_PARENT)
        if known is not None:
            try:
                client.update_run(known, status="RUNNING")
                return known
            except mlflow.exceptions.MlflowException:  # another store, or deleted there
                log.info("the study's MLflow run %s is not in this store; starting one", known)
        run = mlflow.start_run(run_name=f"study {study.study_name}")
        mlflow.set_tags({"optuna_study": study.study_name, "cache_fingerprint": fingerprint})
        mlflow.end_run()  # the trials' runs open it again as their parent
        study.set_user_attr(MLFLOW_PARENT, run.info.run_id)
        return run.info.run_id
    except Exception as error:  # noqa: BLE001 - tracking never stops a search
        log.warning("nothing is tracked in MLflow: %s; the search goes on", mlflow_error(error))
        return None


def end_search_run(parent: str | None, study: optuna.Study, error: BaseException | None) -> None:
    """The search's run ends with the study's best trial so far (`best_val_loss`,
    `best_val_accuracy`, and its run folder as the tag `best_trial`), so searches compare in
    MLflow's table, and as FINISHED, KILLED (Ctrl-C) or FAILED, as a trial's run does."""
    if parent is None:
        return
    import mlflow

    status = "FINISHED" if error is None else "KILLED" if caused_by_interrupt(error) else "FAILED"
    try:
        best = study.best_trial  # as `tune`'s table ranks them
    except ValueError:  # no trial has finished
        best = None
    try:
        client = mlflow.MlflowClient()
        if best is not None:
            client.log_metric(parent, "best_val_loss", best.value)
            client.log_metric(parent, "best_val_accuracy", best.user_attrs["val_accuracy"])
            client.set_tag(parent, "best_trial", Path(best.user_attrs["run"]).name)
        client.set_terminated(parent, status)
    except Exception as problem:  # noqa: BLE001 - tracking never stops a search
        log.warning("MLflow could not close the search's run: %s", mlflow_error(problem))


def open_study(url: str, name: str, heartbeat: float = 30.0, attempts: int = 8) -> optuna.Study:
    """The study in `url`, created on first use. Workers started at the same moment race to
    create it (and the storage's tables); a loser retries and loads the winner's study."""
    shown = shown_url(url)
    url = storage_url(url)
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.8
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=max(1, round(heartbeat)),
                    grace_period=max(4, round(4 * heartbeat)),
                    heartbeat_stale_trial_callback=RetryLostTrial(max_retry=1),
                )
            return optuna.create_study(
                study_name=name,
                storage=storage,
                direction="minimize",
                load_if_exists=True,
                pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=3),
            )
        except ModuleNotFoundError as error:
            raise ConfigError(
                f"--storage {shown} needs the {error.name} package: "
                "pip install 'gesture_cache[postgres]'"
            ) from None
        except Exception as error:  # noqa: BLE001 - SQLAlchemy, drivers and Optuna each raise their own
            text = str(error).lower()
            transient = "IntegrityError" in type(error).__name__ or any(
                word in text for word in ("locked", "already exists", "unique constraint")
            )  # another worker is creating the same tables or study right now
            if transient and attempt < attempts - 1:
                time.sleep(0.2 * (attempt + 1) + random.random() * 0.3)
                continue
            first_line = (str(error).strip().splitlines() or [""])[0][:300]
            raise ConfigError(
                f"--storage {shown}: cannot open the study ({type(error).__name__}: {first_line})"
            ) from None
    raise AssertionError("unreachable")


def shown_url(url: str) -> str:
    """The URL as the user gave it, password hidden."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        raise ConfigError(
            f"--storage {url!r} is not a database URL "
            "(e.g. sqlite:///study.db or postgresql://user@host/db)"
        ) from None


def storage_url(url: str) -> str:
    """PostgreSQL URLs without a driver use psycopg 3 (SQLAlchemy 2.0 would pick psycopg2)."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain) :]
    return url


class RetryLostTrial(RetryHeartbeatStaleTrialCallback):
    """A trial whose worker died: its run folder is marked "lost", the trial queued again."""

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        run = trial.user_attrs.get("run")
        if run and (Path(run) / "config.json").is_file():
            try:
                mark_run(Path(run), "lost")
            except (OSError, ValueError) as error:  # half-written by the dead worker
                log.warning("trial %d's run folder %s: %s", trial.number, run, str(error))
        super().__call__(study, trial)


class PruneBehind(keras.callbacks.Callback):
    """Reports each epoch's validation loss to Optuna and stops a trial that falls behind."""

    def __init__(self, trial: optuna.Trial):
        super().__init__()
        self.trial, self.pruned, self.epoch = trial, False, 0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("val_loss")
        if loss is None:
            return
        self.trial.report(float(loss), epoch)
        if self.trial.should_prune():
            self.pruned, self.epoch = True, epoch
            self.model.stop_training = True


def mark_run(run_dir: Path, status: str) -> None:
    config = read_run_config(run_dir)
    config["status"] = status
    save_json(run_dir, "config.json", config)
