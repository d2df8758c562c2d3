"""Comparing run folders: one row per run found under a folder (no TensorFlow needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from gesture_cache.common.errors import ConfigError, RunError
from gesture_cache.common.files import lock_held
from gesture_cache.train.run_folder import run_file

COLUMNS = [
    "run",
    "status",
    "test_accuracy",
    "macro_f1",
    "epochs",
    "seconds",
    "preset",
    "units",
    "cell",
    "dense",
    "dropout",
    "lr",
    "batch_size",
    "window",
    "background",
    "cache",
]


def run_row(folder: Path, root: Path) -> dict:
    """What a run folder says; a half-written one is listed as incomplete, never fatal, and a
    file that is a link out of its folder is not read (the row says so)."""
    row = {"run": str(folder.relative_to(root)) if folder != root else folder.name}
    try:
        config = json.loads(run_file(folder, "config.json").read_text())
        hparams, window = config["hparams"], config.get("window", {})
    except RunError:
        return {**row, "status": "link out (not read)"}
    except (OSError, ValueError, KeyError, TypeError):
        return {**row, "status": "incomplete"}
    row.update(
        status=live_status(folder, config.get("status", "?")),
        preset=hparams.get("preset"),
        units=",".join(map(str, hparams.get("units") or [])),
        cell=hparams.get("cell"),
        dense=hparams.get("dense"),
        dropout=hparams.get("dropout"),
        lr=hparams.get("lr"),
        batch_size=hparams.get("batch_size"),
        window=f"{window.get('clips')}/{window.get('step') or '-'}/{window.get('sampling')}"
        if window
        else "",
        background=hparams.get("background", False),
        cache=str(config.get("cache", {}).get("fingerprint", ""))[:12],
        seconds=config.get("train_seconds"),
    )
    try:
        metrics = json.loads(run_file(folder, "metrics.json").read_text())
        row.update(test_accuracy=metrics["accuracy"], macro_f1=metrics["macro_f1"])
    except (RunError, OSError, ValueError, KeyError, TypeError):
        pass
    try:
        row["epochs"] = len(pd.read_csv(run_file(folder, "history.csv")))
    except (RunError, OSError, ValueError, pd.errors.EmptyDataError):
        pass
    return row


def live_status(folder: Path, status: str) -> str:
    """A run marked running (or evaluating) whose process no longer holds its lock died
    (killed, a crash, a lost machine): `dead`, which `train --resume` continues."""
    if status in ("running", "evaluating") and lock_held(folder) is False:
        return "dead"
    return status


def runs_table(root: str | Path, sort: str | None = None) -> pd.DataFrame:
    """Every run folder (a folder with a config.json) under `root`, best first by `sort`."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder")
    folders = sorted({p.parent for p in root.rglob("config.json")})
    table = pd.DataFrame([run_row(f, root) for f in folders], columns=COLUMNS)
    if sort:
        if sort not in table.columns:
            raise ConfigError(f"--sort {sort!r}: choose one of {', '.join(COLUMNS)}")
        ascending = sort not in ("test_accuracy", "macro_f1")
        table = table.sort_values(sort, ascending=ascending, na_position="last")
    return table


def format_table(table: pd.DataFrame, how: str) -> str:
    if how == "csv":
        return table.to_csv(index=False).rstrip("\n")
    if how == "markdown":
        header = "| " + " | ".join(table.columns) + " |"
        rule = "|" + "---|" * len(table.columns)
        rows = [
            "| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |"
            for row in table.itertuples(index=False)
        ]
        return "\n".join([header, rule, *rows])
    if how != "table":
        raise ConfigError(f"--format {how!r}: use table, csv or markdown")
    return table.to_string(index=False, na_rep="-") if len(table) else "no runs found"
