"""Samples of a cache and their windows of clips, in numpy.

A sample is a segment (a whole video is one), or with `background` a stretch of an annotated
recording that no segment covers. Its candidate clips are those whose centre lies inside it.
A window of T clips is drawn from them when batches are built (see `windows.py`); short
samples are masked, right-padded (valid clips first), the form the cuDNN LSTM kernel accepts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from gesture_cache.cache.reader import Cache
from gesture_cache.data.windows import Window, windows
from gesture_cache.video.clips import CLIP_LEN


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
    clip_len = int(cache.manifest["extractor"].get("clip_len", CLIP_LEN))
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
        rows += background_rows(rows, recordings, index, background_label, clip_len)
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
        first, last = candidate_clips(cache, i, start, end, fixed, clip_len)
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


def candidate_clips(
    cache: Cache, recording: int, start: int, end: int, fixed: bool, clip_len: int
) -> tuple:
    """The clip range [lo, hi) of a segment: clips whose centre lies in it (at least the one
    nearest its middle). Fixed layouts: all of the recording's clips."""
    offset = int(cache.recordings["clip_offset"][recording])
    count = int(cache.recordings["clip_count"][recording])
    if fixed:
        return offset, offset + count
    centres = cache.clip_start[offset : offset + count] + clip_len // 2
    first, last = np.searchsorted(centres, [start, end], side="left")
    if first == last:
        nearest = int(np.argmin(np.abs(centres - (start + end) / 2)))
        first, last = nearest, nearest + 1
    return offset + int(first), offset + int(last)


def background_rows(
    rows: list[tuple], recordings: dict, index: dict, label: str, clip_len: int
) -> list[tuple]:
    """Stretches of annotated recordings that no segment covers (at least one clip long), cut
    into pieces about as long as the median segment, labelled None (background)."""
    by_recording: dict[str, list[tuple[int, int]]] = {}
    for rid, _, _, start, end in rows:
        by_recording.setdefault(rid, []).append((start, end))
    lengths = [end - start for _, lbl, _, start, end in rows if lbl != label]
    piece = max(int(np.median(lengths)) if lengths else clip_len, clip_len)
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
            found += _pieces(rid, groups[rid], int(gap_start), int(gap_end), piece, clip_len)
    return found


def _pieces(rid: str, group: str, start: int, end: int, piece: int, clip_len: int) -> list[tuple]:
    """A background stretch cut into pieces of about `piece` frames (none under one clip)."""
    if end - start < clip_len:
        return []
    count = max((end - start) // piece, 1)
    bounds = np.linspace(start, end, count + 1).round().astype(int)
    return [(rid, None, group, int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


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


def sample_clips(samples: Samples, clip_valid: np.ndarray) -> np.ndarray:
    """Every valid clip a sample could draw (each once)."""
    clips = np.unique(np.concatenate([np.arange(a, b) for a, b in zip(samples.lo, samples.hi)]))
    return clips[clip_valid[clips]]
