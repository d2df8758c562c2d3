"""Train/validation/test splits: the dataset's official one, or drawn from a seed.

import logging
The split is drawn from a seed over sorted sample ids, stratified by label; samples of one
recording, of one `group`, or of identical files stay together, so the same cache and seed
give the same split on every machine. Under an official split identical files on both
sides are reported (and refused unless allowed).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold, train_test_split

from gesture_cache.cache.reader import Cache
from gesture_cache.common.errors import ConfigError
from gesture_cache.data.samples import Samples
from gesture_cache.sources.meta import SPLIT_NAMES

log = logging.getLogger(__name__)


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
