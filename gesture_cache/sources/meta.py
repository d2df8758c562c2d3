"""The meta CSV: which recordings, with which labels, groups and (optionally) segments.

A row without `start_frame,end_frame` or `start_time,end_time` labels its whole recording;
with them it labels a segment (end exclusive), and many rows may name one recording.
"""

from __future__ import annotations

import csv
import logging
import math
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from gesture_cache.common.errors import ConfigError
from gesture_cache.video.decode import Probe, VideoError, probe

log = logging.getLogger(__name__)


class MetaError(ConfigError):
    """A CSV that cannot be used at all (wrong columns, no rows)."""


SEGMENT_COLUMNS = ("start_frame", "end_frame", "start_time", "end_time")


# A `split` column (a dataset's official split) names each row's part; it is carried into
# the cache as extra/split and `train` follows it.
SPLIT_NAMES = {"train": "train", "val": "val", "validation": "val", "test": "test"}


OWN_COLUMNS = ("group", "fps", *SEGMENT_COLUMNS)


@dataclass(frozen=True)
class Row:
    row: int  # 1-based data row number, as a spreadsheet would show it after the header
    recording_id: str  # the CSV path, cleaned, POSIX form
    path: Path  # where the file (or folder of frames) is on this machine
    label: str
    group: str
    extra: dict[str, str]
    start: float | None = None  # segment bounds, as given (frames or seconds); None: whole
    end: float | None = None
    in_seconds: bool = False
    also_seconds: tuple[float, float] | None = None  # times given beside frames: must agree
    fps: float | None = None  # the `fps` column, for folders of frames
    problem: str | None = None  # why this row cannot be used, found before decoding

    @property
    def is_segment(self) -> bool:
        return self.start is not None

    def frames(self, fps: float) -> tuple[int, int] | None:
        """The segment in frames [start, end) at `fps`; None for a whole-recording row."""
        if self.start is None:
            return None
        if not self.in_seconds:
            return int(self.start), int(self.end)
        return round(self.start * fps), round(self.end * fps)


def clean_path(raw: object) -> str:
    """Strip surrounding whitespace and quotes, accept `\\` as a separator."""
    text = "" if pd.isna(raw) else str(raw)
    text = text.strip().strip("\"'").strip()
    return text.replace("\\", "/")


def recording_path(raw: str, root: Path) -> str:
    """A CSV cell's recording id: the path as written when it names a file or folder under
    `root` (a name may start with a space or a quote, or hold a backslash, as an unzipped
    Windows archive leaves them), else the cleaned path (`clean_path`), so that hand-written
    and spreadsheet CSVs (quoted, Windows separators) work too."""
    if raw and (root / raw).exists():
        return raw
    return clean_path(raw)


def read_meta(
    csv_path: str | Path,
    video_root: str | Path | None = None,
    path_column: str = "file_path",
    label_column: str = "action",
) -> list[Row]:
    """Rows of the meta CSV; paths are relative to the CSV's folder unless `video_root`."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise MetaError(f"meta CSV {csv_path} does not exist")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            # index_col=False: a trailing comma on every row must not turn the first
            # column into the index (which shifts every column by one)
            table = pd.read_csv(
                csv_path, dtype=str, keep_default_na=False, skipinitialspace=True, index_col=False
            )
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise MetaError(f"meta CSV {csv_path} cannot be read as CSV: {error}") from error
    if caught:
        log.warning(
            "meta CSV %s: some rows have more fields than the header; extra ignored", csv_path
        )
    header = [clean_path(c) for c in header_of(csv_path)]
    repeated = sorted({c for c in header if c and header.count(c) > 1})
    if repeated:
        raise MetaError(
            f"meta CSV {csv_path}: column {repeated[0]!r} appears more than once in the header; "
            "rename or remove the copies"
        )
    table.columns = [clean_path(c) for c in table.columns]
    for column in table.columns:
        if not column or "/" in column or "\0" in column or column == ".":
            raise MetaError(
                f"meta CSV {csv_path}: column name {column!r} cannot be stored "
                "(empty, '/' or NUL); rename it"
            )
    missing = [c for c in (path_column, label_column) if c not in table.columns]
    if missing:
        raise MetaError(
            f"meta CSV {csv_path} has no column {', '.join(map(repr, missing))}; "
            f"found {list(table.columns)} (rename with --path-column / --label-column)"
        )
    if table.empty:
        raise MetaError(f"meta CSV {csv_path} has a header but no rows")
    root = Path(video_root) if video_root else csv_path.parent
    extra_columns = [c for c in table.columns if c not in (path_column, label_column, *OWN_COLUMNS)]
    rows = []
    for number, record in enumerate(table.to_dict("records"), start=1):
        recording_id = recording_path(record[path_column], root)
        start, end, in_seconds, problem, also_seconds = segment_bounds(record, number)
        fps, fps_problem = optional_number(record, "fps", number)
        row = Row(
            row=number,
            recording_id=recording_id,
            path=root / recording_id,
            label=record[label_column].strip().strip("\"'").strip(),
            group=record.get("group", "").strip(),
            extra={c: record[c] for c in extra_columns},
            start=start,
            end=end,
            in_seconds=in_seconds,
            also_seconds=also_seconds,
            fps=fps,
            problem=problem or fps_problem,
        )
        rows.append(replace(row, problem=row.problem or text_problem(row) or split_problem(row)))
    return rows


def header_of(csv_path: Path) -> list[str]:
    """The header row as written (pandas renames a repeated column `name.1`)."""
    with open(csv_path, encoding="utf-8-sig", newline="") as f:
        return next(csv.reader(f), [])


def optional_number(record: dict, column: str, number: int) -> tuple[float | None, str | None]:
    text = str(record.get(column, "")).strip()
    if not text:
        return None, None
    try:
        value = float(text)
    except ValueError:
        return None, f"row {number}: {column} {text!r} is not a number"
    if not math.isfinite(value) or value < 0 or (column == "fps" and value == 0):
        return None, f"row {number}: {column} {text!r} is out of range"
    return value, None


def segment_bounds(
    record: dict, number: int
) -> tuple[float | None, float | None, bool, str | None, tuple[float, float] | None]:
    """(start, end, in seconds, problem, times also given) of a row's segment; frames win
    over times, which must then agree with them (checked once the frame rate is known).
    (None, None, False, None, None) when the row labels its whole recording."""
    bounds = []
    for start_column, end_column, in_seconds in (
        ("start_frame", "end_frame", False),
        ("start_time", "end_time", True),
    ):
        start, start_problem = optional_number(record, start_column, number)
        end, end_problem = optional_number(record, end_column, number)
        if start_problem or end_problem:
            return None, None, False, start_problem or end_problem, None
        if start is None and end is None:
            continue
        if start is None or end is None:
            return (
                None,
                None,
                False,
                f"row {number}: give both {start_column} and {end_column}",
                None,
            )
        if not in_seconds and (start != int(start) or end != int(end)):
            return None, None, False, f"row {number}: frame numbers must be whole numbers", None
        if start >= end:
            problem = f"row {number}: segment start {start:g} >= end {end:g}"
            return None, None, False, problem, None
        bounds.append((start, end, in_seconds))
    if not bounds:
        return None, None, False, None, None
    start, end, in_seconds = bounds[0]
    also = bounds[1][:2] if len(bounds) == 2 else None
    return start, end, in_seconds, None, also


def segment_problem(row: Row, n_frames: int, fps: float) -> tuple[tuple[int, int], str | None]:
    """The row's segment in frames [start, end) of a recording of `n_frames` at `fps` (the
    whole recording for a row without one), and why it cannot be used, or None. The one rule
    `extract` and `check` both apply."""
    if row.start is None:
        return (0, n_frames), None
    if row.in_seconds and not fps:
        return (0, 0), f"row {row.row}: times need a frame rate; {row.recording_id} gives none"
    start, end = row.frames(fps)
    if row.in_seconds and start >= end:
        problem = (
            f"row {row.row}: times {row.start:g}-{row.end:g} s round to an empty segment "
            f"at {fps:g} fps"
        )
        return (start, end), problem
    if row.also_seconds and fps:
        from_times = round(row.also_seconds[0] * fps), round(row.also_seconds[1] * fps)
        if max(abs(from_times[0] - start), abs(from_times[1] - end)) > 1:
            problem = (
                f"row {row.row}: frames [{start}, {end}) and times {row.also_seconds[0]:g}-"
                f"{row.also_seconds[1]:g} s (frames {list(from_times)} at {fps:g} fps) disagree"
            )
            return (start, end), problem
    if not 0 <= start < end <= n_frames:
        problem = (
            f"row {row.row}: segment [{start}, {end}) is outside {row.recording_id} "
            f"({n_frames} frames" + (f" at {fps:g} fps)" if row.in_seconds else ")")
        )
        return (start, end), problem
    return (start, end), None


def conflicting_rows(rows: list[Row]) -> dict[int, str]:
    """Rows that label one whole recording differently: row number -> the problem, as
    `extract` reports it."""
    by_recording: dict[str, list[Row]] = {}
    for row in rows:
        if not row.is_segment:
            by_recording.setdefault(row.recording_id, []).append(row)
    problems = {}
    for recording_id, same in by_recording.items():
        if len({r.label for r in same}) > 1:
            numbers = ", ".join(str(r.row) for r in same)
            for r in same:
                problems[r.row] = f"rows {numbers} give {recording_id!r} different labels"
    return problems


def split_column_problems(rows: list[Row]) -> dict[int, str]:
    """What `train` refuses about a split column, by row: a blank cell (when the column is
    there), and a recording or a group with rows in two parts."""
    if not any("split" in row.extra for row in rows):
        return {}
    problems = {}
    first: dict[tuple[str, str], tuple[str, int]] = {}  # (kind, name) -> (part, row)
    for row in rows:
        part = SPLIT_NAMES.get(row.extra.get("split", "").strip().lower())
        if not row.extra.get("split", "").strip():
            problems[row.row] = (
                "blank_split: the split cell is blank; train refuses blank cells (fill it "
                "with train, val or test, or train with --split random)"
            )
            continue
        for kind, name in (("recording", row.recording_id), ("group", row.group)):
            if not name or part is None:
                continue
            other, other_row = first.setdefault((kind, name), (part, row.row))
            if other != part:
                problems[row.row] = (
                    f"split_conflict: {kind} {name!r} is in {other} (row {other_row}) and "
                    f"{part} here; train refuses a {kind} in two parts (or train with "
                    "--split random)"
                )
    return problems


def split_problem(row: Row) -> str | None:
    value = row.extra.get("split", "").strip().lower()
    if value and value not in SPLIT_NAMES:
        return f"row {row.row}: split {row.extra['split']!r} is not train, val or test"
    return None


def text_problem(row: Row) -> str | None:
    """Why a row's text cannot be stored (HDF5 strings cannot hold NUL), or None."""
    fields = {"path": row.recording_id, "label": row.label, "group": row.group, **row.extra}
    for name, value in fields.items():
        if "\0" in value:
            return f"row {row.row}: column {name!r} holds a NUL character"
    return None


def check_rows(rows: list[Row], fps: float | None = None) -> pd.DataFrame:
    """Probe every row without running C3D: one line per row, `usable` and a `problem`,
    by the rules `extract` applies (`fps`: the rate of folders of frames without an `fps`
    column, as `extract --fps`)."""
    conflicts = conflicting_rows(rows)
    split_problems = split_column_problems(rows)
    probes: dict[str, Probe | VideoError] = {}
    records = []
    for row in rows:
        record = {
            "row": row.row,
            "recording": row.recording_id,
            "label": row.label,
            "frames": "",  # blank until probed: the table shows numbers or nothing
            "claimed": "",
            "fps": "",
            "size": "",
            "usable": True,
            "problem": "",
        }
        if row.recording_id not in probes:  # a recording of many segments is decoded once
            try:
                probes[row.recording_id] = probe(row.path, row.fps or fps)
            except VideoError as error:
                probes[row.recording_id] = error
        probed = probes[row.recording_id]
        if isinstance(probed, VideoError):
            record.update(usable=False, problem=f"{probed.reason}: {probed}")
        else:
            record.update(
                frames=probed.decoded_frames,
                claimed=probed.claimed_frames,
                fps=round(probed.fps, 2),
                size=f"{probed.width}x{probed.height}",
            )
            warnings = []
            if probed.claimed_frames and probed.claimed_frames != probed.decoded_frames:
                warnings.append(
                    f"claims {probed.claimed_frames} frames, {probed.decoded_frames} decode"
                )
            if len(probed.sizes) > 1:
                record["size"] = "mixed"
                warnings.append(f"frames of mixed sizes: {probed.sizes_text()}")
            if warnings:
                record["problem"] = "warning: " + "; ".join(warnings)
            _, segment = segment_problem(row, probed.decoded_frames, probed.fps)
            if segment:
                record.update(usable=False, problem=f"bad_segment: {segment}")
        if not row.recording_id:
            record.update(usable=False, problem=f"empty_path: row {row.row}: the path is empty")
        if row.row in conflicts:
            record.update(usable=False, problem=f"conflicting_labels: {conflicts[row.row]}")
        if row.row in split_problems:
            record.update(usable=False, problem=split_problems[row.row])
        if not row.label:
            record.update(usable=False, problem="empty_label: no label")
        if row.problem:
            record.update(usable=False, problem=f"bad_row: {row.problem}")
        records.append(record)
    return pd.DataFrame(records)
