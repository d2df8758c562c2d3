"""Splits and tf.data pipelines over a cache.

The split is drawn from a seed over sorted video ids (stratified by label, grouped when the
CSV had a `group` column or one file is cached under two paths), so the same cache and seed
give the same split on every machine.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import tensorflow as tf
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold, train_test_split
from sklearn.preprocessing import StandardScaler

from gesture_cache.cache import Cache
from gesture_cache.errors import ConfigError

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


def split_groups(groups: np.ndarray, contents: np.ndarray) -> np.ndarray | None:
    """Which videos must share a split: the same `group`, or the same file content (one
    file listed under two paths). None when nothing ties any two videos together.

    A blank group cell makes that video a group of its own (with a warning when other
    cells are filled), so one missing value never switches grouping off for everyone."""
    has_group = groups != ""
    duplicated = len(set(contents.tolist())) < len(contents)
    if not has_group.any() and not duplicated:
        return None
    if has_group.any() and not has_group.all():
        log.warning(
            "%d of %d videos have no group: each of them is a group of its own",
            int((~has_group).sum()),
            len(groups),
        )
    n = len(groups)
    keys = [f"group:{g}" if g else f"video:{i}" for i, g in enumerate(groups)]
    key_codes, key_names = pd.factorize(np.array(keys, dtype=object))
    content_codes, _ = pd.factorize(np.asarray(contents, dtype=object))
    # a graph over videos, group keys and contents; its components are the split's groups
    rows = np.concatenate([np.arange(n), np.arange(n)])
    columns = np.concatenate([n + key_codes, n + len(key_names) + content_codes])
    size = n + len(key_names) + content_codes.max() + 1
    graph = coo_matrix((np.ones(2 * n), (rows, columns)), shape=(size, size))
    _, component = connected_components(graph, directed=False)
    return component[:n].astype(str)


def split_videos(
    video_ids: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    test_size: float,
    val_size: float,
    seed: int,
    contents: np.ndarray | None = None,
) -> np.ndarray:
    """'train', 'val' or 'test' for each video, in the order given. `contents` (file sha256)
    keeps identical files in one split."""
    if not 0 < test_size < 1 or not 0 <= val_size < 1 or test_size + val_size >= 1:
        raise ConfigError(
            f"--test-size {test_size} and --val-size {val_size} must be fractions "
            "that leave videos to train on"
        )
    order = np.argsort(video_ids, kind="stable")
    ids, y = video_ids[order], labels[order]
    contents = video_ids if contents is None else contents
    tied = split_groups(groups[order], contents[order])
    grouped = tied is not None
    g = tied if grouped else groups[order]
    rest, test = _split(np.arange(len(ids)), y, g if grouped else None, test_size, seed)
    split = np.full(len(ids), "train", dtype=object)
    split[test] = "test"
    if val_size:
        sub = rest
        _, val = _split(sub, y[sub], g[sub] if grouped else None, val_size / (1 - test_size), seed)
        split[val] = "val"
    result = np.empty(len(ids), dtype=object)
    result[order] = split
    return result.astype(str)


def _split(
    indices: np.ndarray, labels: np.ndarray, groups: np.ndarray | None, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(kept, taken) positions of `indices`; `taken` is about `fraction` of them."""
    try:
        if groups is None:
            return train_test_split(indices, test_size=fraction, stratify=labels, random_state=seed)
        folds = max(2, round(1 / fraction))
        splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
        keep, take = next(splitter.split(indices, labels, groups))
    except ValueError as error:  # too few videos (or groups) of some class to stratify
        log.warning("split cannot be stratified (%s); drawing it unstratified", error)
        if groups is None:
            return train_test_split(indices, test_size=fraction, random_state=seed)
        splitter = GroupShuffleSplit(1, test_size=fraction, random_state=seed)
        keep, take = next(splitter.split(indices, labels, groups))
    return indices[keep], indices[take]


def valid_first(features: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Move each video's valid clips to the front (keeping their order): right-padded masks."""
    order = np.argsort(~mask, axis=1, kind="stable")
    return (
        np.take_along_axis(features, order[:, :, None], axis=1),
        np.take_along_axis(mask, order, axis=1),
    )


def standardisation(
    features: np.ndarray, mask: np.ndarray, rows: np.ndarray, chunk: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance per feature over the valid clips of `rows` (the training split),
    `chunk` videos at a time, so the float64 copy stays small.

    scikit-learn's StandardScaler treats constant features as spread 1; a tiny epsilon would
    turn fc7 dimensions that are zero in every training video into huge test-time values.
    """
    scaler = StandardScaler()
    for start in range(0, len(rows), chunk):
        chosen = rows[start : start + chunk]
        scaler.partial_fit(features[chosen][mask[chosen]].astype(np.float64))
    return scaler.mean_.astype(np.float32), (scaler.scale_**2).astype(np.float32)


def streaming_standardisation(cache: Cache, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`standardisation` over the chosen rows, reading one shard at a time."""
    scaler = StandardScaler()
    for chosen, features in _read_by_shard(cache, rows):
        scaler.partial_fit(features[cache.mask[chosen]].astype(np.float64))
    return scaler.mean_.astype(np.float32), (scaler.scale_**2).astype(np.float32)


def cache_tensors(cache: Cache) -> tuple[tf.Tensor, tf.Tensor] | None:
    """The loaded cache's features and masks as tensors, once for every split (None when
    the cache streams from disk)."""
    if cache.features is None:
        return None
    return tf.constant(cache.features), tf.constant(cache.mask)


def in_memory_dataset(
    features: tf.Tensor,
    mask: tf.Tensor,
    rows: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    shuffle: bool,
    seed: int,
) -> tf.data.Dataset:
    """Row indices -> shuffle -> batch -> gather from the whole cache's tensors -> prefetch.

    `features`/`mask` hold every video of the cache once, valid clips first (one copy
    shared by all splits); `y` holds the labels of `rows`. Shuffling and batching indices,
    then gathering a whole batch at once, keeps tf.data's per-element cost off the (T, D)
    features: this runs as fast as `fit` on tensors.
    """
    rows, y = tf.constant(rows, tf.int64), tf.constant(y)

    def gather(positions: tf.Tensor) -> tuple:
        chosen = tf.gather(rows, positions)
        batch = tf.cast(tf.gather(features, chosen), tf.float32)
        return (batch, tf.gather(mask, chosen)), tf.gather(y, positions)

    dataset = tf.data.Dataset.range(len(y))
    if shuffle:
        dataset = dataset.shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
    return (
        dataset.batch(batch_size)
        .map(gather, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def streaming_dataset(
    cache: Cache, rows: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool, seed: int
) -> tf.data.Dataset:
    """Reads the chosen rows shard by shard (for caches larger than --memory-limit)."""
    T, D = cache.manifest["feature_shape"]
    label_of = dict(zip(rows.tolist(), y.tolist()))
    rng = np.random.default_rng(seed)

    def videos() -> Iterator:
        for chosen, features in _read_by_shard(cache, rows, rng if shuffle else None):
            features, mask = valid_first(features, cache.mask[chosen])
            for row, video_features, video_mask in zip(chosen, features, mask):
                yield (video_features, video_mask), label_of[row]

    signature = (
        (tf.TensorSpec((T, D), cache.manifest["dtype"]), tf.TensorSpec((T,), tf.bool)),
        tf.TensorSpec((), tf.int32),
    )
    dataset = tf.data.Dataset.from_generator(videos, output_signature=signature)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(len(rows)))  # Keras' steps
    if shuffle:
        dataset = dataset.shuffle(4 * batch_size, seed=seed)
    return (
        dataset.batch(batch_size)
        .map(_to_float32, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def _read_by_shard(
    cache: Cache, rows: np.ndarray, rng: np.random.Generator | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(rows, their features) one shard at a time; with `rng`, shards and rows in random order."""
    counts = [s["videos"] for s in cache.manifest["shards"]]
    shard_of = np.repeat(np.arange(len(counts)), counts)
    start_of = np.concatenate([[0], np.cumsum(counts)])
    shards = np.unique(shard_of[rows])
    for shard in rng.permutation(shards) if rng is not None else shards:
        chosen = rows[shard_of[rows] == shard]
        if rng is not None:
            chosen = rng.permutation(chosen)
        with h5py.File(Path(cache.path) / cache.manifest["shards"][shard]["file"], "r") as f:
            block = f["features"][()]
        yield chosen, block[chosen - start_of[shard]]


def _to_float32(inputs: tuple, y: tf.Tensor) -> tuple:
    features, mask = inputs
    return (tf.cast(features, tf.float32), mask), y
