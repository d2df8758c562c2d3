"""How well detection worked: Levenshtein accuracy, segment F1 at temporal IoU, how early it
fires, false firings per minute of background, and time per frame.

Levenshtein accuracy is 1 - edit distance / number of true gestures between the sequence of
detected labels and the true one (Köpüklü et al. 2019, IPN Hand); it can be negative when
a detector fires far more often than gestures happen.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from rapidfuzz.distance import Levenshtein

from gesture_cache.common.errors import ConfigError

TRUTH_COLUMNS = ["recording", "label", "start_frame", "end_frame"]
IOU_THRESHOLD = 0.5


@dataclass
class Interval:
    label: str
    start: int  # frames, end exclusive
    end: int

    def iou(self, other: Interval) -> float:
        overlap = max(0, min(self.end, other.end) - max(self.start, other.start))
        union = max(self.end, other.end) - min(self.start, other.start)
        return overlap / union if union else 0.0


def match(truth: list[Interval], detected: list[Interval], threshold: float) -> list[tuple]:
    """Greedy one-to-one matching of same-label intervals by IoU, best first."""
    pairs = sorted(
        (
            (t.iou(d), i, j)
            for i, t in enumerate(truth)
            for j, d in enumerate(detected)
            if t.label == d.label and t.iou(d) >= threshold
        ),
        reverse=True,
    )
    used_t, used_d, matched = set(), set(), []
    for _, i, j in pairs:
        if i not in used_t and j not in used_d:
            used_t.add(i)
            used_d.add(j)
            matched.append((i, j))
    return matched


def score_recording(truth: pd.DataFrame, events: pd.DataFrame, n_frames: int, fps: float) -> dict:
    """Scores of one recording: truth has label, start_frame, end_frame; events also
    fired_frame."""
    truth = truth.sort_values("start_frame")
    events = events.sort_values("start_frame")
    true = [Interval(r.label, r.start_frame, r.end_frame) for r in truth.itertuples()]
    found = [Interval(r.label, r.start_frame, r.end_frame) for r in events.itertuples()]
    distance = Levenshtein.distance([t.label for t in true], [d.label for d in found])
    matched = sorted(match(true, found, IOU_THRESHOLD))  # in the order of the gestures
    delays = [int(events.iloc[j]["fired_frame"]) - true[i].start for i, j in matched]
    lengths = [true[i].end - true[i].start for i, _ in matched]
    covered = np.zeros(n_frames, bool)
    for t in true:
        covered[t.start : t.end] = True
    return {
        "gestures": len(true),
        "detections": len(found),
        "edit_distance": int(distance),
        "levenshtein_accuracy": 1 - distance / len(true) if true else None,
        "true_positives": len(matched),
        "delays_frames": delays,
        "delay_fractions": [d / n for d, n in zip(delays, lengths)],
        "false_firings": len(found) - len(matched),
        "background_minutes": float((~covered).sum() / fps / 60) if fps else 0.0,
    }


def score(truth: pd.DataFrame, events: pd.DataFrame, recordings: pd.DataFrame) -> dict:
    """Scores per recording and overall. `truth`: recording, label, start_frame, end_frame;
    `events`: the detector's events.csv; `recordings`: recording, n_frames, fps (and
    ms_per_frame when timed)."""
    unknown = sorted(set(truth["recording"]) - set(recordings["recording"]))
    if unknown:
        raise ConfigError(f"the truth names recordings that were not detected: {unknown[:5]}")
    per_recording = {}
    for row in recordings.itertuples():
        per_recording[row.recording] = score_recording(
            truth[truth["recording"] == row.recording],
            events[events["recording"] == row.recording],
            int(row.n_frames),
            float(row.fps),
        )
    results = list(per_recording.values())
    gestures = sum(r["gestures"] for r in results)
    detections = sum(r["detections"] for r in results)
    hits = sum(r["true_positives"] for r in results)
    precision = hits / detections if detections else 0.0
    recall = hits / gestures if gestures else 0.0
    delays = [d for r in results for d in r["delays_frames"]]
    fractions = [f for r in results for f in r["delay_fractions"]]
    minutes = sum(r["background_minutes"] for r in results)
    overall = {
        "recordings": len(results),
        "gestures": gestures,
        "detections": detections,
        "levenshtein_accuracy": 1 - sum(r["edit_distance"] for r in results) / gestures
        if gestures
        else None,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "iou_threshold": IOU_THRESHOLD,
        "mean_delay_frames": float(np.mean(delays)) if delays else None,
        "mean_delay_fraction": float(np.mean(fractions)) if fractions else None,
        "false_firings_per_background_minute": sum(r["false_firings"] for r in results) / minutes
        if minutes
        else None,
    }
    if "ms_per_frame" in recordings:
        weights = recordings["n_frames"]
        overall["ms_per_frame"] = float(np.average(recordings["ms_per_frame"], weights=weights))
    return {"overall": overall, "recordings": per_recording}


def truth_rows(path: str | Path, classes: list[str] | None = None) -> list:
    """The rows of a segments CSV, each usable and (with `classes`) labelled as the run knows."""
    from gesture_cache.sources.meta import read_meta

    rows = read_meta(path)
    for row in rows:
        if row.problem:
            raise ConfigError(f"truth {path}: {row.problem}")
        if classes is not None and row.label not in classes:
            raise ConfigError(
                f"truth {path} row {row.row}: label {row.label!r} is not one the run knows "
                f"({', '.join(classes)})"
            )
        if not row.is_segment:
            raise ConfigError(f"truth {path} row {row.row}: give start_frame,end_frame or times")
    return rows


def truth_key(row, from_cache: bool) -> str:
    """How a truth row names its recording: the CSV's id for a cache's recordings, else the
    file it points at (resolved against the CSV's folder)."""
    return row.recording_id if from_cache else source_key(row.path, from_cache)


def source_key(source: str | Path, from_cache: bool) -> str:
    """How a detected recording is matched to the truth: a cache's recording id as given,
    else its file, resolved."""
    return str(source) if from_cache else str(Path(source).resolve())


def truth_by_source(
    path: str | Path, sources: list[str], classes: list[str], from_cache: bool
) -> dict[str, list]:
    """The truth file read once, before any detection: every row usable, with a label the run
    knows, and naming one of the sources; its rows by source."""
    by_key = {source_key(s, from_cache): s for s in sources}
    rows = {s: [] for s in sources}
    for row in truth_rows(path, classes):
        source = by_key.get(truth_key(row, from_cache))
        if source is None:
            raise ConfigError(
                f"truth {path} row {row.row}: recording {row.recording_id!r} is not one of "
                "the sources given"
            )
        rows[source].append(row)
    return rows


def truth_frames(rows: list, recording: str, fps: float) -> pd.DataFrame:
    """A recording's true segments as recording, label, start_frame, end_frame (times become
    frames at the recording's fps)."""
    return pd.DataFrame([truth_record(row, recording, fps) for row in rows], columns=TRUTH_COLUMNS)


def truth_record(row, recording: str, fps: float) -> dict:
    start, end = row.frames(float(fps))
    return {"recording": recording, "label": row.label, "start_frame": start, "end_frame": end}


def read_truth(
    path: str | Path, recordings: pd.DataFrame, classes: list[str] | None = None
) -> pd.DataFrame:
    """A segments CSV (the meta CSV's columns) as recording, label, start_frame, end_frame.
    Its rows are matched to the detected recordings by file (`recordings.path`) or, for
    recordings read from a cache, by recording id; times become frames with each
    recording's fps. Unknown labels or recordings are errors naming the row."""
    source = recordings["source"] if "source" in recordings else pd.Series("file", recordings.index)
    by_key = {}
    for recording, where, kind in zip(recordings["recording"], recordings["path"], source):
        by_key[(kind == "cache", source_key(where, kind == "cache"))] = recording
    fps = dict(zip(recordings["recording"], recordings["fps"]))
    records = []
    for row in truth_rows(path, classes):
        recording = by_key.get((False, truth_key(row, False))) or by_key.get(
            (True, truth_key(row, True))
        )
        if recording is None:
            raise ConfigError(
                f"truth {path} row {row.row}: recording {row.recording_id!r} was not detected"
            )
        records.append(truth_record(row, recording, fps[recording]))
    return pd.DataFrame(records, columns=TRUTH_COLUMNS)


def read_table(
    path: Path, text: list[str], numbers: dict[str, type], optional: tuple[str, ...] = ()
) -> pd.DataFrame:
    """A CSV written by detect: `text` columns stay text (a label "NA" is a label), each of
    `numbers` (those named in `optional` when present) holds a number in every row; a problem
    names the file, row and column."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path} cannot be read as CSV: {error}") from None
    missing = [c for c in [*text, *numbers] if c not in table.columns and c not in optional]
    if missing:
        raise ConfigError(f"{path} lacks the column(s) {missing}; is it written by detect?")
    for column, kind in numbers.items():
        if column not in table.columns:
            continue
        values = pd.to_numeric(table[column].str.strip(), errors="coerce")
        bad = values.isna() | ~np.isfinite(values)
        if kind is int:
            bad |= values != values.round()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ConfigError(
                f"{path} row {row + 1}: column {column} holds {table[column].iloc[row]!r}, "
                f"not {'a whole number' if kind is int else 'a number'}"
            )
        table[column] = values.astype(kind)
    return table


def evaluate_detection(events_path: str | Path, truth_path: str | Path) -> dict:
    """Scores of a detector's events.csv (with the recordings.csv written beside it)
    against a segments CSV."""
    events_path = Path(events_path)
    recordings_path = events_path.with_name("recordings.csv")
    for path in (events_path, recordings_path):
        if not path.is_file():
            raise ConfigError(
                f"{path} does not exist (detect writes events.csv and recordings.csv)"
            )
    events = read_table(
        events_path,
        ["recording", "label"],
        {"start_frame": int, "end_frame": int, "fired_frame": int},
    )
    recordings = read_table(
        recordings_path,
        ["recording", "path"],
        {"n_frames": int, "fps": float, "ms_per_frame": float},
        optional=("ms_per_frame",),
    )
    unknown = sorted(set(events["recording"]) - set(recordings["recording"]))
    if unknown:
        row = int(np.flatnonzero(events["recording"] == unknown[0])[0]) + 1
        raise ConfigError(
            f"{events_path} row {row}: recording {unknown[0]!r} is not in {recordings_path}"
        )
    truth = read_truth(str(truth_path), recordings)
    return score(truth, events, recordings)
