"""The Keras callbacks of a run: the best model and the backup written atomically, so a kill
at any moment leaves a run that `--resume` finishes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import pandas as pd

from gesture_cache.common.files import atomic_write
from gesture_cache.common.hdf5 import open_plain
from gesture_cache.train.run_folder import (
    run_file,
)


def training_callbacks(
    run_dir: Path, monitor: str, patience: int, resume: bool
) -> list[keras.callbacks.Callback]:
    """The history, the best model, early stopping, and last the backup for --resume: an
    epoch counts as done once its backup is written. After a resume the history keeps the
    epochs the backup holds (a process killed between an epoch's row and its backup redoes
    that epoch, logged once), and the checkpoint starts from the best value so far, so
    model.keras stays the best epoch."""
    best_so_far = None
    if resume:
        backup = run_file(run_dir, "backup") / "latest.weights.h5"
        if backup.is_file():
            with open_plain(backup, str(backup)):
                pass  # refused before Keras reads it, if it reads another file
        column = read_history(run_dir).get(monitor)
        if column is not None and column.notna().any():
            best_so_far = float(column.min())
        keep_backed_up_epochs(run_dir)
    return [
        keras.callbacks.CSVLogger(str(run_file(run_dir, "history.csv")), append=resume),
        AtomicCheckpoint(
            run_file(run_dir, "model.keras"),
            monitor=monitor,
            save_best_only=True,
            initial_value_threshold=best_so_far,
        ),
        keras.callbacks.EarlyStopping(
            monitor=monitor, patience=patience, restore_best_weights=True
        ),
        AtomicBackup(str(run_file(run_dir, "backup"))),
    ]


def keep_backed_up_epochs(run_dir: Path) -> None:
    """history.csv without the rows of epochs the backup does not hold (they run again)."""
    try:
        state = json.loads(run_file(run_dir, "backup").joinpath(BACKUP_STATE).read_text())
        done = int(state["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        done = 0  # no backup: training starts at the first epoch again
    history = read_history(run_dir)
    if len(history) and (history["epoch"] >= done).any():
        kept = history[history["epoch"] < done]
        atomic_write(run_file(run_dir, "history.csv"), kept.to_csv(index=False).encode())


BACKUP_STATE = "training_metadata.json"  # Keras' name: the epochs the backup holds


NEXT_MODEL = ".next.model.keras"  # where the checkpoint writes before it renames


class AtomicCheckpoint(keras.callbacks.ModelCheckpoint):
    """Keras' ModelCheckpoint, writing the new best model beside the old one and renaming
    it over: Keras writes over the file in place, and a Ctrl-C or a kill landing while it
    wrote left a truncated model.keras, the best model of the run lost."""

    def __init__(self, path: Path, **options: object):
        self.target = path
        temporary = run_file(path.parent, NEXT_MODEL)
        temporary.unlink(missing_ok=True)  # a leftover, or a planted link: never written through
        super().__init__(temporary, **options)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        super().on_epoch_end(epoch, logs)
        if Path(self.filepath).exists():
            os.replace(self.filepath, self.target)


class AtomicBackup(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore whose backup is written under a temporary name and renamed
    into place, so that a process killed while it writes leaves the previous epoch's backup,
    which loads. It stays after `fit` ends (the run deletes it once the fit's end is
    recorded), so a run killed before its scores are written resumes without training
    again."""

    def __init__(self, backup_dir: str):
        super().__init__(backup_dir, delete_checkpoint=False)

    def _save_model(self) -> None:
        folder = Path(self.backup_dir)
        folder.mkdir(parents=True, exist_ok=True)
        next_weights = folder / "next.weights.h5"  # Keras wants the suffix .weights.h5
        self.model.save_weights(next_weights, overwrite=True)
        os.replace(next_weights, self._weights_path)
        state = {"epoch": self._current_epoch, "batch": self._last_batch_seen}
        atomic_write(Path(self._training_metadata_path), json.dumps(state).encode())


def read_history(run_dir: Path) -> pd.DataFrame:
    """history.csv, one row per finished epoch (none when it is empty: a run killed before
    its first epoch ended leaves a file without even a header)."""
    path = run_file(run_dir, "history.csv")
    try:
        return pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return pd.DataFrame({"epoch": pd.Series(dtype=int)})
