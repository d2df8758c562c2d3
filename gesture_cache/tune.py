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

from gesture_cache.config import TrainConfig, parse_units
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
    """Run `trials` more trials of the study (created on first use, resumed after)."""
    if base.val_size <= 0:
        raise ValueError("tuning compares validation losses: --val-size must be above 0")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=study_name,
        storage=storage or f"sqlite:///{(out / 'study.db').resolve()}",
        direction="minimize",
        load_if_exists=True,
    )

    def objective(trial: optuna.Trial) -> float:
        run_dir = out / f"trial-{trial.number:04d}"
        train(cache_path, run_dir, suggest(trial, base))
        history = pd.read_csv(run_dir / "history.csv")
        best = history["val_loss"].idxmin()
        trial.set_user_attr("run", str(run_dir))
        trial.set_user_attr("val_accuracy", float(history.loc[best, "val_accuracy"]))
        return float(history.loc[best, "val_loss"])

    study.optimize(objective, n_trials=trials)
    return study
