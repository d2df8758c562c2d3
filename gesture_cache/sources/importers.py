"""Public gesture datasets read as they ship, written as the meta CSV (with their official
split, their subjects as groups where they have them, and their own ids).

- `jester`: 20BN-Jester v1. `jester-v1-labels.csv` (one label a line), `jester-v1-train.csv`
  and `jester-v1-validation.csv` (`id;label`, no header), `jester-v1-test.csv` (ids only,
  unlabelled: written to a second CSV for `predict`, never trained on), frame folders
  `20bn-jester-v1/<id>/00001.jpg ...` at 12 fps.
- `ipn`: IPN Hand. `Annot_TrainList.txt` and `Annot_TestList.txt`
  (`video,label,id,t_start,t_end,frames`, frames 1-based and inclusive, with or without a
  header), frame folders `frames/<video>/<video>_000001.jpg ...` at 30 fps. Every frame is
  annotated; the non-gesture rows (`D0X`) are left out, so their frames are background.
- `folders`: `ROOT/<label>/<video file or folder of frames>` (MediaPipe Model Maker, the Keras
  examples), or `ROOT/<train|val|test>/<label>/...` when a top-level folder names a split.

A row that cannot be used (an unknown label, an id without frames, a segment past the last
frame, a line that does not parse) is listed with its file, line and reason and the import
goes on; gaps in a folder's frame numbering are reported.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from gesture_cache.common.errors import ConfigError
from gesture_cache.common.files import atomic_write_together, refuse_inputs
from gesture_cache.video.decode import IMAGE_SUFFIXES, natural_key, visible

FORMATS = ("jester", "ipn", "folders")


VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


JESTER_FPS, IPN_FPS = 12.0, 30.0


IPN_BACKGROUND = "D0X"


SPLIT_FOLDERS = {"train": "train", "val": "val", "validation": "val", "test": "test"}


COLUMNS = ["file_path", "action", "split", "group", "dataset_id", "fps"]


@dataclass
class Imported:
    """What an import wrote and what it could not use."""

    csv: Path
    rows: int = 0
    unlabelled: Path | None = None  # ids without labels (Jester's test list), for predict
    unlabelled_rows: int = 0
    skipped: list[str] = field(default_factory=list)  # "file line N: reason"
    gaps: list[str] = field(default_factory=list)  # folders whose frame numbers skip
    inputs: list[Path] = field(default_factory=list)  # files read and folders of data
    removed: Path | None = None  # a stale companion of an earlier import, removed


def import_dataset(fmt: str, root: str | Path, out: str | Path) -> Imported:
    """Write the meta CSV `out` for the dataset at `root`; paths in it are relative to the
    CSV's folder, so `extract OUT` needs no --video-root. Neither `out` nor its companion
    (`OUT_unlabelled.csv`, the ids without labels) may be, or lie inside, what is read."""
    root, out = Path(root), Path(out)
    if fmt not in FORMATS:
        raise ConfigError(f"unknown dataset format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder")
    result = Imported(out)
    companion = out.with_name(f"{out.stem}_unlabelled.csv")
    rows, unlabelled = {"jester": jester, "ipn": ipn, "folders": folders}[fmt](root, result)
    refuse_inputs([out, companion], result.inputs)
    if not rows:
        raise ConfigError(
            f"{root}: no usable row in the {fmt} layout ({len(result.skipped)} skipped"
            + (f", first: {result.skipped[0]}" if result.skipped else "")
            + ")"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    files = {out: csv_bytes(out, rows, root)}
    if unlabelled:
        files[companion] = csv_bytes(out, unlabelled, root)
        result.unlabelled, result.unlabelled_rows = companion, len(unlabelled)
    atomic_write_together(files)  # a CSV and its companion are replaced together
    result.rows = len(rows)
    if not unlabelled and companion.is_file():  # an earlier import's: it no longer applies
        companion.unlink()
        result.removed = companion
    return result


def csv_bytes(out: Path, rows: list[dict], root: Path) -> bytes:
    """The meta CSV of `rows`, paths relative to `out`'s folder, every field quoted: a name
    that starts or ends with a space or a quote, or holds a backslash, reads back as written
    (`meta.read_meta` takes a path as written when it names a file)."""
    base = out.parent.resolve()
    table = pd.DataFrame(rows)
    # the root resolved, the names below it as they are: a link is a row of its own name
    table["file_path"] = [
        Path(os.path.relpath(root.resolve() / p, base)).as_posix() for p in table["file_path"]
    ]
    columns = [c for c in [*COLUMNS, "start_frame", "end_frame"] if c in table]
    return table[columns].to_csv(index=False, quoting=csv.QUOTE_ALL).encode()


def frame_count(folder: Path, result: Imported) -> int:
    """Images in a folder of frames (0 when it is missing); gaps in their numbers noted."""
    if not folder.is_dir():
        return 0
    images = sorted(
        (p.name for p in visible(folder) if p.suffix.lower() in IMAGE_SUFFIXES), key=natural_key
    )
    numbers = [int(m.group(1)) for n in images if (m := re.search(r"(\d+)\D*$", n))]
    if numbers and numbers[-1] - numbers[0] + 1 != len(numbers):
        missing = numbers[-1] - numbers[0] + 1 - len(numbers)
        result.gaps.append(f"{folder}: {missing} frame numbers missing between its images")
    return len(images)


def text_lines(path: Path) -> list[str]:
    """A list file's lines; a byte-order mark (a file saved by Excel or Notepad) is dropped,
    not read as part of the first label or id."""
    return path.read_text(encoding="utf-8-sig").splitlines()


def annotation(root: Path, name: str, result: Imported, folders: tuple[str, ...] = ()) -> Path:
    """An annotation list in ROOT, or in one of ROOT's `folders` (IPN Hand's download unpacks
    its lists into `annotations/`), noted as an input."""
    for place in (root, *(root / f for f in folders)):
        if (place / name).is_file():
            result.inputs.append(place / name)
            return place / name
    where = " or ".join(str(p) for p in (root, *(root / f for f in folders)))
    raise ConfigError(f"{root}: the annotation file {name} is missing (looked in {where})")


def jester(root: Path, result: Imported) -> tuple[list[dict], list[dict]]:
    labels_path = annotation(root, "jester-v1-labels.csv", result)
    labels = {line.strip() for line in text_lines(labels_path) if line.strip()}
    frames = root / "20bn-jester-v1"
    result.inputs.append(frames)
    rows, unlabelled = [], []
    listed: dict[str, str] = {}  # id -> where it was first listed
    for name, split in (("jester-v1-train.csv", "train"), ("jester-v1-validation.csv", "val")):
        path = annotation(root, name, result)
        for number, line in enumerate(text_lines(path), start=1):
            if not line.strip():
                continue
            where = f"{name} line {number}"
            parts = line.split(";")
            if len(parts) != 2 or not parts[0].strip():
                result.skipped.append(f"{where}: expected id;label, got {line!r}")
                continue
            video, label = parts[0].strip(), parts[1].strip()
            if video in listed:
                result.skipped.append(f"{where}: id {video} is already listed at {listed[video]}")
                continue
            listed[video] = where
            if label not in labels:
                result.skipped.append(f"{where}: label {label!r} is not in {labels_path.name}")
                continue
            if not frame_count(frames / video, result):
                result.skipped.append(f"{where}: id {video} has no frames in {frames}")
                continue
            rows.append(
                {
                    "file_path": f"20bn-jester-v1/{video}",
                    "action": label,
                    "split": split,
                    "group": "",
                    "dataset_id": video,
                    "fps": JESTER_FPS,
                }
            )
    test = root / "jester-v1-test.csv"
    if test.is_file():
        result.inputs.append(test)
        for number, line in enumerate(text_lines(test), start=1):
            video = line.split(";")[0].strip()
            if not video:
                continue
            if video in listed:
                result.skipped.append(
                    f"{test.name} line {number}: id {video} is already listed at {listed[video]}"
                )
                continue
            listed[video] = f"{test.name} line {number}"
            if not frame_count(frames / video, result):
                result.skipped.append(f"{test.name} line {number}: id {video} has no frames")
                continue
            unlabelled.append(
                {
                    "file_path": f"20bn-jester-v1/{video}",
                    "dataset_id": video,
                    "fps": JESTER_FPS,
                }
            )
    return rows, unlabelled


IPN_FIELDS = ("video", "label", "id", "t_start", "t_end", "frames")


def ipn(root: Path, result: Imported) -> tuple[list[dict], list[dict]]:
    rows = []
    counts: dict[str, int] = {}
    listed: dict[str, tuple[str, str]] = {}  # video -> (its split, where it was first listed)
    result.inputs.append(root / "frames")
    for name, split in (("Annot_TrainList.txt", "train"), ("Annot_TestList.txt", "test")):
        path = annotation(root, name, result, folders=("annotations",))
        with open(path, newline="", encoding="utf-8-sig") as f:
            lines = list(csv.reader(f))
        for number, fields_ in enumerate(lines, start=1):
            if not fields_ or not "".join(fields_).strip():
                continue
            where = f"{name} line {number}"
            if number == 1 and fields_[0].strip().lower() == "video":
                continue  # the header, when the list has one
            if len(fields_) != len(IPN_FIELDS):
                result.skipped.append(f"{where}: expected {','.join(IPN_FIELDS)}")
                continue
            video, label, _, start, end, length = (v.strip() for v in fields_)
            try:
                start, end, length = int(start), int(end), int(length)
            except ValueError:
                result.skipped.append(f"{where}: t_start, t_end and frames must be numbers")
                continue
            first_split, first_where = listed.setdefault(video, (split, where))
            if first_split != split:
                result.skipped.append(
                    f"{where}: video {video} is also in the {first_split} list ({first_where}); "
                    f"a video belongs to one part, so its {split} rows are left out"
                )
                continue
            if video not in counts:
                counts[video] = frame_count(root / "frames" / video, result)
            if not counts[video]:
                result.skipped.append(f"{where}: video {video} has no frames in {root / 'frames'}")
                continue
            if not 1 <= start <= end or end > counts[video]:
                result.skipped.append(
                    f"{where}: frames {start}-{end} are not inside {video}'s {counts[video]} frames"
                )
                continue
            if length != end - start + 1:
                result.skipped.append(
                    f"{where}: frames says {length}, t_start..t_end holds {end - start + 1}"
                )
                continue
            if label == IPN_BACKGROUND:
                continue  # not a gesture: its frames are background
            rows.append(
                {
                    "file_path": f"frames/{video}",
                    "action": label,
                    "split": split,
                    "group": video,
                    "dataset_id": video,
                    "fps": IPN_FPS,
                    "start_frame": start - 1,  # 1-based inclusive -> 0-based, end exclusive
                    "end_frame": end,
                }
            )
    return rows, []


def folders(root: Path, result: Imported) -> tuple[list[dict], list[dict]]:
    top = sorted(p for p in visible(root) if p.is_dir())
    # a folder named after a split names the split level; a stray folder beside it (a
    # README folder, a copy) is reported, not taken for a sign that `train` is a label
    splits = {p: SPLIT_FOLDERS.get(p.name.lower()) for p in top}
    split_level = any(splits.values())
    parts = [(p, s) for p, s in splits.items() if s] if split_level else [(root, "")]
    for other in (p for p, s in splits.items() if split_level and not s):
        result.skipped.append(
            f"{other.relative_to(root).as_posix()}/: not a split folder (train, val or test)"
        )
    rows = []
    for base, split in parts:
        for loose in sorted(p for p in visible(base) if not p.is_dir()):
            if base == root and loose.suffix.lower() == ".csv":
                continue  # a meta CSV written into ROOT (by an earlier import): not data
            result.skipped.append(f"{loose.relative_to(root).as_posix()}: not in a label folder")
        for label_folder in sorted(p for p in visible(base) if p.is_dir()):
            result.inputs.append(label_folder)
            for entry in sorted(visible(label_folder), key=lambda p: natural_key(p.name)):
                problem = entry_problem(entry, result)
                if problem:
                    result.skipped.append(f"{entry.relative_to(root).as_posix()}: {problem}")
                    continue
                relative = entry.relative_to(root).as_posix()
                rows.append(
                    {
                        "file_path": relative,
                        "action": label_folder.name,
                        "split": split,
                        "group": "",
                        "dataset_id": relative,
                        "fps": "",
                    }
                )
    if not split_level:
        for row in rows:
            del row["split"]
    return rows, []


def entry_problem(entry: Path, result: Imported) -> str | None:
    """Why an entry of a label folder is not a recording (a video file or a folder of
    frames), or None."""
    if entry.is_symlink() and not entry.exists():
        return f"a link to {os.readlink(entry)}, which does not exist"
    if entry.is_dir():
        if frame_count(entry, result):
            return None
        if any(p.suffix.lower() in VIDEO_SUFFIXES or p.is_dir() for p in visible(entry)):
            return (
                "a folder of videos or folders, not of frames: put each video (or frames "
                "folder) directly in its label folder, ROOT/<label>/<video>, or write the "
                "meta CSV yourself (with a group column for subjects)"
            )
        return "a folder without frames"
    if entry.suffix.lower().strip() not in VIDEO_SUFFIXES:  # "clip.avi " is a video too
        return "not a video or a folder of frames"
    return None
