"""Samples, splits, training windows and tf.data pipelines over a cache.

A sample is a segment (a whole video is one), or with `background` a stretch of an annotated
recording that no segment covers. Its candidate clips are those whose centre lies inside it.
A window of T clips is drawn from them when batches are built: spread uniformly (T bins,
the middle clip of each), centred (T consecutive clips, or `step` apart), or at random each
epoch (a random clip per bin, or a random placement with `step`): temporal augmentation
without re-extraction. Short samples are masked, right-padded (valid clips first), the form
the cuDNN LSTM kernel accepts.

The split is drawn from a seed over sorted sample ids, stratified by label; samples of one
recording, of one `group`, or of identical files stay together, so the same cache and seed
give the same split on every machine.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.decomposition import PCA
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold, train_test_split
from sklearn.preprocessing import StandardScaler

from gesture_cache.cache import ALIGNMENT, Cache, aligned_empty, read_features, read_shard
from gesture_cache.clips import CLIP_LEN
from gesture_cache.errors import ConfigError, GestureCacheError
from gesture_cache.files import atomic_write
from gesture_cache.meta import SPLIT_NAMES
from gesture_cache.windows import Window, windows

log = logging.getLogger(__name__)


@dataclass
class Samples:
    """What training draws windows from; clips lo..hi of the cache's clip arrays."""

    ids: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    recordings: np.ndarray  # recording id of each sample
    contents: np.ndarray  # its recording's file sha256: identical files stay together
    lo: np.ndarray
    hi: np.ndarray
    rec_lo: np.ndarray  # its recording's clips: a stepped window may reach past the sample
    rec_hi: np.ndarray
    shard: np.ndarray  # which shard holds its clips
    fixed: bool  # every sample is its recording's fixed clips (schema 1, pad, uniform)

    def __len__(self) -> int:
        return len(self.lo)

    def take(self, rows: np.ndarray) -> Samples:
        fields = (
            "ids",
            "labels",
            "groups",
            "recordings",
            "contents",
            "lo",
            "hi",
            "rec_lo",
            "rec_hi",
            "shard",
        )
        values = {f: getattr(self, f) for f in fields}
        return Samples(
            **{f: None if v is None else v[rows] for f, v in values.items()}, fixed=self.fixed
        )

    def spans(self) -> Samples:
        """The samples without their text columns: what drawing windows needs, and what a
        tf.data generator may hold (tf.data keeps every generator for the process' life;
        the text columns are about 60 MB at Jester's size)."""
        return replace(self, ids=None, labels=None, groups=None, recordings=None, contents=None)


def cache_samples(
    cache: Cache, background: bool = False, background_label: str = "no_gesture"
) -> Samples:
    """Every segment of the cache as a sample (plus background stretches, if asked)."""
    recordings, segments = cache.recordings, cache.segments
    index = {rid: i for i, rid in enumerate(recordings["recording_id"].tolist())}
    fixed = cache.fixed_clips is not None or cache.manifest["extractor"]["sampling"] != "dense"
    rows = [
        (rid, label, group, start, end)
        for rid, label, group, start, end in zip(
            segments["recording_id"].tolist(),
            segments["label"].tolist(),
            segments["group"].tolist(),
            segments["start_frame"].tolist(),
            segments["end_frame"].tolist(),
        )
    ]
    if background:
        rows += background_rows(rows, recordings, index, background_label)
    # in recording order, not the cache's (the order recordings finished extracting, or were
    # merged in): a run then depends on what the cache holds, never on how it was written.
    # Rows are (recording, label, group, start, end); background (label None) sorts last.
    rows.sort(key=lambda r: (r[0], r[3], r[4], r[1] is None, r[1] or ""))
    per_recording = pd.Series([r[0] for r in rows]).value_counts()
    ids, lo, hi = [], [], []
    for rid, label, _, start, end in rows:
        i = index[rid]
        whole = start == 0 and end == recordings["n_frames"][i] and per_recording[rid] == 1
        ids.append(rid if whole else f"{rid}@{start}:{end}" + ("#bg" if label is None else ""))
        first, last = candidate_clips(cache, i, start, end, fixed)
        lo.append(first)
        hi.append(last)
    recording_rows = np.array([index[r[0]] for r in rows], np.int64)
    rec_lo = recordings["clip_offset"][recording_rows]
    return Samples(
        ids=np.array(ids, dtype=object),
        labels=np.array([background_label if r[1] is None else r[1] for r in rows], dtype=object),
        groups=np.array([r[2] for r in rows], dtype=object),
        recordings=np.array([r[0] for r in rows], dtype=object),
        contents=recordings["sha256"][recording_rows],
        lo=np.array(lo, np.int64),
        hi=np.array(hi, np.int64),
        rec_lo=rec_lo,
        rec_hi=rec_lo + recordings["clip_count"][recording_rows],
        shard=recordings["shard"][recording_rows],
        fixed=fixed,
    )


def candidate_clips(cache: Cache, recording: int, start: int, end: int, fixed: bool) -> tuple:
    """The clip range [lo, hi) of a segment: clips whose centre lies in it (at least the one
    nearest its middle). Fixed layouts: all of the recording's clips."""
    offset = int(cache.recordings["clip_offset"][recording])
    count = int(cache.recordings["clip_count"][recording])
    if fixed:
        return offset, offset + count
    centres = cache.clip_start[offset : offset + count] + CLIP_LEN // 2
    first, last = np.searchsorted(centres, [start, end], side="left")
    if first == last:
        nearest = int(np.argmin(np.abs(centres - (start + end) / 2)))
        first, last = nearest, nearest + 1
    return offset + int(first), offset + int(last)


def background_rows(rows: list[tuple], recordings: dict, index: dict, label: str) -> list[tuple]:
    """Stretches of annotated recordings that no segment covers (at least one clip long), cut
    into pieces about as long as the median segment, labelled None (background)."""
    by_recording: dict[str, list[tuple[int, int]]] = {}
    for rid, _, _, start, end in rows:
        by_recording.setdefault(rid, []).append((start, end))
    lengths = [end - start for _, lbl, _, start, end in rows if lbl != label]
    piece = max(int(np.median(lengths)) if lengths else CLIP_LEN, CLIP_LEN)
    groups = {rid: g for rid, _, g, _, _ in rows}
    found = []
    for rid, spans in by_recording.items():
        n = int(recordings["n_frames"][index[rid]])
        if spans == [(0, n)]:
            continue  # a whole, pre-cut video has no background
        covered = np.zeros(n + 2, bool)  # frame -1 and frame n count as covered
        covered[[0, -1]] = True
        for start, end in spans:
            covered[start + 1 : end + 1] = True
        edges = np.flatnonzero(np.diff(covered.astype(np.int8)))  # gap starts, then ends
        for gap_start, gap_end in zip(edges[0::2], edges[1::2]):
            found += _pieces(rid, groups[rid], int(gap_start), int(gap_end), piece)
    return found


def _pieces(rid: str, group: str, start: int, end: int, piece: int) -> list[tuple]:
    """A background stretch cut into pieces of about `piece` frames (none under one clip)."""
    if end - start < CLIP_LEN:
        return []
    count = max((end - start) // piece, 1)
    bounds = np.linspace(start, end, count + 1).round().astype(int)
    return [(rid, None, group, int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


# --- splits -----------------------------------------------------------------------------


def split_groups(groups: np.ndarray, ties: list[np.ndarray]) -> np.ndarray | None:
    """Which samples must share a split: the same non-blank `group`, or the same value in
    any of `ties` (recording id, file content). None when nothing ties two samples.

    A blank group cell only ties through `ties`, so one missing value never switches
    grouping off for everyone (a warning says how many are blank when others are filled)."""
    has_group = groups != ""
    tied = has_group.any() or any(len(set(t.tolist())) < len(t) for t in ties)
    if not tied:
        return None
    if has_group.any() and not has_group.all():
        log.warning(
            "%d of %d samples have no group: each of their recordings is a group of its own",
            int((~has_group).sum()),
            len(groups),
        )
    n = len(groups)
    keys = [np.array([f"group:{g}" if g else f"none:{i}" for i, g in enumerate(groups)], object)]
    keys += [np.asarray(t, dtype=object) for t in ties]
    rows, columns, size = [], [], n
    for key in keys:
        codes, names = pd.factorize(key)
        rows.append(np.arange(n))
        columns.append(size + codes)
        size += len(names)
    graph = coo_matrix(
        (np.ones(n * len(keys)), (np.concatenate(rows), np.concatenate(columns))),
        shape=(size, size),
    )
    _, component = connected_components(graph, directed=False)
    return component[:n].astype(str)


def official_splits(cache: Cache) -> dict[str, str] | None:
    """recording id -> "train", "val" or "test" from the cache's `split` column (a dataset's
    official split, carried from the CSV), or None when it has none. A cell that is blank or
    unknown, or a recording or group whose segments are in two parts, is refused with the
    CSV rows named."""
    segments = cache.segments
    if "extra/split" not in segments:
        return None
    values = [SPLIT_NAMES.get(v.strip().lower()) for v in segments["extra/split"].tolist()]
    rows = segments["row"].tolist()
    cells = zip(rows, segments["recording_id"].tolist(), segments["extra/split"].tolist(), values)
    bad = [(r, rid, v) for r, rid, v, s in cells if s is None]
    if bad:
        shown = ", ".join(f"{rid!r} (CSV row {r}: {v!r})" for r, rid, v in bad[:5])
        raise ConfigError(
            f"cache {cache.path}: the split column must say train, val or test on every row; "
            f"{len(bad)} do not: {shown}; fill them in the CSV and extract again, or train "
            "with --split random"
        )
    for key in ("recording_id", "group"):
        parts: dict[str, dict[str, int]] = {}
        for name, split, row in zip(segments[key].tolist(), values, rows):
            if name:
                parts.setdefault(name, {}).setdefault(split, row)
        mixed = {n: s for n, s in parts.items() if len(s) > 1}
        if mixed:
            name, found = next(iter(mixed.items()))
            shown = ", ".join(f"{s} (row {r})" for s, r in found.items())
            raise ConfigError(
                f"cache {cache.path}: {key.replace('_', ' ')} {name!r} is in two parts of the "
                f"split column: {shown}; a {key.split('_')[0]} belongs to one part"
            )
    return dict(zip(segments["recording_id"].tolist(), values))


def official_split(
    samples: Samples,
    official: dict[str, str],
    val_size: float,
    seed: int,
    allow_duplicates: bool = False,
) -> np.ndarray:
    """Each sample's part by its recording's official split; without a `val` part, one is
    carved from `train` (about `val_size` of it, stratified, grouped as `split_samples`
    groups, drawn from a seed over sorted sample ids). Byte-identical recordings in two parts
    are refused unless `allow_duplicates`."""
    split = np.array([official[r] for r in samples.recordings], dtype=object)
    if not (split == "train").any():
        raise ConfigError("the split column names no training recording")
    leaks = copies_across_parts(samples, split)
    if leaks and not allow_duplicates:
        shown = "; ".join(
            " = ".join(f"{rid!r} ({part})" for part, rid in leak) for leak in leaks[:3]
        )
        raise ConfigError(
            f"the official split puts byte-identical recordings in two parts, so the "
            f"scores would be inflated (leakage): {shown}"
            + (f"; and {len(leaks) - 3} more" if len(leaks) > 3 else "")
            + ". Remove the copies, train with --split random (which keeps them together), "
            "or with --allow-duplicates to keep the split as it is"
        )
    if leaks:
        log.warning(
            "%d recordings have an identical copy in another part (--allow-duplicates)", len(leaks)
        )
    if not (split == "val").any() and val_size:
        train = np.flatnonzero(split == "train")
        train = train[np.argsort(samples.ids[train], kind="stable")]
        tied = split_groups(
            samples.groups[train], [samples.recordings[train], samples.contents[train]]
        )
        _, val = _split(train, samples.labels[train], tied, val_size, seed)
        split[val] = "val"
    return split.astype(str)


def copies_across_parts(samples: Samples, split: np.ndarray) -> list[list[tuple[str, str]]]:
    """Groups of byte-identical recordings (one file sha256) whose samples lie in more than
    one part: each a list of (part, recording id), one per part."""
    parts: dict[str, dict[str, str]] = {}
    for content, recording, part in zip(samples.contents, samples.recordings, split):
        parts.setdefault(content, {}).setdefault(part, recording)
    return [sorted(found.items()) for found in parts.values() if len(found) > 1]


def split_samples(samples: Samples, test_size: float, val_size: float, seed: int) -> np.ndarray:
    """'train', 'val' or 'test' for each sample, in order."""
    return split_videos(
        samples.ids,
        samples.labels,
        samples.groups,
        test_size,
        val_size,
        seed,
        ties=[samples.recordings, samples.contents],
    )


def split_videos(
    ids: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    test_size: float,
    val_size: float,
    seed: int,
    ties: list[np.ndarray] | None = None,
) -> np.ndarray:
    """'train', 'val' or 'test' for each id, in the order given: stratified, drawn from a
    seed over sorted ids, grouped by `groups` and `ties` (see `split_groups`)."""
    if not 0 < test_size < 1 or not 0 <= val_size < 1 or test_size + val_size >= 1:
        raise ConfigError(
            f"--test-size {test_size} and --val-size {val_size} must be fractions "
            "that leave samples to train on"
        )
    order = np.argsort(ids, kind="stable")
    y = labels[order]
    tied = split_groups(groups[order], [t[order] for t in ties or []])
    rest, test = _split(np.arange(len(ids)), y, tied, test_size, seed)
    split = np.full(len(ids), "train", dtype=object)
    split[test] = "test"
    if val_size:
        sub = rest
        g = tied[sub] if tied is not None else None
        _, val = _split(sub, y[sub], g, val_size / (1 - test_size), seed)
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
    except ValueError as error:  # too few samples (or groups) of some class to stratify
        # the message, not the error: a handler that keeps records would keep its traceback
        log.warning("split cannot be stratified (%s); drawing it unstratified", str(error))
        if groups is None:
            return train_test_split(indices, test_size=fraction, random_state=seed)
        try:
            splitter = GroupShuffleSplit(1, test_size=fraction, random_state=seed)
            keep, take = next(splitter.split(indices, labels, groups))
        except ValueError:
            log.warning(
                "only %d groups (recordings, subjects or identical files): their samples are "
                "split apart, so held-out scores are optimistic; add recordings",
                len(set(groups.tolist())),
            )
            return train_test_split(indices, test_size=fraction, random_state=seed)
    return indices[keep], indices[take]


# --- windows ------------------------------------------------------------------------------


def batch_windows(
    samples: Samples,
    clip_valid: np.ndarray,
    window: Window,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Window positions and masks of some samples, valid clips first (right-padded)."""
    return windows(
        samples.lo,
        samples.hi,
        clip_valid,
        window,
        samples.fixed,
        rng,
        samples.rec_lo,
        samples.rec_hi,
    )


# --- standardisation and datasets ----------------------------------------------------------


def sample_clips(samples: Samples, clip_valid: np.ndarray) -> np.ndarray:
    """Every valid clip a sample could draw (each once)."""
    clips = np.unique(np.concatenate([np.arange(a, b) for a, b in zip(samples.lo, samples.hi)]))
    return clips[clip_valid[clips]]


def standardisation(
    features: np.ndarray, clips: np.ndarray, chunk: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance per feature over the given clips, `chunk` at a time (the float64
    copy stays small).

    scikit-learn's StandardScaler treats constant features as spread 1; a tiny epsilon would
    turn fc7 dimensions that are zero in every training clip into huge test-time values.
    """
    scaler = StandardScaler()
    for start in range(0, len(clips), chunk):
        scaler.partial_fit(features[clips[start : start + chunk]].astype(np.float64))
    return scaler.mean_.astype(np.float32), (scaler.scale_**2).astype(np.float32)


# Standardisation statistics are kept beside the cache, keyed by the cache's content and the
# training clips, so later runs on the same cache and split skip a pass over every feature.
STATS_FOLDER = "stats"


def training_standardisation(cache: Cache, samples: Samples) -> tuple[np.ndarray, np.ndarray]:
    """`standardisation` of the training samples' clips (in memory or streamed), reused from
    an earlier run of the same cache and split when its file matches; statistics whose key,
    shape or values do not fit are recomputed, never trusted."""
    clips = sample_clips(samples, cache.clip_valid)
    key = hashlib.sha256()
    key.update(json.dumps(cache.manifest, sort_keys=True).encode())  # holds every shard's sha
    key.update(clips.astype(np.int64).tobytes())
    key = key.hexdigest()
    path = Path(cache.path) / STATS_FOLDER / f"standardisation-{key[:16]}.npz"
    try:
        with np.load(path, allow_pickle=False) as saved:
            mean, variance = saved["mean"], saved["variance"]
            fits = str(saved["key"]) == key and mean.shape == variance.shape == (cache.feature_dim,)
        if fits and np.isfinite(mean).all() and np.isfinite(variance).all():
            log.info("standardisation statistics of these training clips reused from %s", path)
            return mean.astype(np.float32), variance.astype(np.float32)
        log.warning("%s does not match this cache and split: recomputed", path)
    except (OSError, ValueError, KeyError):
        pass  # none yet, or unreadable: computed below
    if cache.features is None:
        mean, variance = streaming_standardisation(cache, samples)
    else:
        mean, variance = standardisation(cache.features, clips)
    buffer = io.BytesIO()
    np.savez(buffer, key=np.array(key), mean=mean, variance=variance)
    try:
        path.parent.mkdir(exist_ok=True)
        atomic_write(path, buffer.getvalue())
    except (OSError, GestureCacheError) as error:  # a read-only cache: computed each time
        log.debug("standardisation statistics not kept: %s", str(error))
    return mean, variance


PCA_CLIPS = 20_000  # training clips a projection is fitted on (all of them when fewer)


def pca_projection(
    cache: Cache,
    samples: Samples,
    mean: np.ndarray | None,
    variance: np.ndarray | None,
    components: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """`--reduce pca:N`: the principal components of the training samples' standardised
    clips (at most PCA_CLIPS of them, drawn from `seed`), as a linear layer's kernel (D, N)
    and bias (N,) that map a standardised clip onto them."""
    clips = sample_clips(samples, cache.clip_valid)
    if components > min(len(clips), cache.feature_dim):
        raise ConfigError(
            f"--reduce pca:{components}: the training part has {len(clips)} clips of "
            f"{cache.feature_dim} values; give at most {min(len(clips), cache.feature_dim)}"
        )
    rng = np.random.default_rng(seed)
    if len(clips) > PCA_CLIPS:
        clips = np.sort(rng.choice(clips, PCA_CLIPS, replace=False))
    features = clip_features(cache, clips).astype(np.float32)
    if mean is not None:  # as keras.layers.Normalization computes it
        features = (features - mean) / np.maximum(np.sqrt(variance), 1e-7)
    pca = PCA(components, svd_solver="randomized", random_state=int(seed)).fit(features)
    kernel = pca.components_.T.astype(np.float32)
    return kernel, (-pca.mean_ @ kernel).astype(np.float32)


def clip_features(cache: Cache, clips: np.ndarray) -> np.ndarray:
    """Some clips' features, from memory or from the shards that hold them (sorted clips)."""
    if cache.features is not None:
        return cache.features[clips]
    files = ShardFiles.of(cache)
    parts = []
    wanted = np.unique(np.searchsorted(files.starts, clips, side="right") - 1)
    for _, start, features in files.read(wanted):
        mine = clips[(clips >= start) & (clips < start + len(features))]
        parts.append(features[mine - start])
    return np.concatenate(parts)


def streaming_standardisation(cache: Cache, samples: Samples) -> tuple[np.ndarray, np.ndarray]:
    """`standardisation` over the samples' clips, reading one shard at a time."""
    scaler = StandardScaler()
    for shard, start, features in ShardFiles.of(cache).read(np.unique(samples.shard)):
        mine = samples.take(np.flatnonzero(samples.shard == shard))
        clips = sample_clips(mine, cache.clip_valid)
        scaler.partial_fit(features[clips - start].astype(np.float64))
    return scaler.mean_.astype(np.float32), (scaler.scale_**2).astype(np.float32)


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


# Shards inflated at once, and read ahead of the one in use: inflating a gzip shard costs
# about as much as training on it, and inflating releases the GIL (measured, 2 cores, 30,000
# recordings: a streamed epoch 23.4 s with one reader, 15.8 s with two, 20.8 s with three).
READERS = min(4, os.cpu_count() or 1)
READ_AHEAD = 2 * READERS


@dataclass(frozen=True)
class ShardFiles:
    """Where a cache's shards lie and the first clip of each: what reading features shard
    by shard needs of the cache."""

    paths: list[Path]
    starts: np.ndarray  # each shard's first global clip index, and the clip count at the end
    schema_version: int

    @classmethod
    def of(cls, cache: Cache) -> ShardFiles:
        counts = np.bincount(
            cache.recordings["shard"],
            weights=cache.recordings["clip_count"],
            minlength=len(cache.manifest["shards"]),
        )
        return cls(
            paths=[Path(cache.path) / s["file"] for s in cache.manifest["shards"]],
            starts=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            schema_version=cache.schema_version,
        )

    def read(self, shards: np.ndarray) -> Iterator[tuple[int, int, np.ndarray]]:
        """(shard number, its first global clip index, its features), one shard at a time,
        the next READ_AHEAD read by READERS threads (`cache.stored_features`)."""
        if self.schema_version == 1:
            for shard in shards:
                stored = read_shard(self.paths[shard], 1, features=True).features
                yield int(shard), int(self.starts[shard]), stored
            return
        paths = [self.paths[s] for s in shards]
        with ThreadPoolExecutor(READERS, thread_name_prefix="shard-reader") as pool:
            reads = deque(pool.submit(read_features, p) for p in paths[:READ_AHEAD])
            for i, shard in enumerate(shards):
                if i + READ_AHEAD < len(paths):
                    reads.append(pool.submit(read_features, paths[i + READ_AHEAD]))
                yield int(shard), int(self.starts[shard]), reads.popleft().result()
