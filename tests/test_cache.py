from __future__ import annotations

import json
import shutil
import subprocess

import h5py
import numpy as np
import pytest

from gesture_cache import CacheError, open_cache
from gesture_cache.cache import read_manifest, verify_cache
from gesture_cache.cli import main
from gesture_cache.video import file_sha256


@pytest.fixture
def copy(small_cache, tmp_path):
    target = tmp_path / "cache"
    shutil.copytree(small_cache, target)
    return target


def test_open_cache_returns_arrays(small_cache):
    cache = open_cache(small_cache)
    assert cache.features.shape == (8, 1, 4096) and cache.features.dtype == np.float16
    assert cache.mask.shape == (8, 1) and cache.mask.all()
    assert sorted(set(cache.labels)) == cache.classes
    assert len(set(cache.video_ids)) == 8 and cache.random_weights
    assert (cache.features == 0).mean() > 0.2  # fc7 is a ReLU output


def test_manifest_describes_the_extractor(small_cache):
    manifest = read_manifest(small_cache)
    extractor = manifest["extractor"]
    assert extractor["weights"] == {"random_seed": 0}
    assert extractor["preprocessing"]["mean_bgr"] == [90.25, 97.66, 101.41]
    assert extractor["preprocessing"]["crop"] == [8, 120, 29, 141]
    assert (extractor["frames"], extractor["clip_len"], extractor["clip_stride"]) == (16, 16, 16)
    assert manifest["feature_shape"] == [1, 4096] and manifest["videos"] == 8
    assert [s["videos"] for s in manifest["shards"]] == [3, 3, 2]


def test_shards_are_self_describing_and_use_stock_filters(small_cache):
    manifest = read_manifest(small_cache)
    with h5py.File(small_cache / manifest["shards"][0]["file"]) as f:
        assert f.attrs["fingerprint"] == manifest["fingerprint"]
        assert f.attrs["schema_version"] == 1
        features = f["features"]
        assert features.compression == "gzip" and features.fletcher32
        assert features.chunks == (1, 1, 4096)
        assert f["label"].asstr()[0] in manifest["classes"]


@pytest.mark.skipif(shutil.which("h5dump") is None, reason="h5dump (hdf5-tools) not installed")
def test_stock_hdf5_tools_read_a_shard(small_cache):
    shard = small_cache / read_manifest(small_cache)["shards"][0]["file"]
    out = subprocess.run(["h5dump", "-d", "/label", str(shard)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    labels = set(open_cache(small_cache).labels)
    assert any(f'"{label}"' in out.stdout for label in labels)
    checked = subprocess.run(
        ["h5dump", "-d", "/features", "-c", "1,1,8", str(shard)], capture_output=True, text=True
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
    assert main(["info", str(copy)]) == 2
    assert "corrupt" in capsys.readouterr().err


def test_shard_name_leaving_the_folder_is_refused(copy):
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["shards"][0]["file"] = "../part-00000.h5"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CacheError, match="leaves the folder"):
        open_cache(copy)
    assert "leaves the folder" in verify_cache(copy).problems[0]


def test_unknown_schema_version_is_refused(copy):
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["schema_version"] = 2
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CacheError, match="schema_version 2"):
        open_cache(copy)
    assert main(["verify", str(copy)]) == 1


def test_verify_finds_duplicates_and_bad_values(copy):
    """A shard rewritten consistently (hash updated) but holding a repeated video and inf."""
    manifest = json.loads((copy / "manifest.json").read_text())
    shard = copy / manifest["shards"][1]["file"]
    with h5py.File(shard, "r+") as f:
        with h5py.File(copy / manifest["shards"][0]["file"]) as g:
            f["video_id"][0] = g["video_id"][0]
        features = f["features"][()]
        features[0, 0, 0] = np.inf
        f["features"][...] = features
    manifest["shards"][1]["sha256"] = file_sha256(shard)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    problems = verify_cache(copy).problems
    assert any("is in part-00000.h5 and part-00001.h5" in p for p in problems)
    assert any("inf or NaN" in p for p in problems)
