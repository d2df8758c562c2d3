"""`export-features`: a cache as Parquet files with a dataset card, read by pandas,
pyarrow and Hugging Face `datasets`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from gesture_cache.cache.manifest import ExtractorRecord, read_manifest
from gesture_cache.cache.parquet import export_parquet
from gesture_cache.cache.reader import open_cache
from gesture_cache.cli.main import main
from tests.helpers import clips_of


@pytest.fixture(scope="module")
def exported(small_cache, tmp_path_factory):
    return export_parquet(small_cache, tmp_path_factory.mktemp("export") / "features")


def test_pandas_reads_every_clip_as_the_cache_holds_it(small_cache, exported):
    cache = open_cache(small_cache)
    clips = pd.read_parquet(exported / "clips.parquet")
    assert len(clips) == len(cache.features)
    for recording_id in cache.recordings["recording_id"]:
        mine = clips[clips.recording_id == recording_id].sort_values("clip_index")
        np.testing.assert_array_equal(
            np.stack(mine.features.to_numpy()), clips_of(cache, recording_id).astype(np.float32)
        )
        assert mine.clip_index.tolist() == list(range(len(mine)))
    recordings = pd.read_parquet(exported / "recordings.parquet")
    assert sorted(recordings.recording_id) == sorted(cache.recordings["recording_id"])
    assert recordings.clips.sum() == len(clips)
    segments = pd.read_parquet(exported / "segments.parquet")
    assert sorted(segments.label) == sorted(cache.segments["label"])
    assert (segments.end_frame > segments.start_frame).all()


def test_pyarrow_reads_the_manifest_from_the_schema(small_cache, exported):
    table = pq.read_table(exported / "segments.parquet")
    manifest = json.loads(table.schema.metadata[b"gesture_cache"])
    assert manifest["fingerprint"] == open_cache(small_cache).fingerprint
    features = pq.read_schema(exported / "clips.parquet").field("features").type
    assert features.list_size == manifest["feature_dim"]


def test_datasets_loads_the_files_and_the_cards_configs(exported, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    clips = datasets.load_dataset(
        "parquet", data_files=str(exported / "clips.parquet"), split="train"
    )
    assert clips.num_rows == len(pd.read_parquet(exported / "clips.parquet"))
    assert len(clips[0]["features"]) == 4096
    segments = datasets.load_dataset(str(exported), "segments", split="train")
    assert set(segments.column_names) >= {"recording_id", "label", "start_frame", "end_frame"}
    card = (exported / "README.md").read_text()
    assert "random weights (seed 0)" in card and "| 1_Finger_Click | 2 |" in card


def test_an_existing_target_is_refused_and_left_alone(small_cache, tmp_path, capsys):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "mine.txt").write_text("keep me")
    assert main(["export-features", str(small_cache), "--out", str(target)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert [p.name for p in target.iterdir()] == ["mine.txt"]


def test_a_damaged_cache_exports_nothing(small_cache, tmp_path, capsys):

    damaged = tmp_path / "damaged"
    shutil.copytree(small_cache, damaged)
    shard = damaged / "part-00000.h5"
    shard.write_bytes(shard.read_bytes()[:-100])
    assert main(["export-features", str(damaged), "--out", str(tmp_path / "out")]) == 2
    assert "part-00000.h5" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged"]


def test_a_schema_1_cache_exports_its_fixed_clips(tmp_path):
    from tests.helpers import write_v1_cache

    v1 = write_v1_cache(tmp_path / "v1", ["wave", "clap", "wave"], clips=3)
    out = export_parquet(v1, tmp_path / "features")
    clips = pd.read_parquet(out / "clips.parquet")
    assert len(clips) == 9 and clips.groupby("recording_id").size().tolist() == [3, 3, 3]
    assert sorted(pd.read_parquet(out / "segments.parquet").label) == ["clap", "wave", "wave"]
    assert "| recordings | 3 |" in (out / "README.md").read_text()


def test_a_full_disk_is_a_message_and_leaves_nothing(small_cache, tmp_path):
    """RLIMIT_FSIZE makes every write past 64 KB fail (EFBIG), as a full disk would."""
    import resource

    out = tmp_path / "features"
    command = [sys.executable, "-m", "gesture_cache.cli", "export-features", str(small_cache)]

    def limit_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))

    failed = subprocess.run(
        [*command, "--out", str(out)], preexec_fn=limit_files, capture_output=True, text=True
    )
    assert failed.returncode == 2, failed.stderr[-2000:]
    assert "cannot write the export" in failed.stderr and "Traceback" not in failed.stderr
    assert list(tmp_path.iterdir()) == []


def test_extra_columns_named_like_our_own_export_in_their_namespace(small_cache, tmp_path):
    from gesture_cache.cache.manifest import CachedRecording, Segment
    from gesture_cache.cache.writer import CacheWriter

    extractor = read_manifest(small_cache)["extractor"]
    extra = {"label": "theirs", "recording_id": "x", "row": "99", "group": "mine"}
    with CacheWriter(
        tmp_path / "cache", ExtractorRecord(extractor, 4096), dtype="float16", shard_size=4
    ) as writer:
        writer.add(
            CachedRecording(
                "v.avi", "0" * 64, np.zeros((2, 4096), np.float32), np.array([0, 8]),
                np.ones(2, bool), [Segment("wave", 0, 24, "", 1, extra)], 24, 25.0, 48, 64,
            )
        )  # fmt: skip
    assert main(["export-features", str(tmp_path / "cache"), "--out", str(tmp_path / "p")]) == 0
    segments = pd.read_parquet(tmp_path / "p" / "segments.parquet")
    assert segments.loc[0, "label"] == "wave" and segments.loc[0, "extra/label"] == "theirs"
    assert segments.loc[0, "row"] == 1 and segments.loc[0, "extra/row"] == "99"
