"""`gesture-cache train`: fit, evaluate and the run folder.

import logging
RUN/config.json        resolved hyperparameters, window, classes, cache fingerprint and content
                       digest, extractor, status
RUN/split.csv          sample_id, recording_id, label, split (read back by --resume and
                       --split-from)
RUN/model.keras        the best model by validation loss, across interruptions
RUN/history.csv        one row per epoch
RUN/metrics.json       test accuracy, macro-F1, per-class scores, confusion matrix
RUN/learning_curves.png, RUN/confusion_matrix.png
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from gesture_cache import __version__
from gesture_cache.cache.pull import copy_source
from gesture_cache.cache.reader import Cache
from gesture_cache.common.errors import RunError
from gesture_cache.common.files import LOCK, acquire_lock, inside
from gesture_cache.common.interrupts import acted_on
from gesture_cache.data.statistics import pca_projection, selection, training_standardisation
from gesture_cache.data.windows import SPLITS
from gesture_cache.train.callbacks import read_history, training_callbacks
from gesture_cache.train.config import TrainConfig, reduce_components
from gesture_cache.train.metrics import balanced_class_weights, compute_metrics, held_out_part
from gesture_cache.train.model import (
    build_classifier,
    trainable_parameters,
)
from gesture_cache.train.plots import plot_confusion_matrix, plot_learning_curves
from gesture_cache.train.prepare import (
    TrainingData,
    cache_freed,
    check_even_first_batches,
    check_reduce,
    check_trainable,
    choose_split,
    holds_validation,
    memory_limit_mb,
    resolve,
    training_data,
)
from gesture_cache.train.run_folder import (
    check_run_folder,
    check_same_cache,
    load_best_model,
    read_run_config,
    read_split,
    run_file,
    save_bytes,
    save_json,
)
from gesture_cache.train.tracking import Tracking, finish_tracking, tracked_run

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict
    epochs: int
    interrupted: bool


@cache_freed
def train(
    cache: str | Path | Cache,
    run_dir: str | Path,
    config: TrainConfig,
    split_from: str | Path | None = None,
    callbacks: list[keras.callbacks.Callback] | None = None,
    tracking: Tracking | None = None,
) -> TrainResult:
    """Train a classifier on a cache (a path, or a cache opened already) into a new run
    folder. `split_from` reuses an earlier
    run's split (samples it does not know go to training, with a warning); `callbacks` are
    added to Keras' (a search's pruning); `tracking`: TensorBoard (on by default) and
    MLflow."""
    run_dir = Path(run_dir)
    refuse_existing_run(run_dir)
    config = resolve(config)
    cache_path = cache.path if isinstance(cache, Cache) else cache
    prepared = training_data(cache, config)
    check_trainable(prepared, cache_path, config)
    split, split_source = choose_split(prepared, config, split_from)
    strategy = distribution_strategy(config.strategy)
    check_even_first_batches(prepared, split, config.batch_size, strategy)  # before any file
    check_reduce(prepared, split, config)
    with holding(run_dir, create=True):
        refuse_existing_run(run_dir)  # another process may have started one meanwhile
        with marked_if_interrupted(run_dir):  # even one that lands as config.json is written
            run_config = start_run_folder(
                run_dir, prepared, cache_path, config, split, split_source
            )
            with tracked_run(tracking, run_dir, run_config) as tracked:
                result = fit_and_evaluate(
                    run_dir, prepared, config, split, run_config, strategy, False,
                    [*(callbacks or []), *tracked],
                )  # fmt: skip
                finish_tracking(tracked, result.metrics, result.interrupted)
        return result


def refuse_existing_run(run_dir: Path) -> None:
    if (run_dir / "config.json").exists() or (run_dir / "config.json").is_symlink():
        raise RunError(f"run folder {run_dir} already holds a run; use --resume or a new --out")


@contextmanager
def holding(run_dir: Path, create: bool = False) -> Iterator[None]:
    """The run folder's lock for as long as this process trains it: a second `train
    --resume` is refused, and `runs` tells a live run from one whose process died."""
    if create:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RunError(f"cannot create the run folder {run_dir}: {error}") from None
    run_file(run_dir, LOCK)  # not a link
    lock = acquire_lock(run_dir, "is being trained by another process", RunError)
    try:
        yield
    finally:
        os.close(lock)


@cache_freed
def resume(
    run_dir: str | Path,
    cache_path: str | Path | None = None,
    overrides: dict | None = None,
    tracking: Tracking | None = None,
) -> TrainResult:
    """Continue an interrupted run with its saved settings and split. The cache must hold
    exactly the data it held when the run began (its content digest). `tracking` as for
    `train`: TensorBoard's events go on in RUN/tensorboard, and MLflow in the run's own
    MLflow run when it had one."""
    run_dir = Path(run_dir)
    saved = read_run_config(run_dir)
    if saved.get("status") == "finished":
        raise RunError(f"run {run_dir} is finished; there is nothing to resume (use a new --out)")
    config = TrainConfig(**saved["hparams"])
    overrides = dict(overrides or {})
    if "strategy" in overrides:  # how to spread the work, not what is learnt
        config = replace(config, strategy=overrides.pop("strategy"))
    changed = {k: v for k, v in overrides.items() if getattr(config, k, None) != v}
    if changed:
        raise RunError(
            f"--resume continues run {run_dir} with its saved settings; these differ: "
            + ", ".join(f"{k} {getattr(config, k)!r} -> {v!r}" for k, v in changed.items())
            + " (start a new --out to change them)"
        )
    check_run_folder(run_dir)
    with holding(run_dir):
        saved = read_run_config(run_dir)  # as it is now that no other process trains it
        fitted = saved.get("status") == "evaluating"  # stopped after fitting, before scores
        cache_path = cache_path or saved["cache"]["path"]
        prepared = training_data(cache_path, config)
        check_same_cache(prepared.cache, cache_path, saved)
        split = read_split(run_dir, prepared.samples)
        strategy = distribution_strategy(config.strategy)
        check_even_first_batches(prepared, split, config.batch_size, strategy)
        with marked_if_interrupted(run_dir):
            saved["status"] = "evaluating" if fitted else "running"
            save_json(run_dir, "config.json", saved)
            with tracked_run(tracking, run_dir, saved) as tracked:
                result = fit_and_evaluate(
                    run_dir, prepared, config, split, saved, strategy, True, tracked, fitted
                )
                finish_tracking(tracked, result.metrics, result.interrupted)
        return result


@contextmanager
def marked_if_interrupted(run_dir: Path) -> Iterator[None]:
    """A Ctrl-C that ends a run before it could be evaluated still marks it "interrupted":
    the config.json on disk, whatever moment it was written at, so none is left "running"."""
    try:
        yield
    except BaseException as error:
        if not acted_on(error):
            raise
        if run_file(run_dir, "config.json").exists():
            run_config = read_run_config(run_dir)
            run_config["status"] = "interrupted"
            save_json(run_dir, "config.json", run_config)
        raise KeyboardInterrupt from None


def fit_and_evaluate(
    run_dir: Path,
    prepared: TrainingData,
    config: TrainConfig,
    split: np.ndarray,
    run_config: dict,
    strategy: tf.distribute.Strategy,
    resume: bool,
    extra_callbacks: list[keras.callbacks.Callback] | None = None,
    fitted: bool = False,
) -> TrainResult:
    """Fit (unless `fitted`: a resumed run that stopped between fitting and its scores),
    evaluate the best model on the held-out part, write the run's files."""
    rows = {name: np.flatnonzero(split == name) for name in SPLITS}
    # Seeds make a run on the CPU repeatable (its ops are deterministic). Not TensorFlow's
    # op determinism: under it tf.data rewrites the pipeline to decide what may run in
    # parallel, which copies the tensor over the cache's features into the rewritten graph
    # (a second copy of every feature, measured), and it runs a pipeline that starts from a
    # Python generator serially, without prefetching.
    keras.utils.set_random_seed(config.seed)
    standardisation = None
    if config.normalize and not fitted:
        train_samples = prepared.samples.take(rows["train"])
        standardisation = training_standardisation(prepared.cache, train_samples)
    mean = standardisation[0] if standardisation else None
    augmentation = prepared.augmentation(config, mean)
    datasets = {
        name: prepared.dataset(
            rows[name], config.batch_size, name == "train", config.seed, augmentation
        )
        for name in SPLITS
        if len(rows[name])
    }
    interrupted = False
    if not fitted:
        if "val" in datasets and holds_validation(
            prepared, len(rows["val"]), memory_limit_mb(config)
        ):
            datasets["val"] = datasets["val"].cache()
        with strategy.scope():
            model = compiled_classifier(prepared, rows["train"], config, standardisation)
        log.info(
            "%s: %s trainable parameters; %s samples; %d replica(s)",
            config.preset,
            f"{trainable_parameters(model):,}",
            ", ".join(f"{n} {len(r)}" for n, r in rows.items()),
            strategy.num_replicas_in_sync,
        )
        started = time.perf_counter()
        interrupted = fit(
            model, datasets, prepared.y[rows["train"]], run_dir, config, resume, extra_callbacks
        )
        # seconds of training, summed over resumes: file times do not survive a copy
        run_config["train_seconds"] = run_config.get("train_seconds", 0.0) + round(
            time.perf_counter() - started, 1
        )
        if not (run_dir / "model.keras").exists():
            raise KeyboardInterrupt  # stopped before the first epoch ended: nothing to evaluate
        if not interrupted:  # a process that dies from here on resumes by evaluating
            run_config["status"] = "evaluating"
            save_json(run_dir, "config.json", run_config)
            shutil.rmtree(run_file(run_dir, "backup"), ignore_errors=True)

    best = load_best_model(run_dir)
    part = held_out_part(rows)
    metrics = {**compute_metrics(best, prepared, rows[part]), "split": part}
    save_json(run_dir, "metrics.json", metrics)
    history = read_history(run_dir)
    plot_learning_curves(history, inside(run_dir, "learning_curves.png"))
    plot_confusion_matrix(metrics, inside(run_dir, "confusion_matrix.png"))
    run_config["status"] = "interrupted" if interrupted else "finished"
    run_config["replicas"] = strategy.num_replicas_in_sync
    save_json(run_dir, "config.json", run_config)
    return TrainResult(run_dir, metrics, len(history), interrupted)


def fit(
    model: keras.Model,
    datasets: dict[str, tf.data.Dataset],
    train_y: np.ndarray,
    run_dir: Path,
    config: TrainConfig,
    resume: bool,
    extra_callbacks: list[keras.callbacks.Callback] | None,
) -> bool:
    """Keras' fit with the run folder's callbacks; returns whether Ctrl-C stopped it."""
    monitor = "val_loss" if "val" in datasets else "loss"
    weigh = config.class_weight or config.background  # background must not swamp gestures
    try:
        model.fit(
            datasets["train"],
            validation_data=datasets.get("val"),
            epochs=config.epochs,
            callbacks=[
                *training_callbacks(run_dir, monitor, config.patience, resume),
                *(extra_callbacks or []),
            ],
            class_weight=balanced_class_weights(train_y) if weigh else None,
            shuffle=False,  # the dataset shuffles, from the seed
            verbose=2,
        )
    except OSError as error:  # a full disk or quota while Keras writes its files
        raise RunError(
            f"training stopped: cannot write in {run_dir} ({str(error).splitlines()[0][:200]}); "
            "free some space, then run the same command with --resume"
        ) from None
    except BaseException as error:
        if not acted_on(error):
            raise
        log.warning("interrupted: the run folder keeps the best model so far; --resume goes on")
        return True
    return False


def distribution_strategy(name: str) -> tf.distribute.Strategy:
    """Data parallelism on this machine. `auto` mirrors over the GPUs when there are two or
    more, `mirrored` over the GPUs or, without any, over the logical CPU devices, `none` uses
    one device. Each batch of `batch_size` is split between the replicas. (Several machines:
    Keras 3's fit does not support MultiWorkerMirroredStrategy, keras-team/keras#20585.)"""
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if name == "auto" and len(gpus) >= 2 or name == "mirrored" and gpus:
        return tf.distribute.MirroredStrategy(gpus)
    if name == "mirrored":
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        if len(cpus) < 2:
            log.warning("--strategy mirrored: one device (no GPU, one CPU device); no gain")
        return tf.distribute.MirroredStrategy(cpus)
    return tf.distribute.get_strategy()


def start_run_folder(
    run_dir: Path,
    prepared: TrainingData,
    cache_path: str | Path,
    config: TrainConfig,
    split: np.ndarray,
    split_source: str,
) -> dict:
    """Write split.csv and config.json (status "running") before training starts."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunError(f"cannot create the run folder {run_dir}: {error}") from None
    check_run_folder(run_dir)
    samples, cache = prepared.samples, prepared.cache
    table = pd.DataFrame(
        {
            "sample_id": samples.ids,
            "recording_id": samples.recordings,
            "label": samples.labels,
            "split": split,
        }
    )
    save_bytes(run_dir, "split.csv", table.to_csv(index=False).encode())
    run_config = {
        "hparams": asdict(config),
        "window": asdict(prepared.window),
        "classes": prepared.classes,
        "split": split_source,
        "cache": {
            "path": str(Path(cache_path).resolve()),
            **({"url": url} if (url := copy_source(cache_path)) else {}),  # a local copy's
            "fingerprint": cache.fingerprint,
            "content_digest": cache.content_digest,
            "schema_version": cache.schema_version,
            "recordings": len(cache.recordings["recording_id"]),
            "classes": cache.classes,
            "feature_dim": cache.feature_dim,
            "dtype": cache.manifest["dtype"],
            "random_weights": cache.random_weights,
        },
        "extractor": cache.manifest["extractor"],
        "files": cache.manifest.get("files", {}),
        "package_version": __version__,
        "status": "running",
    }
    save_json(run_dir, "config.json", run_config)
    return run_config


def compiled_classifier(
    prepared: TrainingData,
    train_rows: np.ndarray,
    config: TrainConfig,
    standardisation: tuple[np.ndarray, np.ndarray] | None,
) -> keras.Model:
    """The configured classifier, standardising with statistics of the training clips only
    (`standardisation`: their mean and variance). With two feature groups or more, each
    group weighs the same: its columns' variances are multiplied by its number of columns,
    so 126 values of a hand's shape do not drown its 12 of motion."""
    mean = variance = None
    train_samples = prepared.samples.take(train_rows)
    cache = prepared.cache
    if standardisation is not None:
        mean, variance = standardisation[0], standardisation[1].copy()
        if prepared.groups and len(prepared.groups) > 1:
            for columns in prepared.groups.values():
                variance[columns] *= len(columns)
    projection = None  # a fixed linear layer after the standardisation
    components, columns = reduce_components(config.reduce), prepared.columns
    if components:
        projection = pca_projection(
            cache, train_samples, mean, variance, components, config.seed, columns
        )
    elif columns is not None:  # --features: the chosen groups' values, the others left out
        projection = (selection(cache.feature_dim, columns), np.zeros(len(columns), np.float32))
    model = build_classifier(
        config.preset,
        len(prepared.classes),
        (prepared.window.clips, cache.feature_dim),
        units=config.units,
        cell=config.cell,
        dense=config.dense,
        dropout=config.dropout,
        mean=mean,
        variance=variance,
        projection=projection,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(config.lr),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model
