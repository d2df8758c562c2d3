"""tf.data pipelines of training windows: from features in memory, or streamed shard by shard."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from gesture_cache.cache.reader import ALIGNMENT, Cache, aligned_empty
from gesture_cache.data.read_ahead import ShardFiles
from gesture_cache.data.samples import Samples, batch_windows
from gesture_cache.data.windows import Window


@dataclass(frozen=True)
class Mirror:
    """Left <-> right augmentation: each training window is mirrored with probability 1/2,
    its frames' features multiplied by `matrix` (a backbone's `FeatureLayout.mirror`) and its
    label replaced by `labels[label]`."""

    matrix: np.ndarray  # (D, D)
    labels: np.ndarray  # (classes,): the class index of each class's mirror image


@dataclass(frozen=True)
class GroupDropout:
    """Each training window, with probability `rate`, has one of its feature groups (drawn
    at random) replaced by `fill` (the training mean: zero once standardised), so the model
    learns to use each group on its own and not to lean on one that merely tells the
    recordings apart (a hand's shape, where the motion is the label)."""

    groups: np.ndarray  # (G, D): 1 where a column belongs to the group
    fill: np.ndarray  # (D,)
    rate: float


@dataclass(frozen=True)
class Augmentation:
    """What is done to training windows: mirrored (`Mirror`), a group dropped
    (`GroupDropout`), or both, each drawn independently."""

    mirror: Mirror | None = None
    dropout: GroupDropout | None = None


def window_dataset(
    cache: Cache,
    features: np.ndarray | None,
    samples: Samples,
    y: np.ndarray,
    window: Window,
    batch_size: int,
    shuffle: bool,
    seed: int,
    augmentation: Augmentation | None = None,
) -> tf.data.Dataset:
    """Batches ((features (B, T, D) float32, mask (B, T) uint8), labels (B,)).

    Window positions are drawn in numpy (new random windows every epoch when shuffling);
    features are gathered inside tf.data, in parallel, from a tensor: `features`, the whole
    cache's array, which the tensor shares (`shared_tensor`); or, when it is None (over
    --memory-limit), the shards read one at a time from disk, each with the windows that
    draw from it. Masks are 0/1 uint8, which the model casts to bool: Keras' fit under a
    distribution strategy averages a first batch over the replicas, which it cannot do
    with bool.

    The generators hold only what they read (tf.data never frees a generator): the clips'
    validity, the samples' spans and, streamed, the shards' paths; not the cache.

    `augmentation` (when shuffling, i.e. training): each window mirrored with probability
    1/2 and a group dropped with the dropout's rate, the draws made in numpy with the
    windows' own generator, so a seed gives the same epochs."""
    rng = np.random.default_rng(seed)
    T, D = window.clips, cache.feature_dim
    batches = -(-len(samples) // batch_size)
    spans, clip_valid = samples.spans(), cache.clip_valid
    augmentation = augmentation if shuffle else None
    draw = Draws(augmentation, rng)
    windows_spec = (
        tf.TensorSpec((None, T), tf.int64),
        tf.TensorSpec((None, T), tf.uint8),
        tf.TensorSpec((None,), tf.int32),
        tf.TensorSpec((None,), tf.bool),
        tf.TensorSpec((None,), tf.int32),
    )
    augment = augmenter(augmentation)

    def windows_of(source: tf.Tensor, positions, mask, labels, flipped, dropped) -> tuple:
        gathered = tf.cast(tf.gather(source, positions), tf.float32)
        return (augment(gathered, flipped, dropped), mask), labels

    if features is None:
        files = ShardFiles.of(cache)
        dataset = tf.data.Dataset.from_generator(
            lambda: _shard_windows(
                files, clip_valid, spans, y, window, batch_size, shuffle, rng, draw
            ),
            output_signature=(tf.TensorSpec((None, D), cache.manifest["dtype"]), *windows_spec),
        )

        def batches_of(source: tf.Tensor, *windows):
            batched = tf.data.Dataset.from_tensor_slices(windows).batch(batch_size)
            return batched.map(lambda *batch: (source, *batch))

        gather = windows_of

    else:
        source = shared_tensor(features)
        dataset = tf.data.Dataset.from_generator(
            lambda: _epoch_windows(clip_valid, spans, y, window, shuffle, rng, draw),
            output_signature=windows_spec,
        )

        def batches_of(*windows):
            return tf.data.Dataset.from_tensor_slices(windows).batch(batch_size)

        def gather(*batch) -> tuple:
            return windows_of(source, *batch)

    dataset = dataset.flat_map(batches_of).map(gather, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(batches))  # Keras' steps
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(WITHOUT_REWRITES)


# tf.data's default graph rewrites serialize the pipeline, and the tensor over the cache's
# features that `gather` captures became a constant of that graph: a second copy of every
# feature for each dataset (measured: +1.9 GB at the first batch of each, for 1.9 GB of
# features). The pipeline needs none of them: it is parallel and prefetched by hand, and
# autotuned. (Op determinism forces such a rewrite too: `train` does not enable it.)
WITHOUT_REWRITES = tf.data.Options()


WITHOUT_REWRITES.experimental_optimization.apply_default_optimizations = False


def shared_tensor(features: np.ndarray) -> tf.Tensor:
    """A tensor over the features' own memory, through DLPack: `tf.constant` copied them
    (twice their size for float16). TensorFlow's kernels abort the process on an unaligned
    buffer, so an array not allocated by `cache.aligned_empty` is copied into one first."""
    if features.ctypes.data % ALIGNMENT or not features.flags.c_contiguous:
        aligned = aligned_empty(features.shape, features.dtype)
        aligned[...] = features
        features = aligned
    return tf.experimental.dlpack.from_dlpack(features.__dlpack__())


def augmenter(augmentation: Augmentation | None):
    """The tf function that applies the drawn augmentation to a batch (B, T, D)."""
    mirror = augmentation.mirror if augmentation else None
    dropout = augmentation.dropout if augmentation else None
    matrix = tf.constant(mirror.matrix, tf.float32) if mirror else None
    if dropout:  # row 0 keeps every column, row 1 + g drops group g
        keep = tf.constant(np.concatenate([np.ones((1, dropout.groups.shape[1])),
                                           1 - dropout.groups]), tf.float32)  # fmt: skip
        fill = tf.constant(dropout.fill, tf.float32)

    def augment(windows: tf.Tensor, flipped: tf.Tensor, dropped: tf.Tensor) -> tf.Tensor:
        if matrix is not None:
            mirrored = tf.einsum("btd,de->bte", windows, matrix)
            windows = tf.where(flipped[:, None, None], mirrored, windows)
        if dropout:
            kept = tf.gather(keep, dropped + 1)[:, None, :]
            windows = windows * kept + fill * (1 - kept)
        return windows

    return augment


@dataclass(frozen=True)
class Draws:
    """Each window's draws: its label (its mirror image's when mirrored), whether it is
    mirrored, and which group it drops (-1: none). Nothing is drawn without augmentation
    (evaluation)."""

    augmentation: Augmentation | None
    rng: np.random.Generator

    def __call__(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        flipped, dropped = np.zeros(len(y), bool), np.full(len(y), -1, np.int32)
        mirror = self.augmentation.mirror if self.augmentation else None
        dropout = self.augmentation.dropout if self.augmentation else None
        if mirror:
            flipped = self.rng.random(len(y)) < 0.5
            y = np.where(flipped, mirror.labels[y], y)
        if dropout:
            chosen = self.rng.integers(0, len(dropout.groups), len(y)).astype(np.int32)
            dropped = np.where(self.rng.random(len(y)) < dropout.rate, chosen, -1)
        return y.astype(np.int32), flipped, dropped.astype(np.int32)


def _epoch_windows(
    clip_valid: np.ndarray,
    samples: Samples,
    y: np.ndarray,
    window: Window,
    shuffle: bool,
    rng: np.random.Generator,
    draw: Draws,
) -> Iterator[tuple]:
    """One epoch's windows for every sample at once (in shuffled order): drawn in one
    vectorised call per epoch, batched and gathered inside tf.data."""
    order = rng.permutation(len(samples)) if shuffle else np.arange(len(samples))
    positions, mask = batch_windows(
        samples.take(order), clip_valid, window, rng if shuffle else None
    )
    yield positions, mask.astype(np.uint8), *draw(y[order])


def _shard_windows(
    files: ShardFiles,
    clip_valid: np.ndarray,
    samples: Samples,
    y: np.ndarray,
    window: Window,
    batch_size: int,
    shuffle: bool,
    rng: np.random.Generator,
    draw: Draws,
) -> Iterator[tuple]:
    """(features, window positions into them, masks, labels, draws): the shards read once an
    epoch (in shuffled order, the next ones read ahead), each with as many full batches of
    windows as the samples read so far make. A batch may take samples of two shards, so
    batches are as full as in memory; at most the shards of one batch are held."""
    order = np.argsort(samples.shard, kind="stable")
    shard_rows = dict(zip(*_runs(samples.shard[order]), strict=True))
    shards = np.array(sorted(shard_rows))
    held: dict[int, tuple[int, np.ndarray]] = {}  # shard -> (first clip, features)
    pending = np.empty(0, np.int64)  # sample rows read but not yet batched

    def windows_of(rows: np.ndarray) -> tuple:
        positions, mask = batch_windows(
            samples.take(rows), clip_valid, window, rng if shuffle else None
        )
        needed = np.unique(samples.shard[rows])
        offsets, parts, base = {}, [], 0
        for shard in needed:  # a sample's clips lie in its shard
            start, features = held[shard]
            offsets[shard] = base - start
            parts.append(features)
            base += len(features)
        source = parts[0] if len(parts) == 1 else np.concatenate(parts)
        shift = np.array([offsets[s] for s in samples.shard[rows]], np.int64)
        return source, positions + shift[:, None], mask.astype(np.uint8), *draw(y[rows])

    for shard, start, features in files.read(rng.permutation(shards) if shuffle else shards):
        held[shard] = (start, features)
        rows = order[shard_rows[shard]]
        pending = np.concatenate([pending, rng.permutation(rows) if shuffle else rows])
        full = len(pending) // batch_size * batch_size
        if full:
            yield windows_of(pending[:full])
            pending = pending[full:]
            needed = set(samples.shard[pending].tolist())
            held = {s: v for s, v in held.items() if s in needed}
    if len(pending):
        yield windows_of(pending)


def _runs(values: np.ndarray) -> tuple[np.ndarray, list[slice]]:
    """The distinct values of a sorted array and the slice each fills."""
    distinct, first = np.unique(values, return_index=True)
    ends = [*first[1:], len(values)]
    return distinct, [slice(a, b) for a, b in zip(first, ends)]
