"""The meta CSV and `check`: labels stay text, repeated columns are refused, `check` rejects
exactly what `extract` rejects."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from gesture_cache.common.errors import ConfigError
from gesture_cache.extract.config import ExtractConfig
from gesture_cache.extract.extraction import build_cache
from gesture_cache.sources.meta import check_rows, read_meta
from tests.helpers import write_video


def test_meta_labels_stay_text_and_a_repeated_column_is_refused(tmp_path):
    csv = tmp_path / "meta.csv"
    csv.write_text("file_path,action\na.avi,NA\nb.avi,null\nc.avi,None\nd.avi,nan\n")
    assert [r.label for r in read_meta(csv)] == ["NA", "null", "None", "nan"]
    csv.write_text("file_path,action,action\na.avi,wave,click\n")
    with pytest.raises(ConfigError, match="'action' appears more than once"):
        read_meta(csv)


def test_check_reports_a_folder_of_mixed_sizes(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i, size in enumerate([(48, 64), (48, 64), (96, 128)]):
        cv2.imwrite(str(folder / f"{i}.jpg"), np.zeros((*size, 3), np.uint8))
    (tmp_path / "meta.csv").write_text("file_path,action\nmixed,wave\n")
    table = check_rows(read_meta(tmp_path / "meta.csv"))
    assert table["size"].iloc[0] == "mixed"
    assert "64x48 (2 frames), 128x96 (1 frames)" in table["problem"].iloc[0]


def test_check_rejects_exactly_the_rows_extract_rejects(tmp_path, capsys):
    write_video(tmp_path / "rec.avi", 48, fps=25)  # 48 frames, 1.92 s
    write_video(tmp_path / "same.avi", 20, fps=25)
    (tmp_path / "meta.csv").write_text(
        "file_path,action,start_frame,end_frame,start_time,end_time\n"
        "rec.avi,wave,0,20,,\n"  # fine
        "rec.avi,wave,40,60,,\n"  # past the end
        "rec.avi,wave,,,1.5,2.5\n"  # beyond the length
        "rec.avi,click,,,1.0,1.01\n"  # rounds to an empty segment at 25 fps
        "rec.avi,click,20,30,0.0,0.4\n"  # frames and times disagree
        "rec.avi,click,20,30,0.8,1.2\n"  # frames and times agree
        "same.avi,wave,,,,\n"
        "same.avi,click,,,,\n"  # another label for the whole of same.avi
    )
    table = check_rows(read_meta(tmp_path / "meta.csv"))
    rejected_by_check = set(table.loc[~table["usable"], "row"])
    assert rejected_by_check == {2, 3, 4, 5, 7, 8}, table.to_string()
    assert "round to an empty segment" in table.loc[table["row"] == 4, "problem"].iloc[0]
    assert "disagree" in table.loc[table["row"] == 5, "problem"].iloc[0]
    config = ExtractConfig(random_weights=0, clip_stride=32)
    build_cache(tmp_path / "meta.csv", tmp_path / "cache", config)
    failures = [json.loads(line) for line in (tmp_path / "cache" / "failures.jsonl").open()]
    rejected_by_extract = {f["row"] for f in failures if f["recording_id"] == "rec.avi"}
    if any(f["recording_id"] == "same.avi" for f in failures):
        rejected_by_extract |= {7, 8}  # the recording fails as a whole, named by its first row
    assert rejected_by_extract == rejected_by_check, failures
