"""Opening a cache: clips, recordings and segments in memory; shards that stock HDF5 tools
read; damage, links and unknown schemas refused."""

from __future__ import annotations

import json
import shutil
import subprocess

import h5py
import numpy as np
import pytest

from gesture_cache import CacheError, open_cache
from gesture_cache.cache.manifest import read_manifest
from gesture_cache.cache.verify import verify_cache
from gesture_cache.cli.main import main
from gesture_cache.common.files import file_sha256
from gesture_cache.extract.extractor import FEATURES_VERSION


def test_open_cache_returns_clips_recordings_and_segments(small_cache):
    cache = open_cache(small_cache)
    clips = cache.manifest["clips"]
    assert cache.features.shape == (clips, 4096) and cache.features.dtype == np.float16
    assert cache.clip_valid.shape == (clips,) and cache.clip_valid.all()
    recordings = cache.recordings
    assert len(set(recordings["recording_id"])) == 8 and cache.random_weights
    assert recordings["clip_count"].sum() == clips and (recordings["clip_count"] >= 2).all()
    for i in range(8):  # dense clips every 32 frames, plus the last 16 frames
        offset, count = recordings["clip_offset"][i], recordings["clip_count"][i]
        starts = cache.clip_start[offset : offset + count].tolist()
        n = int(recordings["n_frames"][i])
        expected = list(range(0, n - 16 + 1, 32))
        assert starts == expected + ([n - 16] if expected[-1] != n - 16 else [])
    segments = cache.segments
    assert sorted(set(segments["label"])) == cache.classes and len(segments["label"]) == 8
    assert (segments["start_frame"] == 0).all()
    assert (segments["end_frame"] == recordings["n_frames"]).all()  # one whole video each
    assert (cache.features == 0).mean() > 0.2  # fc7 is a ReLU output


def test_manifest_describes_the_extractor(small_cache):
    manifest = read_manifest(small_cache)
    extractor = manifest["extractor"]
    assert extractor["weights"] == {"random_seed": 0}
    assert extractor["preprocessing"]["mean_bgr"] == [90.25, 97.66, 101.41]
    assert extractor["preprocessing"]["crop"] == [8, 120, 29, 141]
    assert (extractor["sampling"], extractor["clip_len"], extractor["clip_stride"]) == (
        "dense",
        16,
        32,
    )
    assert "frames" not in extractor and extractor["features_version"] == FEATURES_VERSION
    assert manifest["feature_dim"] == 4096 and manifest["recordings"] == 8
    assert [s["recordings"] for s in manifest["shards"]] == [3, 3, 2]
    assert sum(s["clips"] for s in manifest["shards"]) == manifest["clips"]


def test_shards_are_self_describing_and_use_stock_filters(small_cache):
    manifest = read_manifest(small_cache)
    with h5py.File(small_cache / manifest["shards"][0]["file"]) as f:
        assert f.attrs["fingerprint"] == manifest["fingerprint"]
        assert f.attrs["schema_version"] == 2
        assert json.loads(f.attrs["extractor"]) == manifest["extractor"]
        features = f["features"]
        assert features.compression == "gzip" and features.fletcher32
        assert features.chunks[1] == 4096
        assert f["segments/label"].asstr()[0] in manifest["classes"]


@pytest.mark.skipif(shutil.which("h5dump") is None, reason="h5dump (hdf5-tools) not installed")
def test_stock_hdf5_tools_read_a_shard(small_cache):
    shard = small_cache / read_manifest(small_cache)["shards"][0]["file"]
    command = ["h5dump", "-d", "/segments/label", str(shard)]
    out = subprocess.run(command, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    labels = set(open_cache(small_cache).segments["label"])
    assert any(f'"{label}"' in out.stdout for label in labels)
    checked = subprocess.run(
        ["h5dump", "-d", "/features", "-c", "1,8", str(shard)], capture_output=True, text=True
    )
    assert checked.returncode == 0 and "DATA" in checked.stdout, checked.stderr


def flip_byte(path, offset_from_end=5000):
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0xFF
    path.write_bytes(bytes(data))


def test_flipped_byte_is_refused_everywhere(copy, capsys):
    flip_byte(copy / "part-00001.h5")
    with pytest.raises(CacheError, match="part-00001.h5 is corrupt"):
        open_cache(copy)
    assert "part-00001.h5 is corrupt" in verify_cache(copy).problems[0]
    assert main(["verify", str(copy)]) == 1
    assert "corrupt" in capsys.readouterr().out
    assert main(["info", str(copy)]) == 0  # reads the manifest only: hashes are verify's job
    assert "run `gesture-cache verify`" in capsys.readouterr().out


def test_shard_name_leaving_the_folder_is_refused(copy):
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["shards"][0]["file"] = "../part-00000.h5"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CacheError, match="leaves the folder"):
        open_cache(copy)
    assert "leaves the folder" in verify_cache(copy).problems[0]


def test_unknown_schema_version_is_refused(copy):
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["schema_version"] = 3
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CacheError, match="schema_version 3"):
        open_cache(copy)
    assert main(["verify", str(copy)]) == 1


def test_verify_finds_duplicates_and_bad_values(copy):
    """A shard rewritten consistently (hash updated, by a tool that knows no table checksum)
    but holding a repeated video and inf."""
    manifest = json.loads((copy / "manifest.json").read_text())
    shard = copy / manifest["shards"][1]["file"]
    with h5py.File(shard, "r+") as f:
        del f.attrs["tables_sha256"]
        with h5py.File(copy / manifest["shards"][0]["file"]) as g:
            f["recording_id"][0] = g["recording_id"][0]
            f["segments/recording_id"][0] = g["recording_id"][0]
        features = f["features"][()]
        features[0, 0] = np.inf
        f["features"][...] = features
    manifest["shards"][1]["sha256"] = file_sha256(shard)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    problems = verify_cache(copy).problems
    assert any("is in part-00000.h5 and part-00001.h5" in p for p in problems)
    assert any("inf or NaN" in p for p in problems)
