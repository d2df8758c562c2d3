"""Test metrics of a run (accuracy, macro-F1, per class, confusion matrix) and `evaluate`."""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)
from sklearn.utils.class_weight import compute_class_weight

from gesture_cache.common.errors import RunError
from gesture_cache.data.windows import SPLITS, Window
from gesture_cache.train.config import TrainConfig
from gesture_cache.train.prepare import TrainingData, training_data
from gesture_cache.train.run_folder import (
    check_same_cache,
    load_best_model,
    read_run_config,
    read_split,
)

log = logging.getLogger(__name__)


def balanced_class_weights(y: np.ndarray) -> dict[int, float]:
    present = np.unique(y)
    weights = compute_class_weight("balanced", classes=present, y=y)
    return dict(zip(present.tolist(), weights.tolist()))


def predict_proba(
    model: keras.Model, prepared: TrainingData, rows: np.ndarray, batch_size: int = 64
) -> np.ndarray:
    """Class probabilities of the samples `rows`, from their deterministic windows."""
    dataset = prepared.dataset(rows, batch_size, shuffle=False, seed=0)
    return model.predict(dataset, verbose=0)


def compute_metrics(model: keras.Model, prepared: TrainingData, rows: np.ndarray) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix."""
    classes, y = prepared.classes, prepared.y[rows]
    predicted = predict_proba(model, prepared, rows).argmax(axis=1)
    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y, predicted, labels=labels, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y, predicted)),
        "macro_f1": float(f1_score(y, predicted, labels=labels, average="macro", zero_division=0)),
        "samples": len(rows),
        "classes": classes,
        "per_class": {
            c: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for c, p, r, f, s in zip(classes, precision, recall, f1, support)
        },
        "confusion_matrix": confusion_matrix(y, predicted, labels=labels).tolist(),
        "cache_fingerprint": prepared.cache.fingerprint,
        "random_weights": prepared.cache.random_weights,
    }


def evaluate_run(run_dir: str | Path, cache_path: str | Path | None = None) -> dict:
    """Metrics of a run's best model: on its own test split (the cache must still hold the
    data it was trained on), or on all of another cache built with the same extractor."""
    run_dir = Path(run_dir)
    saved = read_run_config(run_dir)
    config = TrainConfig(**saved["hparams"])
    path = cache_path or saved["cache"]["path"]
    classes = saved.get("classes", saved["cache"]["classes"])
    window = Window(**saved["window"]) if "window" in saved else None
    prepared = training_data(path, config, classes=classes, window=window)
    if cache_path is None:
        check_same_cache(prepared.cache, path, saved)
        split = read_split(run_dir, prepared.samples)
        part = held_out_part({name: np.flatnonzero(split == name) for name in SPLITS})
        rows = np.flatnonzero(split == part)
    else:
        part = "all"
        if prepared.cache.fingerprint != saved["cache"]["fingerprint"]:
            check_same_cache(prepared.cache, path, saved)  # raises, naming both fingerprints
        unknown = sorted(set(prepared.samples.labels.tolist()) - set(classes))
        if unknown:
            raise RunError(f"cache {path} has classes the run never saw: {unknown}")
        rows = np.arange(len(prepared.samples))
    if not len(rows):
        raise RunError(f"cache {path} holds none of the samples to evaluate run {run_dir} on")
    return {**compute_metrics(load_best_model(run_dir), prepared, rows), "split": part}


def held_out_part(rows: dict[str, np.ndarray]) -> str:
    """Where a run is scored: its test part, or, for a dataset whose labelled lists end at
    validation (Jester's test list is unlabelled), its val part, as results are reported."""
    if len(rows["test"]) or not len(rows["val"]):
        return "test"
    log.warning("the split has no labelled test part: scores are on the val part")
    return "val"
