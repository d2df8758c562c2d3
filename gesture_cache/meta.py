"""The meta CSV: which videos, with which labels (and optional groups)."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from gesture_cache.errors import ConfigError
from gesture_cache.video import VideoError, probe

log = logging.getLogger(__name__)


class MetaError(ConfigError):
    """A CSV that cannot be used at all (wrong columns, no rows)."""


@dataclass(frozen=True)
class VideoRow:
    row: int  # 1-based data row number, as a spreadsheet would show it after the header
    video_id: str  # the CSV path, cleaned, POSIX form
    path: Path  # where the file is on this machine
    label: str
    group: str
    extra: dict[str, str]


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
) -> list[VideoRow]:
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
    extra_columns = [c for c in table.columns if c not in (path_column, label_column, "group")]
    rows = []
    for number, record in enumerate(table.to_dict("records"), start=1):
        video_id = clean_path(record[path_column])
        rows.append(
            VideoRow(
                row=number,
                video_id=video_id,
                path=root / video_id,
                label=record[label_column].strip().strip("\"'").strip(),
                group=record.get("group", "").strip(),
                extra={c: record[c] for c in extra_columns},
            )
        )
    return rows


def row_problem(row: VideoRow) -> str | None:
    """Why a row's text cannot be stored (HDF5 strings cannot hold NUL), or None."""
    fields = {"path": row.video_id, "label": row.label, "group": row.group, **row.extra}
    for name, value in fields.items():
        if "\0" in value:
            return f"row {row.row}: column {name!r} holds a NUL character"
    return None


def check_rows(rows: list[VideoRow]) -> pd.DataFrame:
    """Probe every row without running C3D: one line per row, `usable` and a `problem`."""
    records = []
    for row in rows:
        record = {
            "row": row.row,
            "video_id": row.video_id,
            "label": row.label,
            "frames": "",  # blank until probed: the table shows numbers or nothing
            "claimed": "",
            "fps": "",
            "size": "",
            "usable": True,
            "problem": "",
        }
        try:
            probed = probe(row.path)
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
        records.append(record)
    return pd.DataFrame(records)
