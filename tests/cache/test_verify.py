"""`verify`: every problem found (on every core for a large cache), the stamp it leaves and
when it is trusted, damage a stamp must not hide."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from gesture_cache.cache import verify
from gesture_cache.cache.features import read_features
from gesture_cache.cache.manifest import read_manifest
from gesture_cache.cache.reader import open_cache
from gesture_cache.cache.verify import (
    PARALLEL_SHARDS,
    VERIFIED,
    last_verified,
    load_verified_cache,
    verify_cache,
)
from gesture_cache.cli.main import main
from gesture_cache.common.errors import CacheError
from gesture_cache.extract.config import ExtractConfig
from gesture_cache.extract.extraction import build_cache
from tests.helpers import write_cache, write_video


def flip_a_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_verify_on_every_core_finds_what_one_process_finds(many_shards, monkeypatch):
    assert len(read_manifest(many_shards)["shards"]) >= PARALLEL_SHARDS
    parallel = verify_cache(many_shards)
    assert parallel.problems == [] and parallel.recordings == 40
    flip_a_byte(sorted(many_shards.glob("part-*.h5"))[7])
    found = verify_cache(many_shards).problems
    monkeypatch.setattr(verify, "PARALLEL_SHARDS", 10**6)
    assert verify_cache(many_shards).problems == found
    assert len(found) == 1 and "part-00007.h5 is corrupt" in found[0]


def test_a_verified_unchanged_cache_is_not_hashed_again(many_shards, monkeypatch, caplog, capsys):
    assert main(["info", str(many_shards)]) == 0
    assert "not since it last changed" in capsys.readouterr().out
    assert main(["verify", str(many_shards)]) == 0
    assert main(["info", str(many_shards)]) == 0
    assert re.search(r"verified +\d{4}-\d\d-\d\dT.*unchanged since", capsys.readouterr().out)

    checked = []
    real_verify = verify_cache

    def counted(path, manifest=None):
        checked.append(path)
        return real_verify(path, manifest)

    monkeypatch.setattr(verify, "verify_cache", counted)
    with caplog.at_level(logging.INFO):
        load_verified_cache(many_shards, 1e9)
    assert checked == [] and "not hashed again" in caplog.text

    # a shard that changed since (here: a byte flipped, which moves its time) is checked
    flip_a_byte(sorted(many_shards.glob("part-*.h5"))[3])
    with pytest.raises(CacheError, match="part-00003.h5 is corrupt"):
        load_verified_cache(many_shards, 1e9)
    assert checked == [many_shards]
    assert last_verified(many_shards, read_manifest(many_shards)) is None


def test_a_stamp_that_cannot_be_written_costs_nothing(many_shards):
    """A cache folder where the stamp cannot be written (read-only; here its name is taken
    by a folder, which stops root too) still verifies, and is simply checked every time."""
    (many_shards / VERIFIED).mkdir()
    assert verify_cache(many_shards).problems == []
    assert (many_shards / VERIFIED).is_dir()
    assert last_verified(many_shards, read_manifest(many_shards)) is None


def test_a_copy_without_compression_holds_the_same_features_and_verifies(many_shards, tmp_path):
    """`merge --compression none` of one cache: larger shards with the same features, which
    verify, load and stream like gzip ones."""
    plain = tmp_path / "plain"
    assert main(["merge", str(many_shards), "--out", str(plain), "--compression", "none"]) == 0
    shard = plain / read_manifest(plain)["shards"][0]["file"]
    with h5py.File(shard) as f:
        assert f["features"].compression is None
    assert main(["verify", str(plain)]) == 0
    np.testing.assert_array_equal(open_cache(plain).features, open_cache(many_shards).features)
    np.testing.assert_array_equal(
        read_features(shard), open_cache(plain).features[: len(read_features(shard))]
    )
    assert (
        main(["merge", str(many_shards), "--out", str(tmp_path / "x"), "--compression", "lz4"]) == 2
    )


FAST = {"random_weights": 0, "clip_stride": 64}


def flip_byte(path: Path, offset: int) -> None:
    """One bit of the file changed in place, its size and modification time kept: what a
    disk error looks like to a reader that trusts size and time."""
    stat = path.stat()
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x01]))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def table_offset(shard: Path, table: str) -> int:
    """Where a table's values lie in the shard file (its second value, for numbers)."""
    if table == "segments/label":  # text lives on HDF5's heap: find the label itself
        return shard.read_bytes().index(b"zzclapzz") + 2
    with h5py.File(shard, "r") as f:
        dataset = f[table]
        offset = dataset.id.get_chunk_info(0).byte_offset if dataset.chunks else None
        offset = dataset.id.get_offset() if offset is None else offset
        return offset + dataset.dtype.itemsize


@pytest.mark.parametrize("table", ["clip_start", "segments/start_frame", "segments/label"])
def test_a_verified_cache_whose_tables_changed_on_disk_is_refused(tmp_path, table):
    """`verify` leaves a stamp, and training then trusts the shards' sizes and times instead
    of hashing them: every table it reads must still be checked on the way in."""
    rows = [(f"r{i}.avi", ("zzwavezz", "zzclapzz")[i % 2], "", "") for i in range(6)]
    cache = write_cache(tmp_path / "cache", rows)
    assert not verify_cache(cache).problems and (cache / "verified.json").is_file()
    load_verified_cache(cache, 1e6)  # trusted as verified
    flip_byte(cache / "part-00000.h5", table_offset(cache / "part-00000.h5", table))
    with pytest.raises(CacheError, match="part-00000.h5"):
        load_verified_cache(cache, 1e6)
    assert any("part-00000.h5" in problem for problem in verify_cache(cache).problems)


def test_verify_catches_a_manifest_claiming_real_weights(copy, capsys):
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["extractor"]["weights"] = {"sha256": "ab" * 32}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert main(["verify", str(copy)]) == 1
    assert "not the sha256 of its extractor" in capsys.readouterr().out


def test_verify_catches_wrong_class_counts(copy):
    manifest = json.loads((copy / "manifest.json").read_text())
    first = manifest["classes"][0]
    manifest["class_counts"][first] += 1
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert any("class_counts" in p for p in verify_cache(copy).problems)


def test_one_file_under_two_paths_is_reported(tmp_path, capsys):
    write_video(tmp_path / "a.avi", 10)
    shutil.copy(tmp_path / "a.avi", tmp_path / "b.avi")
    (tmp_path / "meta.csv").write_text("file_path,action\na.avi,x\nb.avi,x\n")
    build_cache(tmp_path / "meta.csv", tmp_path / "c", ExtractConfig(**FAST))
    assert main(["verify", str(tmp_path / "c")]) == 0
    assert "WARN the same file content" in capsys.readouterr().out
