"""tf.data pipelines of training windows: from features in memory, or streamed shard by shard."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from gesture_cache.cache.reader import ALIGNMENT, Cache, aligned_empty
from gesture_cache.data.read_ahead import ShardFiles
from gesture_cache.data.samples import Samples, batch_windows
from gesture_cache.data.windows import Window


def window_dataset(
    cache: Cache,
    features: np.ndarray | None,
    samples: Samples,
    y: np.ndarray,
    window: Window,
    batch_size: int,
    shuffle: bool,
    seed: int,
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
    validity, the samples' spans and, streamed, the shards' paths; not the cache."""
    rng = np.random.default_rng(seed)
    T, D = window.clips, cache.feature_dim
    batches = -(-len(samples) // batch_size)
    spans, clip_valid = samples.spans(), cache.clip_valid
    windows_spec = (
        tf.TensorSpec((None, T), tf.int64),
        tf.TensorSpec((None, T), tf.uint8),
        tf.TensorSpec((None,), tf.int32),
    )

    if features is None:
        files = ShardFiles.of(cache)
        dataset = tf.data.Dataset.from_generator(
            lambda: _shard_windows(files, clip_valid, spans, y, window, batch_size, shuffle, rng),
            output_signature=(tf.TensorSpec((None, D), cache.manifest["dtype"]), *windows_spec),
        )

        def batches_of(source: tf.Tensor, positions: tf.Tensor, mask: tf.Tensor, labels):
            batched = tf.data.Dataset.from_tensor_slices((positions, mask, labels))
            return batched.batch(batch_size).map(lambda p, m, c: (source, p, m, c))

        def gather(source: tf.Tensor, positions: tf.Tensor, mask: tf.Tensor, labels):
            return (tf.cast(tf.gather(source, positions), tf.float32), mask), labels

    else:
        source = shared_tensor(features)
        dataset = tf.data.Dataset.from_generator(
            lambda: _epoch_windows(clip_valid, spans, y, window, shuffle, rng),
            output_signature=windows_spec,
        )

        def batches_of(positions: tf.Tensor, mask: tf.Tensor, labels: tf.Tensor):
            return tf.data.Dataset.from_tensor_slices((positions, mask, labels)).batch(batch_size)

        def gather(positions: tf.Tensor, mask: tf.Tensor, labels: tf.Tensor) -> tuple:
            return (tf.cast(tf.gather(source, positions), tf.float32), mask), labels

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


def _epoch_windows(
    clip_valid: np.ndarray,
    samples: Samples,
    y: np.ndarray,
    window: Window,
    shuffle: bool,
    rng: np.random.Generator,
) -> Iterator[tuple]:
    """One epoch's windows for every sample at once (in shuffled order): drawn in one
    vectorised call per epoch, batched and gathered inside tf.data."""
    order = rng.permutation(len(samples)) if shuffle else np.arange(len(samples))
    positions, mask = batch_windows(
        samples.take(order), clip_valid, window, rng if shuffle else None
    )
    yield positions, mask.astype(np.uint8), y[order].astype(np.int32)


def _shard_windows(
    files: ShardFiles,
    clip_valid: np.ndarray,
    samples: Samples,
    y: np.ndarray,
    window: Window,
    batch_size: int,
    shuffle: bool,
    rng: np.random.Generator,
) -> Iterator[tuple]:
    """(features, window positions into them, masks, labels): the shards read once an
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
        return source, positions + shift[:, None], mask.astype(np.uint8), y[rows].astype(np.int32)

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
