"""Fit, evaluate and the run folder.

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

import functools
import gc
import json
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
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)
from sklearn.utils.class_weight import compute_class_weight

from gesture_cache import __version__, data, report
from gesture_cache.cache import Cache, feature_dim, read_manifest
from gesture_cache.config import TrainConfig, reduce_components
from gesture_cache.errors import ConfigError, RunError
from gesture_cache.files import LOCK, acquire_lock, atomic_write, inside
from gesture_cache.integrity import PROCESS_MB, load_verified_cache
from gesture_cache.interrupts import acted_on
from gesture_cache.model import (
    build_classifier,
    preset_hparams,
    trainable_parameters,
    training_state_mb,
)
from gesture_cache.run import (
    check_run_folder,
    check_same_cache,
    load_best_model,
    read_run_config,
    read_split,
    read_split_table,
    run_file,
    save_bytes,
    save_json,
)
from gesture_cache.windows import SPLITS, Window

log = logging.getLogger(__name__)
# A batch of windows is held several times over while a step runs (gathered features, the
# recurrent layers' activations and their gradients).
WINDOW_BATCH_COPIES = 4


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict
    epochs: int
    interrupted: bool


@dataclass
class TrainingData:
    """A verified cache turned into samples, labels and the window that reads them."""

    cache: Cache
    samples: data.Samples
    classes: list[str]
    y: np.ndarray  # class index of each sample
    window: Window
    features: np.ndarray | None  # the whole cache's features, or None when streamed

    def dataset(self, rows: np.ndarray, batch_size: int, shuffle: bool, seed: int):
        return data.window_dataset(
            self.cache,
            self.features,
            self.samples.take(rows),
            self.y[rows],
            self.window,
            batch_size,
            shuffle,
            seed,
        )


def resolve(config: TrainConfig) -> TrainConfig:
    """The config with every `None` filled from its preset."""
    preset = preset_hparams(config.preset)
    return replace(config, **{k: v for k, v in preset.items() if getattr(config, k) is None})


def training_data(cache_path: str | Path, config: TrainConfig) -> TrainingData:
    """Load and verify the cache (in memory when the whole process fits --memory-limit),
    and lay out its samples as `config` asks."""
    manifest = read_manifest(cache_path, check_hashes=False)
    hparams = resolve(config)
    model_mb = training_state_mb(
        hparams.units,
        hparams.cell,
        hparams.dense,
        feature_dim(manifest),
        len(manifest["classes"]) + config.background,
    )
    cache = load_verified_cache(cache_path, memory_limit_mb(config), PROCESS_MB + model_mb)
    samples = data.cache_samples(cache, config.background, config.background_label)
    classes = sorted(set(samples.labels.tolist()))
    window = Window(config.window_clips, config.window_step, config.window_sampling)
    if cache.fixed_clips is not None and window.clips != cache.fixed_clips:
        log.info("a schema-1 cache: windows are its %d stored clips", cache.fixed_clips)
        window = Window(cache.fixed_clips)
    y = np.searchsorted(classes, samples.labels).astype(np.int32)
    return TrainingData(cache, samples, classes, y, window, cache.features)


def cache_freed(function):
    """Collect garbage once `function` has returned: Keras models hold reference cycles,
    and through them the tf.data gather function and its tensor over the cache's features,
    so without a collection those features outlived the call until Python's cyclic garbage
    collector next ran (measured: `tune` held two Jester-size caches, 10.8 GB, at its second
    trial)."""

    @functools.wraps(function)
    def collected(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        finally:
            gc.collect()

    return collected


@cache_freed
def train(
    cache_path: str | Path,
    run_dir: str | Path,
    config: TrainConfig,
    split_from: str | Path | None = None,
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> TrainResult:
    """Train a classifier on a cache into a new run folder. `split_from` reuses an earlier
    run's split (samples it does not know go to training, with a warning); `callbacks` are
    added to Keras' (a search's pruning)."""
    run_dir = Path(run_dir)
    refuse_existing_run(run_dir)
    config = resolve(config)
    prepared = training_data(cache_path, config)
    check_trainable(prepared, cache_path, config)
    split, split_source = choose_split(prepared, config, split_from)
    strategy = distribution_strategy(config.strategy)
    check_even_first_batches(prepared, split, config.batch_size, strategy)  # before any file
    check_reduce(prepared, split, config)
    with holding(run_dir, create=True):
        refuse_existing_run(run_dir)  # another process may have started one meanwhile
        run_config = start_run_folder(run_dir, prepared, cache_path, config, split, split_source)
        with marked_if_interrupted(run_dir, run_config):
            return fit_and_evaluate(
                run_dir, prepared, config, split, run_config, strategy, False, callbacks
            )


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


def choose_split(
    prepared: TrainingData, config: TrainConfig, split_from: str | Path | None
) -> tuple[np.ndarray, str]:
    """(split, where it came from): an earlier run's (`split_from`), the cache's official
    one (its split column; `--split auto` or `official`), or one drawn from the seed."""
    if split_from:
        if config.split != "auto":
            raise ConfigError(
                f"--split-from {split_from} reuses that run's split; drop --split {config.split}"
            )
        return split_from_run(Path(split_from), prepared.samples), f"from {split_from}"
    official = data.official_splits(prepared.cache) if config.split != "random" else None
    if official is not None:
        log.info("the cache's official split: test and val as the dataset lists them")
        split = data.official_split(
            prepared.samples, official, config.val_size, config.seed, config.allow_duplicates
        )
        return split, "official"
    if config.split == "official":
        raise ConfigError(
            f"--split official: cache {prepared.cache.path} has no split column "
            "(gesture-cache import writes one); use --split random"
        )
    split = data.split_samples(prepared.samples, config.test_size, config.val_size, config.seed)
    return split, "random"


def check_reduce(prepared: TrainingData, split: np.ndarray, config: TrainConfig) -> None:
    """`--reduce pca:N` needs N training clips at least, and N at most the feature size."""
    components = reduce_components(config.reduce)
    if components:
        train_samples = prepared.samples.take(np.flatnonzero(split == "train"))
        clips = len(data.sample_clips(train_samples, prepared.cache.clip_valid))
        most = min(clips, prepared.cache.feature_dim)
        if components > most:
            raise ConfigError(
                f"--reduce pca:{components}: the training part has {clips} clips of "
                f"{prepared.cache.feature_dim} values; give at most {most}"
            )


def check_trainable(prepared: TrainingData, cache_path: str | Path, config: TrainConfig) -> None:
    """What the cache can give must be what the settings ask for: two classes or more, the
    background class when asked, and batches of windows that fit in memory (a window longer
    than every recording is padding, which costs memory and nothing else). Checked before
    the run folder is written."""
    if config.background and config.background_label not in prepared.classes:
        raise RunError(
            f"--background: cache {cache_path} has no background stretches (every frame of "
            "its recordings is in a segment, or each recording is one whole segment), so "
            "there is no background class to learn; annotate continuous recordings with "
            "segments, or train without --background"
        )
    if len(prepared.classes) < 2:
        raise RunError(
            f"cache {cache_path} has one class ({', '.join(prepared.classes)}): "
            "a classifier needs at least two (--background adds the background class)"
        )
    window, cache = prepared.window, prepared.cache
    clips = cache.recordings["clip_count"]
    if window.clips > clips.max():
        log.info(
            "--window-clips %d: the longest recording has %d clips; windows are padded",
            window.clips,
            clips.max(),
        )
    limit_mb = memory_limit_mb(config) or physical_memory_mb()
    batch_mb = (
        WINDOW_BATCH_COPIES * config.batch_size * window.clips * cache.feature_dim * 4 / 2**20
    )
    if batch_mb > limit_mb:
        raise ConfigError(
            f"--window-clips {window.clips} with --batch-size {config.batch_size}: a batch of "
            f"windows needs about {batch_mb:,.0f} MB, more than the {limit_mb:,.0f} MB "
            f"{limit_source(config)} "
            f"(the longest recording has {clips.max()} clips); lower either"
        )
    if window.step is not None:
        span = (window.clips - 1) * window.step + 1
        shorter = int((clips < span).sum())
        if shorter:
            log.warning(
                "--window-clips %d --window-step %d: a window spans %d clips, more than %d of "
                "the %d recordings have (the shortest %d); their windows are clamped and padded",
                window.clips,
                window.step,
                span,
                shorter,
                len(clips),
                int(clips.min()),
            )


def physical_memory_mb() -> float:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20


def limit_source(config: TrainConfig) -> str:
    if config.memory_limit_mb is None:
        return "half of this machine's memory allows (--memory-limit)"
    return "--memory-limit allows" if config.memory_limit_mb else "this machine has"


def memory_limit_mb(config: TrainConfig) -> float:
    """--memory-limit, or by default half this machine's memory: a Jester-size cache
    (4.85 GB of features) trains in memory on a 16 GB machine, where streaming from gzip
    shards runs at about half the speed."""
    return physical_memory_mb() / 2 if config.memory_limit_mb is None else config.memory_limit_mb


@cache_freed
def resume(
    run_dir: str | Path, cache_path: str | Path | None = None, overrides: dict | None = None
) -> TrainResult:
    """Continue an interrupted run with its saved settings and split. The cache must hold
    exactly the data it held when the run began (its content digest)."""
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
        saved["status"] = "evaluating" if fitted else "running"
        save_json(run_dir, "config.json", saved)
        with marked_if_interrupted(run_dir, saved):
            return fit_and_evaluate(
                run_dir, prepared, config, split, saved, strategy, resume=True, fitted=fitted
            )


@contextmanager
def marked_if_interrupted(run_dir: Path, run_config: dict) -> Iterator[None]:
    """A Ctrl-C that ends a run before it could be evaluated still marks it "interrupted"."""
    try:
        yield
    except BaseException as error:
        if not acted_on(error):
            raise
        run_config["status"] = "interrupted"
        save_json(run_dir, "config.json", run_config)
        raise KeyboardInterrupt from None


def holds_validation(prepared: TrainingData, samples: int, limit_mb: float) -> bool:
    """Whether a streamed run keeps the validation windows in memory after the first epoch,
    so that later epochs read every shard once rather than twice (training's pass and
    validation's): when they take at most half of --memory-limit."""
    window_mb = prepared.window.clips * prepared.cache.feature_dim * 4 / 2**20
    return prepared.features is None and samples * window_mb <= limit_mb / 2


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
    datasets = {
        name: prepared.dataset(rows[name], config.batch_size, name == "train", config.seed)
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
            model = compiled_classifier(prepared, rows["train"], config)
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
    report.plot_learning_curves(history, inside(run_dir, "learning_curves.png"))
    report.plot_confusion_matrix(metrics, inside(run_dir, "confusion_matrix.png"))
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


def read_history(run_dir: Path) -> pd.DataFrame:
    """history.csv, one row per finished epoch (none when it is empty: a run killed before
    its first epoch ended leaves a file without even a header)."""
    path = run_file(run_dir, "history.csv")
    try:
        return pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return pd.DataFrame({"epoch": pd.Series(dtype=int)})


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


def check_even_first_batches(
    prepared: TrainingData, split: np.ndarray, batch_size: int, strategy: tf.distribute.Strategy
) -> None:
    """Keras' distributed fit averages the first batch of the training and validation data
    over the replicas, which fails when they get different numbers of samples: refuse
    settings that could give an uneven first batch, with what to change."""
    replicas = strategy.num_replicas_in_sync
    if replicas < 2:
        return
    advice = "lower --batch-size, or use --strategy none"
    if batch_size % replicas:
        raise ConfigError(
            f"--batch-size {batch_size} does not split evenly over {replicas} replicas; "
            f"use a multiple of {replicas}, or --strategy none"
        )
    for name in ("train", "val"):
        samples = prepared.samples.take(np.flatnonzero(split == name))
        if not len(samples):
            continue
        # streamed batches never mix shards: any shard's first batch may come first
        groups = np.unique(samples.shard, return_counts=True)[1]
        counts = groups if prepared.features is None else [len(samples)]
        uneven = [n for n in counts if n < batch_size and n % replicas]
        if uneven:
            raise ConfigError(
                f"--strategy mirrored over {replicas} replicas: a first {name} batch of "
                f"{uneven[0]} samples would not split evenly (Keras cannot start a distributed "
                f"fit on it); {advice}"
            )


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


def split_from_run(other_run: Path, samples: data.Samples) -> np.ndarray:
    """An earlier run's split for these samples: known samples keep their split, new ones go
    to training (said with a count); samples it had that the cache lacks are reported."""
    split_of = read_split_table(run_file(other_run, "split.csv"))
    split = np.array([split_of.get(v, "train") for v in samples.ids])
    new = sum(v not in split_of for v in samples.ids)
    if new:
        log.warning("--split-from %s: %d samples it did not have go to training", other_run, new)
    gone = len(set(split_of) - set(samples.ids))
    if gone:
        log.warning("--split-from %s: %d of its samples are not in this cache", other_run, gone)
    if not (split == "test").any():
        raise RunError(f"--split-from {other_run}: none of its test samples is in this cache")
    return split


def compiled_classifier(
    prepared: TrainingData, train_rows: np.ndarray, config: TrainConfig
) -> keras.Model:
    """The configured classifier, standardising with statistics of the training clips only."""
    mean = variance = None
    train_samples = prepared.samples.take(train_rows)
    cache = prepared.cache
    if config.normalize:
        mean, variance = data.training_standardisation(cache, train_samples)
    projection = None
    components = reduce_components(config.reduce)
    if components:
        projection = data.pca_projection(
            cache, train_samples, mean, variance, components, config.seed
        )
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
    prepared = training_data(path, config)
    classes = saved.get("classes", saved["cache"]["classes"])
    if cache_path is None:
        check_same_cache(prepared.cache, path, saved)
        split = read_split(run_dir, prepared.samples)
        part = held_out_part({name: np.flatnonzero(split == name) for name in SPLITS})
        rows = np.flatnonzero(split == part)
    else:
        part = "all"
        if prepared.cache.fingerprint != saved["cache"]["fingerprint"]:
            check_same_cache(prepared.cache, path, saved)  # raises, naming both fingerprints
        unknown = sorted(set(prepared.classes) - set(classes))
        if unknown:
            raise RunError(f"cache {path} has classes the run never saw: {unknown}")
        rows = np.arange(len(prepared.samples))
    if not len(rows):
        raise RunError(f"cache {path} holds none of the samples to evaluate run {run_dir} on")
    prepared.classes = classes
    prepared.y = np.searchsorted(classes, prepared.samples.labels).astype(np.int32)
    prepared.window = Window(**saved.get("window", asdict(prepared.window)))
    return {**compute_metrics(load_best_model(run_dir), prepared, rows), "split": part}


def held_out_part(rows: dict[str, np.ndarray]) -> str:
    """Where a run is scored: its test part, or, for a dataset whose labelled lists end at
    validation (Jester's test list is unlabelled), its val part, as results are reported."""
    if len(rows["test"]) or not len(rows["val"]):
        return "test"
    log.warning("the split has no labelled test part: scores are on the val part")
    return "val"
