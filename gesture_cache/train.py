"""Fit, evaluate and the run folder.

RUN/config.json        resolved hyperparameters, cache fingerprint, extractor, version
RUN/split.csv          video_id, label, split
RUN/model.keras        the best model by validation loss
RUN/history.csv        one row per epoch
RUN/metrics.json       test accuracy, macro-F1, per-class scores, confusion matrix
RUN/learning_curves.png, RUN/confusion_matrix.png
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)
from sklearn.utils.class_weight import compute_class_weight

from gesture_cache import __version__, data, report
from gesture_cache.cache import Cache, CacheError, open_cache, read_manifest, verify_cache
from gesture_cache.config import TrainConfig
from gesture_cache.model import build_classifier, preset_hparams, trainable_parameters

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict
    epochs: int
    interrupted: bool


def resolve(config: TrainConfig) -> TrainConfig:
    """The config with every `None` filled from its preset."""
    preset = preset_hparams(config.preset)
    return replace(config, **{k: v for k, v in preset.items() if getattr(config, k) is None})


def train(
    cache_path: str | Path | None, run_dir: str | Path, config: TrainConfig, resume: bool = False
) -> TrainResult:
    """Train a classifier on a cache; `resume` continues an interrupted run in `run_dir`
    with its saved settings (and its saved cache path when `cache_path` is None)."""
    run_dir = Path(run_dir)
    if resume:
        saved = read_run_config(run_dir)
        config = TrainConfig(**{**saved["hparams"], "units": tuple(saved["hparams"]["units"])})
        cache_path = cache_path or saved["cache"]["path"]
    elif (run_dir / "config.json").exists():
        raise ValueError(f"run folder {run_dir} already holds a run; use --resume or a new --out")
    config = resolve(config)
    cache = load_verified_cache(cache_path, config.memory_limit_mb)
    if resume and cache.fingerprint != saved["cache"]["fingerprint"]:
        raise CacheError(f"cache {cache_path} is not the one the run began with (fingerprint)")

    y = np.searchsorted(cache.classes, cache.labels).astype(np.int32)
    split = data.split_videos(
        cache.video_ids, cache.labels, cache.groups, config.test_size, config.val_size, config.seed
    )
    rows = {name: np.flatnonzero(split == name) for name in data.SPLITS}
    run_config = start_run_folder(run_dir, cache, cache_path, config, split)

    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    datasets = {
        name: make_dataset(cache, rows[name], y, config, shuffle=name == "train")
        for name in data.SPLITS
        if len(rows[name])
    }
    model = compiled_classifier(cache, rows["train"], config)
    log.info(
        "%s: %s trainable parameters; %s",
        config.preset,
        f"{trainable_parameters(model):,}",
        ", ".join(f"{n} {len(r)}" for n, r in rows.items()),
    )
    interrupted = False
    try:
        model.fit(
            datasets["train"],
            validation_data=datasets.get("val"),
            epochs=config.epochs,
            callbacks=training_callbacks(run_dir, "val" in datasets, config.patience, resume),
            class_weight=balanced_class_weights(y[rows["train"]]) if config.class_weight else None,
            shuffle=False,  # tf.data already shuffles, from the seed
            verbose=2,
        )
    except KeyboardInterrupt:
        interrupted = True
        log.warning("interrupted: the run folder keeps the best model so far; --resume goes on")
    if not (run_dir / "model.keras").exists():
        raise KeyboardInterrupt  # stopped before the first epoch ended: nothing to evaluate

    best = keras.models.load_model(run_dir / "model.keras")
    metrics = compute_metrics(best, cache, rows["test"], y[rows["test"]], cache.classes)
    write_json(run_dir / "metrics.json", metrics)
    history = pd.read_csv(run_dir / "history.csv")
    report.plot_learning_curves(history, run_dir / "learning_curves.png")
    report.plot_confusion_matrix(metrics, run_dir / "confusion_matrix.png")
    run_config["status"] = "interrupted" if interrupted else "finished"
    write_json(run_dir / "config.json", run_config)
    return TrainResult(run_dir, metrics, len(history), interrupted)


def start_run_folder(
    run_dir: Path, cache: Cache, cache_path: str | Path, config: TrainConfig, split: np.ndarray
) -> dict:
    """Write split.csv and config.json (status "running") before training starts."""
    run_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"video_id": cache.video_ids, "label": cache.labels, "split": split}).to_csv(
        run_dir / "split.csv", index=False
    )
    run_config = {
        "hparams": asdict(config),
        "cache": {
            "path": str(Path(cache_path).resolve()),
            "fingerprint": cache.fingerprint,
            "classes": cache.classes,
            "feature_shape": cache.manifest["feature_shape"],
            "dtype": cache.manifest["dtype"],
            "random_weights": cache.random_weights,
        },
        "extractor": cache.manifest["extractor"],
        "package_version": __version__,
        "status": "running",
    }
    write_json(run_dir / "config.json", run_config)
    return run_config


def compiled_classifier(cache: Cache, train_rows: np.ndarray, config: TrainConfig) -> keras.Model:
    """The configured classifier, standardising with statistics of the training rows only."""
    mean = variance = None
    if config.normalize and cache.features is None:
        mean, variance = data.streaming_standardisation(cache, train_rows)
    elif config.normalize:
        mean, variance = data.standardisation(cache.features[train_rows], cache.mask[train_rows])
    model = build_classifier(
        config.preset,
        len(cache.classes),
        tuple(cache.manifest["feature_shape"]),
        units=config.units,
        cell=config.cell,
        dense=config.dense,
        dropout=config.dropout,
        mean=mean,
        variance=variance,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(config.lr),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def training_callbacks(
    run_dir: Path, has_validation: bool, patience: int, resume: bool
) -> list[keras.callbacks.Callback]:
    """Backup for --resume, the best model, the history, early stopping."""
    monitor = "val_loss" if has_validation else "loss"
    return [
        keras.callbacks.BackupAndRestore(str(run_dir / "backup")),
        keras.callbacks.ModelCheckpoint(
            run_dir / "model.keras", monitor=monitor, save_best_only=True
        ),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=resume),
        keras.callbacks.EarlyStopping(
            monitor=monitor, patience=patience, restore_best_weights=True
        ),
    ]


def balanced_class_weights(y: np.ndarray) -> dict[int, float]:
    present = np.unique(y)
    weights = compute_class_weight("balanced", classes=present, y=y)
    return dict(zip(present.tolist(), weights.tolist()))


def load_verified_cache(path: str | Path, memory_limit_mb: float) -> Cache:
    """Refuse a cache that fails `verify`; keep features on disk past the memory limit."""
    problems = verify_cache(path)
    if problems:
        raise CacheError(f"cache {path} fails verification: {problems[0]}")
    manifest = read_manifest(path, check_hashes=False)
    T, D = manifest["feature_shape"]
    size_mb = manifest["videos"] * T * D * np.dtype(manifest["dtype"]).itemsize / 2**20
    cache = open_cache(path, load_features=size_mb <= memory_limit_mb, check_hashes=False)
    if cache.features is None:
        log.info("cache is %.0f MB, over --memory-limit: streaming it shard by shard", size_mb)
    if cache.random_weights:
        log.warning(
            "THE FEATURES IN %s COME FROM RANDOM C3D WEIGHTS: fine for a demo or a test, "
            "meaningless for real gestures; extract with --weights for real work",
            path,
        )
    return cache


def make_dataset(
    cache: Cache, rows: np.ndarray, y: np.ndarray, config: TrainConfig, shuffle: bool
) -> tf.data.Dataset:
    if cache.features is None:
        return data.streaming_dataset(cache, rows, y[rows], config.batch_size, shuffle, config.seed)
    return data.in_memory_dataset(
        cache.features[rows], cache.mask[rows], y[rows], config.batch_size, shuffle, config.seed
    )


def predict_proba(
    model: keras.Model, cache: Cache, rows: np.ndarray, batch_size: int = 64
) -> np.ndarray:
    dummy = np.zeros(len(cache), np.int32)
    config = TrainConfig(batch_size=batch_size)
    return model.predict(make_dataset(cache, rows, dummy, config, shuffle=False), verbose=0)


def compute_metrics(
    model: keras.Model, cache: Cache, rows: np.ndarray, y: np.ndarray, classes: list[str]
) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix."""
    predicted = predict_proba(model, cache, rows).argmax(axis=1)
    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y, predicted, labels=labels, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y, predicted)),
        "macro_f1": float(f1_score(y, predicted, labels=labels, average="macro", zero_division=0)),
        "videos": len(rows),
        "classes": classes,
        "per_class": {
            c: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for c, p, r, f, s in zip(classes, precision, recall, f1, support)
        },
        "confusion_matrix": confusion_matrix(y, predicted, labels=labels).tolist(),
        "cache_fingerprint": cache.fingerprint,
        "random_weights": cache.random_weights,
    }


def evaluate_run(run_dir: str | Path, cache_path: str | Path | None = None) -> dict:
    """Metrics of a run's best model: on its own test split, or on all of another cache
    built with the same extractor."""
    run_dir = Path(run_dir)
    saved = read_run_config(run_dir)
    classes = saved["cache"]["classes"]
    path = cache_path or saved["cache"]["path"]
    cache = load_verified_cache(path, saved["hparams"]["memory_limit_mb"])
    if cache.fingerprint != saved["cache"]["fingerprint"]:
        raise CacheError(
            f"cache {path} was built with another extractor than the run's "
            f"(fingerprint {cache.fingerprint[:12]} vs "
            f"{saved['cache']['fingerprint'][:12]})"
        )
    unknown = sorted(set(cache.labels) - set(classes))
    if unknown:
        raise ValueError(f"cache {path} has classes the run never saw: {unknown}")
    if cache_path is None:
        split = pd.read_csv(run_dir / "split.csv", keep_default_na=False)
        test_ids = set(split.loc[split["split"] == "test", "video_id"])
        rows = np.flatnonzero([v in test_ids for v in cache.video_ids])
    else:
        rows = np.arange(len(cache))
    y = np.searchsorted(classes, cache.labels[rows]).astype(np.int32)
    model = keras.models.load_model(run_dir / "model.keras")
    return compute_metrics(model, cache, rows, y, classes)


def read_run_config(run_dir: Path) -> dict:
    path = run_dir / "config.json"
    if not path.is_file():
        raise ValueError(f"{run_dir} is not a run folder: no config.json")
    return json.loads(path.read_text())


def write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")
