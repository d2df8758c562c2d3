"""Datasets as they ship (tiny trees built here): import, extract, train on the official
split; bad trees reported row by row; split columns checked."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from gesture_cache.cache.verify import verify_cache
from gesture_cache.cli.main import main
from gesture_cache.common.errors import ConfigError
from gesture_cache.extract.config import ExtractConfig
from gesture_cache.extract.extraction import build_cache
from gesture_cache.train.config import TrainConfig
from gesture_cache.train.fit import train
from tests.helpers import write_cache, write_video

FAST = ExtractConfig(random_weights=0, clip_stride=32)


TINY = TrainConfig(epochs=1, units=(4,), dense=0, window_clips=2)


def frames(folder: Path, n: int, pattern: str = "{:05d}.jpg", skip: int | None = None) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(len(str(folder)))
    for i in range(1, n + 1):
        if i == skip:
            continue
        image = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / pattern.format(i)), image)


def split_of(run: Path) -> dict[str, set[str]]:
    table = pd.read_csv(run / "split.csv", dtype=str, keep_default_na=False)
    return {
        s: set(table.loc[table["split"] == s, "recording_id"]) for s in ("train", "val", "test")
    }


@pytest.fixture
def jester(tmp_path) -> Path:
    root = tmp_path / "jester"
    root.mkdir()
    (root / "jester-v1-labels.csv").write_text("Swiping Left\nSwiping Right\nNo gesture\n")
    (root / "jester-v1-train.csv").write_text(
        "1;Swiping Left\n2;Swiping Right\n3;Swiping Left\n4;Swiping Right\n"
        "5;Waving\n"  # not in the labels file
        "6;Swiping Left\n"  # no frames
        "garbage line\n"
    )
    (root / "jester-v1-validation.csv").write_text("10;Swiping Left\n11;Swiping Right\n")
    (root / "jester-v1-test.csv").write_text("20\n")
    for video in ("1", "2", "3", "4", "5", "10", "11", "20"):
        frames(root / "20bn-jester-v1" / video, 16, skip=9 if video == "3" else None)
    return root


@pytest.mark.slow
def test_jester_trains_on_its_own_lists(jester, tmp_path, capsys):
    meta = tmp_path / "meta" / "jester.csv"
    assert main(["import", "jester", str(jester), "--out", str(meta)]) == 0
    out = capsys.readouterr().out
    assert "jester-v1-train.csv line 5: label 'Waving' is not in jester-v1-labels.csv" in out
    assert "jester-v1-train.csv line 6: id 6 has no frames" in out
    assert "jester-v1-train.csv line 7: expected id;label" in out
    assert "20bn-jester-v1/3: 1 frame numbers missing" in out
    assert "3 rows could not be used" in out
    table = pd.read_csv(meta, dtype=str, keep_default_na=False)
    assert list(table["split"]) == ["train"] * 4 + ["val"] * 2
    assert set(table["fps"]) == {"12.0"}
    unlabelled = pd.read_csv(meta.with_name("jester_unlabelled.csv"), dtype=str)
    assert list(unlabelled["dataset_id"]) == ["20"]
    assert build_cache(meta, tmp_path / "cache", FAST).cached == 6
    run = tmp_path / "run"
    train(tmp_path / "cache", run, TINY)
    ids = {f"../jester/20bn-jester-v1/{v}" for v in ("1", "2", "3", "4")}
    assert split_of(run) == {
        "train": ids,
        "val": {"../jester/20bn-jester-v1/10", "../jester/20bn-jester-v1/11"},
        "test": set(),
    }
    config = json.loads((run / "config.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert config["split"] == "official" and metrics["split"] == "val"  # as Jester reports


def test_a_jester_tree_without_its_lists_is_refused(jester, tmp_path, capsys):
    (jester / "jester-v1-validation.csv").unlink()
    assert main(["import", "jester", str(jester), "--out", str(tmp_path / "m.csv")]) == 2
    assert "jester-v1-validation.csv is missing" in capsys.readouterr().err
    assert not (tmp_path / "m.csv").exists()


def test_jester_lists_saved_by_windows_tools_and_ids_listed_twice(jester, tmp_path, capsys):
    """A byte-order mark and CRLF line ends (Excel, Notepad) change no label; an id in two
    lists is used where it is first listed, and the second listing is reported."""
    labels = "\ufeffSwiping Left\r\nSwiping Right\r\nNo gesture\r\n"
    (jester / "jester-v1-labels.csv").write_bytes(labels.encode())
    (jester / "jester-v1-validation.csv").write_bytes(
        "\ufeff10;Swiping Left\r\n11;Swiping Right\r\n1;Swiping Left\r\n".encode()
    )
    (jester / "jester-v1-test.csv").write_text("20\n2\n")
    meta = tmp_path / "jester.csv"
    assert main(["import", "jester", str(jester), "--out", str(meta)]) == 0
    out = capsys.readouterr().out
    assert "validation.csv line 3: id 1 is already listed at jester-v1-train.csv line 1" in out
    assert "jester-v1-test.csv line 2: id 2 is already listed at jester-v1-train.csv line 2" in out
    assert "label 'Swiping Left'" not in out and "label '\ufeff" not in out
    table = pd.read_csv(meta, dtype=str, keep_default_na=False)
    assert list(table["dataset_id"]) == ["1", "2", "3", "4", "10", "11"]
    assert list(table["split"]) == ["train"] * 4 + ["val"] * 2
    assert list(pd.read_csv(meta.with_name("jester_unlabelled.csv"), dtype=str)["dataset_id"]) == [
        "20"
    ]


@pytest.fixture
def ipn(tmp_path) -> Path:
    root = tmp_path / "ipn"
    root.mkdir()
    header = "video,label,id,t_start,t_end,frames\n"
    train_rows = []
    for video in ("1CM1_1_R_#217", "1CM1_2_R_#218", "2CM2_1_L_#300"):
        frames(root / "frames" / video, 64, pattern=f"{video}_{{:06d}}.jpg")
        train_rows += [
            f"{video},D0X,1,1,16,16",
            f"{video},G01,2,17,32,16",
            f"{video},D0X,1,33,48,16",
            f"{video},G05,6,49,64,16",
        ]
    train_rows.append("1CM1_1_R_#217,G02,3,60,90,31")  # past the last frame
    train_rows.append("9XX9_1_R_#999,G01,2,1,10,10")  # no such video
    (root / "Annot_TrainList.txt").write_text(header + "\n".join(train_rows) + "\n")
    frames(root / "frames" / "3CM3_1_R_#400", 64, pattern="3CM3_1_R_#400_{:06d}.jpg")
    test_rows = ["3CM3_1_R_#400,D0X,1,1,16,16", "3CM3_1_R_#400,G01,2,17,32,16",
                 "3CM3_1_R_#400,G05,6,33,64,32"]  # fmt: skip
    (root / "Annot_TestList.txt").write_text("\n".join(test_rows) + "\n")  # no header
    return root


@pytest.mark.slow
def test_ipn_hand_background_and_its_test_list(ipn, tmp_path, capsys):
    meta = tmp_path / "ipn.csv"
    assert main(["import", "ipn", str(ipn), "--out", str(meta)]) == 0
    out = capsys.readouterr().out
    assert "Annot_TrainList.txt line 14: frames 60-90 are not inside" in out
    assert "Annot_TrainList.txt line 15: video 9XX9_1_R_#999 has no frames" in out
    table = pd.read_csv(meta, dtype=str, keep_default_na=False)
    assert "D0X" not in set(table["action"])  # non-gestures are background
    first = table.iloc[0]
    assert (first["start_frame"], first["end_frame"], first["split"]) == ("16", "32", "train")
    assert build_cache(meta, tmp_path / "cache", FAST).cached == 4
    run = tmp_path / "run"
    train(tmp_path / "cache", run, TrainConfig(**{**TINY.__dict__, "background": True}))
    parts = split_of(run)
    assert parts["test"] == {"ipn/frames/3CM3_1_R_#400"}
    assert parts["val"] and parts["train"] and not parts["val"] & parts["train"]
    assert parts["train"] | parts["val"] == {
        f"ipn/frames/{v}" for v in ("1CM1_1_R_#217", "1CM1_2_R_#218", "2CM2_1_L_#300")
    }
    split = pd.read_csv(run / "split.csv", dtype=str, keep_default_na=False)
    assert "no_gesture" in set(split.loc[split["split"] == "test", "label"])


def test_class_folders_with_and_without_split_folders(tmp_path, capsys):
    flat = tmp_path / "flat"
    write_video(flat / "wave" / "a.avi", 20)
    frames(flat / "clap" / "b", 20)
    (flat / "README.txt").write_text("not a video")
    (flat / "wave" / "notes.txt").write_text("not a video")
    assert main(["import", "folders", str(flat), "--out", str(tmp_path / "flat.csv")]) == 0
    out = capsys.readouterr().out
    assert "README.txt: not in a label folder" in out and "notes.txt: not a video" in out
    table = pd.read_csv(tmp_path / "flat.csv", dtype=str, keep_default_na=False)
    assert sorted(table["action"]) == ["clap", "wave"] and "split" not in table
    split = tmp_path / "split"
    for part, label in (("train", "wave"), ("train", "clap"), ("val", "wave"), ("test", "clap")):
        write_video(split / part / label / f"{part}_{label}.avi", 20)
    assert main(["import", "folders", str(split), "--out", str(tmp_path / "split.csv")]) == 0
    table = pd.read_csv(tmp_path / "split.csv", dtype=str, keep_default_na=False)
    assert sorted(table["split"]) == ["test", "train", "train", "val"]


def test_hidden_files_are_neither_labels_nor_videos_nor_frames(tmp_path, capsys):
    """What macOS and Jupyter leave in a dataset folder (`.DS_Store`, `._a.avi`,
    `.ipynb_checkpoints/`) must not become a class, a video or a frame, nor hide the split
    folders; nor does a stray folder beside them."""
    root = tmp_path / "mediapipe"
    write_video(root / "train" / "wave" / "a.avi", 20)
    frames(root / "val" / "wave" / "b", 20)
    (root / "train" / "wave" / "._a.avi").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (root / "val" / "wave" / "b" / "._00001.jpg").write_bytes(b"\x00\x05\x16\x07")
    (root / ".ipynb_checkpoints" / "wave").mkdir(parents=True)
    (root / ".DS_Store").write_bytes(b"Bud1")
    write_video(root / "extras" / "wave" / "c.avi", 20)  # beside the split folders
    meta = tmp_path / "meta.csv"
    assert main(["import", "folders", str(root), "--out", str(meta)]) == 0
    out = capsys.readouterr().out
    assert "extras/: not a split folder (train, val or test)" in out
    assert "1 rows could not be used" in out
    table = pd.read_csv(meta, dtype=str, keep_default_na=False)
    assert list(table["file_path"]) == ["mediapipe/train/wave/a.avi", "mediapipe/val/wave/b"]
    assert list(table["split"]) == ["train", "val"]
    assert build_cache(meta, tmp_path / "cache", FAST).cached == 2


@pytest.mark.parametrize(
    "fmt, target",
    [
        ("jester", "jester-v1-train.csv"),
        ("jester", "jester-v1-labels.csv"),
        ("jester", "20bn-jester-v1/1/meta.csv"),
        ("ipn", "Annot_TestList.txt"),
        ("ipn", "frames/1CM1_1_R_#217/meta.csv"),
        ("folders", "wave/a.avi"),
        ("folders", "wave/meta.csv"),
    ],
)
def test_import_never_writes_over_or_into_what_it_reads(jester, ipn, tmp_path, capsys, fmt, target):
    roots = {"jester": jester, "ipn": ipn, "folders": tmp_path / "flat"}
    write_video(roots["folders"] / "wave" / "a.avi", 20)
    root = roots[fmt]
    out = root / target
    before = out.read_bytes() if out.is_file() else None
    assert main(["import", fmt, str(root), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "would replace the input" in err or "is read as input" in err, err
    assert (out.read_bytes() if out.is_file() else None) == before


def test_a_meta_csv_written_into_root_is_not_a_bad_row_next_time(tmp_path, capsys):
    root = tmp_path / "flat"
    write_video(root / "wave" / "a.avi", 20)
    frames(root / "clap" / "b", 20)
    for _ in range(2):
        assert main(["import", "folders", str(root), "--out", str(root / "meta.csv")]) == 0
        out = capsys.readouterr().out
        assert "could not be used" not in out and "meta.csv" not in out.split("wrote")[0], out


def test_a_stale_unlabelled_companion_is_removed_with_a_word(jester, tmp_path, capsys):
    meta = tmp_path / "jester.csv"
    assert main(["import", "jester", str(jester), "--out", str(meta)]) == 0
    companion = tmp_path / "jester_unlabelled.csv"
    assert companion.is_file()
    capsys.readouterr()
    (jester / "jester-v1-test.csv").unlink()
    assert main(["import", "jester", str(jester), "--out", str(meta)]) == 0
    assert f"removed {companion}" in capsys.readouterr().out and not companion.exists()


def test_ipn_as_downloaded_keeps_its_lists_in_annotations(ipn, tmp_path):
    (ipn / "annotations").mkdir()
    for name in ("Annot_TrainList.txt", "Annot_TestList.txt"):
        (ipn / name).rename(ipn / "annotations" / name)
    meta = tmp_path / "ipn.csv"
    assert main(["import", "ipn", str(ipn), "--out", str(meta)]) == 0
    assert set(pd.read_csv(meta, dtype=str)["split"]) == {"train", "test"}


def test_an_ipn_video_in_both_lists_is_reported_at_import(ipn, tmp_path, capsys):
    with open(ipn / "Annot_TestList.txt", "a") as f:
        f.write("1CM1_2_R_#218,G01,2,17,32,16\n")
    meta = tmp_path / "ipn.csv"
    assert main(["import", "ipn", str(ipn), "--out", str(meta)]) == 0
    out = capsys.readouterr().out
    assert "Annot_TestList.txt line 4: video 1CM1_2_R_#218 is also in the train list" in out
    table = pd.read_csv(meta, dtype=str)
    assert set(table.loc[table["dataset_id"] == "1CM1_2_R_#218", "split"]) == {"train"}


HOSTILE_NAMES = [" lead.avi", "trail.avi ", '"quoted".avi', "'single.avi", "back\\slash.avi",
                 "com,ma.avi", "new\nline.avi", "ünï cødé.avi", "#hash.avi"]  # fmt: skip


def test_import_folders_writes_names_its_reader_reads_back(tmp_path, capsys):
    """Whatever a file is called (as an unzipped Windows archive or a careless user names
    it), the CSV import writes is read back by `check` and `extract` as that file; inside
    ROOT and beside it."""
    root = tmp_path / "flat"
    for i, name in enumerate(HOSTILE_NAMES):  # OpenCV takes some names for image patterns
        plain = write_video(root / ("wave" if i % 2 else "clap") / f"plain{i}.avi", 16, seed=i)
        plain.rename(plain.with_name(name))
    for meta in (root / "meta.csv", tmp_path / "beside.csv"):
        assert main(["import", "folders", str(root), "--out", str(meta)]) == 0
        assert "could not be used" not in capsys.readouterr().out
        assert main(["check", str(meta)]) == 0, capsys.readouterr().out
        out = capsys.readouterr().out
        assert f"{len(HOSTILE_NAMES)} of {len(HOSTILE_NAMES)} rows usable" in out


def test_a_dangling_link_and_a_folder_of_videos_are_reported_by_their_own_names(tmp_path, capsys):
    root = tmp_path / "flat"
    write_video(root / "wave" / "a.avi", 16)
    (root / "wave" / "gone.avi").symlink_to(tmp_path / "elsewhere" / "target.avi")
    write_video(root / "clap" / "subject01" / "b.avi", 16)
    write_video(root / "clap" / "c.avi", 16)
    meta = tmp_path / "meta.csv"
    assert main(["import", "folders", str(root), "--out", str(meta)]) == 0
    out = capsys.readouterr().out
    assert "wave/gone.avi: a link to" in out and "which does not exist" in out
    assert "clap/subject01: a folder of videos or folders, not of frames" in out
    assert "target" not in meta.read_text()


def write_split_csv(folder: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    """(file, label, split, group) rows, each file a short video."""
    lines = ["file_path,action,split,group"]
    for name, label, split, group in rows:
        if not (folder / name).exists():
            write_video(folder / name, 16, seed=len(name))
        lines.append(f"{name},{label},{split},{group}")
    (folder / "meta.csv").write_text("\n".join(lines) + "\n")
    return folder / "meta.csv"


@pytest.mark.parametrize(
    "rows, message",
    [
        (
            [("a.avi", "wave", "train", "s1"), ("b.avi", "clap", "", "s2")],
            "'b.avi' (CSV row 2: '')",
        ),
        ([("a.avi", "wave", "train", "s1"), ("b.avi", "clap", "test", "s1")], "group 's1'"),
    ],
)
@pytest.mark.slow
def test_a_split_column_that_cannot_be_followed_is_refused(tmp_path, rows, message):
    rows = [*rows, ("c.avi", "wave", "train", "s3"), ("d.avi", "clap", "train", "s4")]
    csv = write_split_csv(tmp_path, rows)
    build_cache(csv, tmp_path / "cache", FAST)
    with pytest.raises(ConfigError, match=re.escape(message)):
        train(tmp_path / "cache", tmp_path / "run", TINY)
    assert not (tmp_path / "run").exists()
    train(
        tmp_path / "cache", tmp_path / "random", TrainConfig(**{**TINY.__dict__, "split": "random"})
    )
    assert json.loads((tmp_path / "random" / "config.json").read_text())["split"] == "random"


def test_an_unknown_split_value_is_a_row_failure(tmp_path):
    csv = write_split_csv(
        tmp_path, [("a.avi", "wave", "train", ""), ("b.avi", "clap", "holdout", "")]
    )
    summary = build_cache(csv, tmp_path / "cache", FAST)
    assert summary.cached == 1 and summary.failed["bad_row"] == 1


def test_split_official_needs_the_column(small_cache, tmp_path):
    with pytest.raises(ConfigError, match="has no split column"):
        train(small_cache, tmp_path / "run", TrainConfig(**{**TINY.__dict__, "split": "official"}))


def test_check_reports_what_train_refuses_about_a_split_column(tmp_path, capsys):
    csv = write_split_csv(
        tmp_path,
        [("a.avi", "wave", "train", "s1"), ("b.avi", "clap", "", "s2"),
         ("c.avi", "wave", "test", "s1")],
    )  # fmt: skip
    assert main(["check", str(csv)]) == 1
    out = capsys.readouterr().out
    assert "blank_split" in out and "split_conflict: group 's1' is in train (row 1)" in out


def leaky_rows() -> list[tuple[str, str, str, str]]:
    copy = "ab" * 32
    rows = [("train/a.avi", "wave", "train", copy), ("test/a.avi", "wave", "test", copy)]
    for i in range(6):
        rows.append((f"train/{i}.avi", ("wave", "clap")[i % 2], "train", ""))
        rows.append((f"test/{i}.avi", ("wave", "clap")[i % 2], "test", ""))
    return rows


@pytest.mark.slow
def test_identical_files_on_both_sides_of_an_official_split_are_refused(tmp_path):
    cache = write_cache(tmp_path / "cache", leaky_rows())
    with pytest.raises(ConfigError, match="byte-identical") as refused:
        train(cache, tmp_path / "run", TINY)
    assert "'test/a.avi' (test) = 'train/a.avi' (train)" in str(refused.value)
    assert not (tmp_path / "run").exists()
    result = verify_cache(cache)
    assert any("train refuses that official split" in w for w in result.warnings)
    train(cache, tmp_path / "allowed", TrainConfig(**{**TINY.__dict__, "allow_duplicates": True}))
    random = TrainConfig(**{**TINY.__dict__, "split": "random"})
    train(cache, tmp_path / "random", random)
    parts = split_of(tmp_path / "random")
    assert any({"train/a.avi", "test/a.avi"} <= part for part in parts.values())
