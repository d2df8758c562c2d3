"""The meta CSV: which recordings, with which labels, groups and (optionally) segments.

A row without `start_frame,end_frame` or `start_time,end_time` labels its whole recording;
with them it labels a segment (end exclusive), and many rows may name one recording.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from gesture_cache.errors import ConfigError
from gesture_cache.video import VideoError, probe

log = logging.getLogger(__name__)


class MetaError(ConfigError):
    """A CSV that cannot be used at all (wrong columns, no rows)."""


SEGMENT_COLUMNS = ("start_frame", "end_frame", "start_time", "end_time")
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
        recording_id = clean_path(record[path_column])
        start, end, in_seconds, problem = segment_bounds(record, number)
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
            fps=fps,
            problem=problem or fps_problem,
        )
        rows.append(replace(row, problem=row.problem or text_problem(row)))
    return rows


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
) -> tuple[float | None, float | None, bool, str | None]:
    """(start, end, in seconds, problem) of a row's segment; (None, None, False, None) when
    the row labels its whole recording."""
    for start_column, end_column, in_seconds in (
        ("start_frame", "end_frame", False),
        ("start_time", "end_time", True),
    ):
        start, start_problem = optional_number(record, start_column, number)
        end, end_problem = optional_number(record, end_column, number)
        if start_problem or end_problem:
            return None, None, False, start_problem or end_problem
        if start is None and end is None:
            continue
        if start is None or end is None:
            return None, None, False, f"row {number}: give both {start_column} and {end_column}"
        if not in_seconds and (start != int(start) or end != int(end)):
            return None, None, False, f"row {number}: frame numbers must be whole numbers"
        if start >= end:
            return None, None, False, f"row {number}: segment start {start:g} >= end {end:g}"
        return start, end, in_seconds, None
    return None, None, False, None


def text_problem(row: Row) -> str | None:
    """Why a row's text cannot be stored (HDF5 strings cannot hold NUL), or None."""
    fields = {"path": row.recording_id, "label": row.label, "group": row.group, **row.extra}
    for name, value in fields.items():
        if "\0" in value:
            return f"row {row.row}: column {name!r} holds a NUL character"
    return None


def check_rows(rows: list[Row]) -> pd.DataFrame:
    """Probe every row without running C3D: one line per row, `usable` and a `problem`."""
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
        try:
            probed = probe(row.path, row.fps)
            record.update(
                frames=probed.decoded_frames,
                claimed=probed.claimed_frames,
                fps=round(probed.fps, 2),
                size=f"{probed.width}x{probed.height}",
            )
            if probed.claimed_frames and probed.claimed_frames != probed.decoded_frames:
                record["problem"] = (
                    f"warning: claims {probed.claimed_frames} frames, "
                    f"{probed.decoded_frames} decode"
                )
        except VideoError as error:
            record.update(usable=False, problem=f"{error.reason}: {error}")
        if not row.label:
            record.update(usable=False, problem="empty_label: no label")
        if row.problem:
            record.update(usable=False, problem=f"bad_row: {row.problem}")
        records.append(record)
    return pd.DataFrame(records)
