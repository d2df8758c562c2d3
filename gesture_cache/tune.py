"""Hyperparameter search with Optuna over a cache.

The study lives in a storage URL (SQLite by default, in the output folder), so several
processes, or machines sharing a database, can work on one search: each runs
`gesture-cache tune` with the same `--storage` and `--study`. Every trial is a normal run
folder; trials are compared on their best validation loss (the test split stays unseen).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import optuna
import pandas as pd

from gesture_cache.cache import read_manifest
from gesture_cache.config import TrainConfig, parse_units
from gesture_cache.errors import ConfigError
from gesture_cache.train import train

UNITS_CHOICES = ["64", "128", "256", "128,64", "256,64"]


def suggest(trial: optuna.Trial, base: TrainConfig) -> TrainConfig:
    """The search space: recurrent sizes and cell, dense size, dropout, learning rate, batch."""
    return replace(
        base,
        units=parse_units(trial.suggest_categorical("units", UNITS_CHOICES)),
        cell=trial.suggest_categorical("cell", ["lstm", "gru"]),
        dense=trial.suggest_categorical("dense", [0, 32, 64]),
        dropout=trial.suggest_float("dropout", 0.0, 0.5),
        lr=trial.suggest_float("lr", 1e-4, 3e-3, log=True),
        batch_size=trial.suggest_categorical("batch_size", [8, 16, 32]),
    )


def tune(
    cache_path: str | Path,
    out: str | Path,
    trials: int,
    base: TrainConfig,
    storage: str | None = None,
    study_name: str = "gesture-cache",
) -> optuna.Study:
    """Run `trials` more trials of the study (created on first use, resumed after).

    Ctrl-C stops the search: the trial it interrupted is marked failed (never ranked with
    its partial loss) and KeyboardInterrupt reaches the caller."""
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ConfigError(f"--trials {trials}: give a whole number of at least 1")
    if base.val_size <= 0:
        raise ConfigError("tuning compares validation losses: --val-size must be above 0")
    fingerprint = read_manifest(cache_path)["fingerprint"]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    try:
        study = optuna.create_study(
            study_name=study_name, storage=url, direction="minimize", load_if_exists=True
        )
    except Exception as error:  # noqa: BLE001 - SQLAlchemy, drivers and Optuna each raise their own
        raise ConfigError(
            f"--storage {url}: cannot open the study ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:300]})"
        ) from None
    known = study.user_attrs.get("cache_fingerprint")
    if known is None:
        study.set_user_attr("cache_fingerprint", fingerprint)
    elif known != fingerprint:
        raise ConfigError(
            f"study {study_name!r} in {url} searches a cache with fingerprint {known[:12]}, "
            f"not {cache_path} ({fingerprint[:12]}); use another --study"
        )

    def objective(trial: optuna.Trial) -> float:
        run_dir = out / f"trial-{trial.number:04d}"
        result = train(cache_path, run_dir, suggest(trial, base))
        if result.interrupted:
            raise KeyboardInterrupt  # Optuna marks the trial failed and stops
        history = pd.read_csv(run_dir / "history.csv")
        best = history["val_loss"].idxmin()
        trial.set_user_attr("run", str(run_dir))
        trial.set_user_attr("val_accuracy", float(history.loc[best, "val_accuracy"]))
        return float(history.loc[best, "val_loss"])

    study.optimize(objective, n_trials=trials)
    return study
