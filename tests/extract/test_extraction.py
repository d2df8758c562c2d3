"""`build_cache`: caching, resuming, failures, parts, storage types, and every extractor
option recorded and run."""

from __future__ import annotations

import shutil
from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gesture_cache import open_cache
from gesture_cache.backbones.c3d.network import build_c3d, randomize_weights
from gesture_cache.cache.manifest import ExtractorRecord, read_failures
from gesture_cache.cache.merge import merge_caches
from gesture_cache.cache.verify import verify_cache
from gesture_cache.cache.writer import CacheWriter
from gesture_cache.common.errors import CacheError, ConfigError
from gesture_cache.extract.config import ExtractConfig
from gesture_cache.extract.extraction import build_cache
from gesture_cache.sources.meta import MetaError, read_meta
from tests.helpers import clips_of, save_keras2_weights, write_video

FAST = {"random_weights": 0, "clip_stride": 64, "shard_size": 4}


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    pd.DataFrame(rows, columns=["file_path", "action"]).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def awkward(tmp_path_factory) -> tuple[Path, dict[str, str | None]]:
    """A CSV of every kind of awkward input; the value is the expected failure reason
    (None: cached)."""
    root = tmp_path_factory.mktemp("awkward")
    write_video(root / "ok.avi", 20)
    (root / "zero.avi").write_bytes(b"")
    (root / "text.mp4").write_text("not a video at all\n" * 100)
    full = write_video(root / "full.avi", 40, seed=1).read_bytes()
    (root / "truncated.avi").write_bytes(full[: len(full) * 6 // 10])
    (root / "header_only.avi").write_bytes(full[:600])
    write_video(root / "one_frame.avi", 1)
    write_video(root / "long.avi", 300, 32, 24)
    write_video(root / "odd.avi", 5, 17, 9)
    write_video(root / "big.avi", 4, 1920, 1080)
    write_video(root / "grey.avi", 12, grey=True)
    write_video(root / "sub dir" / "vid one.avi", 10)
    write_video(root / "vidéo_ñ.avi", 10)
    write_video(root / "it's.avi", 10)
    expected = {
        "ok.avi": None,
        "missing.avi": "missing",
        "zero.avi": "empty_file",
        "text.mp4": ("unreadable", "no_frames"),
        "truncated.avi": None,
        "header_only.avi": ("unreadable", "no_frames"),
        "one_frame.avi": None,
        "long.avi": None,
        "odd.avi": None,
        "big.avi": None,
        "grey.avi": None,
        "sub dir/vid one.avi": None,
        "vidéo_ñ.avi": None,
        "it's.avi": None,
        "no_label.avi": "empty_label",
    }
    rows = [(name, "wave") for name in expected if name != "no_label.avi"]
    rows[rows.index(("sub dir/vid one.avi", "wave"))] = ('  "sub dir\\vid one.avi" ', "wave")
    rows += [("ok.avi", "wave"), ("no_label.avi", "")]  # a duplicate row, an empty label
    write_video(root / "no_label.avi", 5)
    return write_csv(root / "meta.csv", rows), expected


@pytest.mark.slow
def test_every_awkward_row_is_cached_or_recorded(tmp_path, awkward):
    csv, expected = awkward
    out = tmp_path / "cache"
    summary = build_cache(csv, out, ExtractConfig(**FAST))
    cache = open_cache(out)
    failures = {r["recording_id"]: r for r in read_failures(out).values()}
    ids = cache.recordings["recording_id"]
    for video_id, reason in expected.items():
        if reason is None:
            assert video_id in ids, video_id
            assert video_id not in failures
        else:
            assert video_id not in ids, video_id
            assert failures[video_id]["reason"] in np.atleast_1d(reason), failures[video_id]
            assert failures[video_id]["message"]
    assert summary.duplicate_rows == 1 and summary.ok
    assert verify_cache(out).problems == []
    assert (cache.recordings["clip_count"] >= 1).all()  # the one-frame video keeps a clip
    assert cache.manifest["recordings"] == len(ids) == sum(v is None for v in expected.values())
    assert 1920 in cache.recordings["width"]
    long = list(ids).index("long.avi")  # 300 frames, stride 64: 0, 64, ..., 256, and 284
    offset, count = cache.recordings["clip_offset"][long], cache.recordings["clip_count"][long]
    assert cache.clip_start[offset : offset + count].tolist() == [0, 64, 128, 192, 256, 284]


@pytest.mark.slow
def test_rerun_resumes_and_skips_done_and_failed(tmp_path, awkward):
    csv, expected = awkward
    out = tmp_path / "cache"
    build_cache(csv, out, ExtractConfig(**FAST))
    manifest_before = (out / "manifest.json").read_text()
    again = build_cache(csv, out, ExtractConfig(**FAST))
    assert again.cached == 0 and sum(again.failed.values()) == 0
    assert again.skipped == len(expected)
    assert (out / "manifest.json").read_text() == manifest_before
    retried = build_cache(csv, out, ExtractConfig(**FAST, retry_failed=True))
    assert sum(retried.failed.values()) == sum(r is not None for r in expected.values())
    assert retried.cached == 0


def test_a_video_changed_since_caching_is_reported(tmp_path, caplog):
    video = write_video(tmp_path / "v.avi", 10)
    csv = write_csv(tmp_path / "meta.csv", [("v.avi", "wave")])
    build_cache(csv, tmp_path / "cache", ExtractConfig(**FAST))
    write_video(video, 12, seed=5)
    again = build_cache(csv, tmp_path / "cache", ExtractConfig(**FAST))
    assert again.skipped == 1 and again.changed == 1 and again.cached == 0
    assert "v.avi changed since it was cached" in caplog.text


def test_changed_extractor_settings_are_refused(tmp_path, synth_csv):
    out = tmp_path / "cache"
    shutil.copytree(synth_csv.parent, tmp_path / "videos")
    csv = write_csv(tmp_path / "one.csv", [("videos/Shake_Hand/shake_hand_000.avi", "shake")])
    build_cache(csv, out, ExtractConfig(**FAST))
    with pytest.raises(CacheError, match="differs in: clip_stride"):
        build_cache(csv, out, ExtractConfig(**{**FAST, "clip_stride": 32}))
    assert build_cache(csv, out, ExtractConfig(**FAST)).skipped == 1  # not left locked


def test_second_writer_is_refused(small_cache):
    manifest = open_cache(small_cache).manifest
    with CacheWriter(
        small_cache, ExtractorRecord(manifest["extractor"], 4096), dtype="float16", shard_size=4
    ):
        with pytest.raises(CacheError, match="being written by another process"):
            CacheWriter(
                small_cache,
                ExtractorRecord(manifest["extractor"], 4096),
                dtype="float16",
                shard_size=4,
            )


def test_csv_problems_stop_before_any_work(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\na.avi,x\n")
    with pytest.raises(
        MetaError, match=r"no column 'file_path', 'action'.*found \['path', 'label'\]"
    ):
        build_cache(bad, tmp_path / "out", ExtractConfig(**FAST))
    empty = tmp_path / "empty.csv"
    empty.write_text("file_path,action\n")
    with pytest.raises(MetaError, match="no rows"):
        read_meta(empty)
    assert not (tmp_path / "out").exists()


def test_weights_are_required(tmp_path, synth_csv):
    with pytest.raises(ConfigError, match="--weights FILE.h5 or --random-weights"):
        build_cache(synth_csv, tmp_path / "out", ExtractConfig())


def test_csv_paths_are_cleaned_and_other_columns_kept(tmp_path):
    csv = tmp_path / "meta.csv"
    csv.write_text('file_path,action,group,subject\n" a\\b c.avi ", click ,g1,anna\n')
    (row,) = read_meta(csv)
    assert row.recording_id == "a/b c.avi" and row.label == "click" and row.group == "g1"
    assert row.path == tmp_path / "a" / "b c.avi" and row.extra == {"subject": "anna"}
    (rooted,) = read_meta(csv, video_root="/data")
    assert rooted.path == Path("/data/a/b c.avi")


@pytest.mark.slow
def test_partitions_merge_into_the_whole(tmp_path, synth_csv, small_cache):
    parts = []
    for index in range(2):
        config = ExtractConfig(
            random_weights=0, clip_stride=32, num_parts=2, part_index=index, shard_size=3
        )
        build_cache(synth_csv, tmp_path / f"part{index}", config)
        parts.append(tmp_path / f"part{index}")
    sizes = [open_cache(p).manifest["recordings"] for p in parts]
    assert sum(sizes) == 8 and 0 < sizes[0] < 8
    merge_caches(parts, tmp_path / "merged")
    merged, whole = open_cache(tmp_path / "merged"), open_cache(small_cache)
    assert verify_cache(tmp_path / "merged").problems == []
    assert merged.fingerprint == whole.fingerprint
    assert merged.content_digest == whole.content_digest
    for recording_id in whole.recordings["recording_id"]:
        np.testing.assert_allclose(
            clips_of(merged, recording_id), clips_of(whole, recording_id), atol=2e-3, rtol=1e-2
        )


@pytest.mark.slow
def test_features_beyond_float16_are_refused_or_kept_as_float32(tmp_path, synth_csv):
    model = build_c3d()
    randomize_weights(model, seed=7)
    kernel = model.get_layer("fc7").kernel
    kernel.assign(kernel.numpy() * 1e6)
    weights = save_keras2_weights(model, tmp_path / "huge.h5")
    csv = write_csv(
        tmp_path / "one.csv",
        [(str(synth_csv.parent / "Shake_Hand" / "shake_hand_000.avi"), "shake")],
    )
    config = ExtractConfig(weights=str(weights), clip_stride=64)
    summary = build_cache(csv, tmp_path / "f16", config)
    assert summary.failed == {"float16_overflow": 1} and not summary.ok
    stored = build_cache(
        csv, tmp_path / "f32", ExtractConfig(weights=str(weights), clip_stride=64, dtype="float32")
    )
    assert stored.cached == 1
    features = open_cache(tmp_path / "f32").features
    assert features.dtype == np.float32 and np.abs(features).max() > 65504
    assert np.isfinite(features).all()


@pytest.fixture(scope="module")
def one_video(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("one")
    write_video(root / "v.avi", 12, 96, 72)
    return write_csv(root / "meta.csv", [("v.avi", "wave")])


@pytest.mark.parametrize(
    "options",
    [
        {"preprocess": "reference", "pool5_pad": "symmetric", "layer": "fc6", "dtype": "float32"},
        {"sampling": "uniform", "frames": 16},
        {"sampling": "pad", "pad": "zero", "frames": 32, "clip_stride": 8},
        {"precision": "mixed_bfloat16"},
    ],
)
def test_every_extractor_option_is_recorded_and_runs(tmp_path, one_video, options):
    shared = {f.name for f in fields(ExtractConfig)}
    own = {k: v for k, v in options.items() if k not in shared}
    config = ExtractConfig(
        **{**FAST, **{k: v for k, v in options.items() if k in shared}}, options=own
    )
    build_cache(one_video, tmp_path / "c", config)
    cache = open_cache(tmp_path / "c")
    extractor = cache.manifest["extractor"]
    for key, value in options.items():
        recorded = (
            extractor["preprocessing"]["name"]
            if key == "preprocess"
            else (cache.manifest["dtype"] if key == "dtype" else extractor[key])
        )
        assert recorded == value, key
    assert np.isfinite(cache.features.astype(np.float32)).all()
    assert cache.features.any()


def test_pad_zero_marks_fewer_valid_clips_than_it_pads(tmp_path, one_video):
    build_cache(
        one_video,
        tmp_path / "c",
        ExtractConfig(random_weights=0, sampling="pad", frames=32, clip_stride=8, pad="zero"),
    )
    # 12 frames centred in 32 sit at 10..21: only the clip starting at 8 holds 8 real frames
    assert open_cache(tmp_path / "c").clip_valid.tolist() == [False, True, False]
