"""Training data, prepared in one place: the cache opened within the memory budget, the split,
the classes and window, the statistics, and what the run will read."""

from __future__ import annotations

import functools
import gc
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import tensorflow as tf

from gesture_cache.backbones.base import feature_layout_of
from gesture_cache.cache.manifest import feature_dim, read_manifest
from gesture_cache.cache.reader import Cache
from gesture_cache.cache.verify import PROCESS_MB, load_verified_cache
from gesture_cache.common.errors import ConfigError, RunError
from gesture_cache.data.pipeline import Augmentation, GroupDropout, Mirror, window_dataset
from gesture_cache.data.samples import Samples, cache_samples, sample_clips
from gesture_cache.data.splits import official_split, official_splits, split_samples
from gesture_cache.data.statistics import check_components
from gesture_cache.data.windows import Window
from gesture_cache.train.config import TrainConfig, reduce_components
from gesture_cache.train.model import (
    preset_hparams,
    training_state_mb,
)
from gesture_cache.train.run_folder import read_split_table, run_file

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """A verified cache turned into samples, labels and the window that reads them."""

    cache: Cache
    samples: Samples
    classes: list[str]
    y: np.ndarray  # class index of each sample
    window: Window
    features: np.ndarray | None  # the whole cache's features, or None when streamed
    columns: np.ndarray | None = None  # the feature groups chosen (`--features`), or all
    groups: dict[str, np.ndarray] | None = None  # the chosen groups' columns, when grouped
    mirror: Mirror | None = None  # left <-> right augmentation of training windows

    def dataset(
        self, rows: np.ndarray, batch_size: int, shuffle: bool, seed: int,
        augmentation: Augmentation | None = None,
    ):  # fmt: skip
        return window_dataset(
            self.cache,
            self.features,
            self.samples.take(rows),
            self.y[rows],
            self.window,
            batch_size,
            shuffle,
            seed,
            augmentation if shuffle else None,
        )

    def augmentation(self, config: TrainConfig, mean: np.ndarray | None) -> Augmentation:
        """The training windows' augmentation: the mirror, and `--group-dropout` filling a
        dropped group with the training `mean` (zero without standardisation)."""
        dropout = None
        if config.group_dropout:
            groups = np.zeros((len(self.groups), self.cache.feature_dim), np.float32)
            for row, columns in enumerate(self.groups.values()):
                groups[row, columns] = 1.0
            fill = np.zeros(self.cache.feature_dim, np.float32) if mean is None else mean
            dropout = GroupDropout(groups, np.asarray(fill, np.float32), config.group_dropout)
        return Augmentation(self.mirror, dropout)


def resolve(config: TrainConfig) -> TrainConfig:
    """The config with every `None` filled from its preset."""
    preset = preset_hparams(config.preset)
    return replace(config, **{k: v for k, v in preset.items() if getattr(config, k) is None})


def open_training_cache(
    cache_path: str | Path, config: TrainConfig, manifest: dict | None = None
) -> Cache:
    """The cache, verified, in memory when the whole process fits --memory-limit (the model's
    training state counted), else its tables only, for streaming. `manifest`: the one read
    already (the manifest is read once on the whole way)."""
    manifest = manifest or read_manifest(cache_path)
    hparams = resolve(config)
    model_mb = training_state_mb(
        hparams.units,
        hparams.cell,
        hparams.dense,
        feature_dim(manifest),
        len(manifest["classes"]) + config.background,
    )
    return load_verified_cache(
        cache_path, memory_limit_mb(config), PROCESS_MB + model_mb, manifest=manifest
    )


def training_data(
    cache: str | Path | Cache,
    config: TrainConfig,
    *,
    classes: list[str] | None = None,
    window: Window | None = None,
) -> TrainingData:
    """The samples of a cache laid out as `config` asks. `cache` is a path (opened here) or a
    cache opened already (`tune` opens it once for all its trials); `classes` and `window`
    are the cache's labels and the config's window unless given (a run being evaluated
    gives its own)."""
    if not isinstance(cache, Cache):
        cache = open_training_cache(cache, config)
    samples = cache_samples(cache, config.background, config.background_label)
    classes = classes or sorted(set(samples.labels.tolist()))
    if window is None:
        window = Window(config.window_clips, config.window_step, config.window_sampling)
        if cache.fixed_clips is not None and window.clips != cache.fixed_clips:
            log.info("a schema-1 cache: windows are its %d stored clips", cache.fixed_clips)
            window = Window(cache.fixed_clips)
    y = np.searchsorted(classes, samples.labels).astype(np.int32)
    columns, groups, mirror = feature_choice(cache, config, classes)
    return TrainingData(cache, samples, classes, y, window, cache.features, columns, groups, mirror)


def feature_choice(
    cache: Cache, config: TrainConfig, classes: list[str]
) -> tuple[np.ndarray | None, dict[str, np.ndarray] | None, Mirror | None]:
    """`--features` as the columns they keep, the chosen groups' columns, and `--mirror` as
    the augmentation, from the feature layout the cache's backbone offers; each refused in
    one line for features that offer none (C3D's, I3D's), as is `--group-dropout` with
    fewer than two groups chosen."""
    spec = cache.manifest["extractor"]
    layout = feature_layout_of(spec)
    asked = [
        flag
        for flag, value in (("--features", config.features), ("--mirror", config.mirror),
                            ("--group-dropout", config.group_dropout))
        if value
    ]  # fmt: skip
    if layout is None:
        if asked:
            raise ConfigError(
                f"{asked[0]}: the cache's {spec['model']} features are one block, with no "
                "groups to choose and no mirror image; it applies to hand landmarks "
                "(--backbone hands)"
            )
        return None, None, None
    columns, chosen = None, tuple(layout.groups)
    if config.features is not None:
        unknown = [g for g in config.features if g not in layout.groups]
        if unknown:
            raise ConfigError(
                f"--features {','.join(config.features)}: the cache ({layout.name}) has no "
                f"group {unknown[0]!r}; it has {', '.join(layout.groups)}"
            )
        columns, chosen = layout.columns(config.features), config.features
    if config.group_dropout and len(chosen) < 2:
        raise ConfigError(
            f"--group-dropout {config.group_dropout}: it drops one feature group of several, "
            f"and the training uses one ({chosen[0]}, of {layout.name})"
        )
    groups = {name: layout.groups[name] for name in chosen}
    return columns, groups, mirror_of(layout, config, classes)


def mirror_of(layout, config: TrainConfig, classes: list[str]) -> Mirror | None:
    """The augmentation `--mirror` asks for: every class (but the background, its own
    mirror) must say which class its mirror image is."""
    if config.mirror is None:
        return None
    if layout.mirror is None:
        raise ConfigError(f"--mirror: the cache's features ({layout.name}) have no mirror image")
    table = {config.background_label: config.background_label, **config.mirror}
    missing = [c for c in classes if c not in table]
    if missing:
        raise ConfigError(
            f"--mirror names no mirror image for {', '.join(missing)}: give each class's "
            "(a pose that looks the same mirrored maps to itself, e.g. thumbs_up=thumbs_up)"
        )
    strangers = sorted({table[c] for c in classes} - set(classes))
    if strangers:
        raise ConfigError(f"--mirror maps a class to {strangers[0]!r}, which the cache has not")
    return Mirror(layout.mirror, np.array([classes.index(table[c]) for c in classes]))


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
    official = official_splits(prepared.cache) if config.split != "random" else None
    if official is not None:
        log.info("the cache's official split: test and val as the dataset lists them")
        split = official_split(
            prepared.samples, official, config.val_size, config.seed, config.allow_duplicates
        )
        return split, "official"
    if config.split == "official":
        raise ConfigError(
            f"--split official: cache {prepared.cache.path} has no split column "
            "(gesture-cache import writes one); use --split random"
        )
    split = split_samples(prepared.samples, config.test_size, config.val_size, config.seed)
    return split, "random"


def check_reduce(prepared: TrainingData, split: np.ndarray, config: TrainConfig) -> None:
    """`--reduce pca:N`, checked before any file is written."""
    components = reduce_components(config.reduce)
    if components:
        train_samples = prepared.samples.take(np.flatnonzero(split == "train"))
        clips = len(sample_clips(train_samples, prepared.cache.clip_valid))
        chosen = prepared.columns
        width = prepared.cache.feature_dim if chosen is None else len(chosen)
        check_components(components, clips, width)


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


def holds_validation(prepared: TrainingData, samples: int, limit_mb: float) -> bool:
    """Whether a streamed run keeps the validation windows in memory after the first epoch,
    so that later epochs read every shard once rather than twice (training's pass and
    validation's): when they take at most half of --memory-limit."""
    window_mb = prepared.window.clips * prepared.cache.feature_dim * 4 / 2**20
    return prepared.features is None and samples * window_mb <= limit_mb / 2


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


def split_from_run(other_run: Path, samples: Samples) -> np.ndarray:
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


# A batch of windows is held several times over while a step runs (gathered features, the
# recurrent layers' activations and their gradients).
WINDOW_BATCH_COPIES = 4
