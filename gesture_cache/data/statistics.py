"""Feature statistics fitted on the training clips: standardisation (in memory or streamed
shard by shard, kept on disk beside the cache) and the PCA of `--reduce pca:N`."""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from gesture_cache.cache.reader import Cache
from gesture_cache.common.errors import ConfigError, GestureCacheError
from gesture_cache.common.files import atomic_write
from gesture_cache.data.read_ahead import ShardFiles
from gesture_cache.data.samples import Samples, sample_clips

log = logging.getLogger(__name__)


def standardisation(
    features: np.ndarray, clips: np.ndarray, chunk: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance per feature over the given clips, `chunk` at a time (the float64
    copy stays small)."""
    return statistics_of(features[clips[i : i + chunk]] for i in range(0, len(clips), chunk))


def statistics_of(batches: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance per feature over batches of clips, in float64.

    scikit-learn's StandardScaler treats constant features as spread 1; a tiny epsilon would
    turn fc7 dimensions that are zero in every training clip into huge test-time values.
    """
    scaler = StandardScaler()
    for batch in batches:
        scaler.partial_fit(batch.astype(np.float64))
    return scaler.mean_.astype(np.float32), (scaler.scale_**2).astype(np.float32)


def check_components(components: int, clips: int, feature_dim: int) -> None:
    """`--reduce pca:N` needs N training clips at least, and N at most the feature size."""
    most = min(clips, feature_dim)
    if components > most:
        raise ConfigError(
            f"--reduce pca:{components}: the training part has {clips} clips of "
            f"{feature_dim} values; give at most {most}"
        )


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
    columns: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`--reduce pca:N`: the principal components of the training samples' standardised
    clips (at most PCA_CLIPS of them, drawn from `seed`), as a linear layer's kernel (D, N)
    and bias (N,) that map a standardised clip onto them; of the `columns` chosen only
    (`--features`), the kernel's other rows zero."""
    clips = sample_clips(samples, cache.clip_valid)
    width = cache.feature_dim if columns is None else len(columns)
    check_components(components, len(clips), width)
    rng = np.random.default_rng(seed)
    if len(clips) > PCA_CLIPS:
        clips = np.sort(rng.choice(clips, PCA_CLIPS, replace=False))
    features = clip_features(cache, clips).astype(np.float32)
    if mean is not None:  # as keras.layers.Normalization computes it
        features = (features - mean) / np.maximum(np.sqrt(variance), 1e-7)
    if columns is not None:
        features = features[:, columns]
    pca = PCA(components, svd_solver="randomized", random_state=int(seed)).fit(features)
    kernel = pca.components_.T.astype(np.float32)
    bias = (-pca.mean_ @ kernel).astype(np.float32)
    if columns is not None:
        kernel = selection(cache.feature_dim, columns) @ kernel
    return kernel, bias


def selection(width: int, columns: np.ndarray) -> np.ndarray:
    """The (width, len(columns)) 0/1 matrix that keeps `columns` of a feature vector."""
    matrix = np.zeros((width, len(columns)), np.float32)
    matrix[columns, np.arange(len(columns))] = 1.0
    return matrix


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

    def shard_batches():
        for shard, start, features in ShardFiles.of(cache).read(np.unique(samples.shard)):
            mine = samples.take(np.flatnonzero(samples.shard == shard))
            yield features[sample_clips(mine, cache.clip_valid) - start]

    return statistics_of(shard_batches())
