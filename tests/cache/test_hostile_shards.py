"""A shard whose features are another local file's bytes (HDF5 external storage) passes no
reader: verify, opening, streaming, export-features all refuse it by name."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from gesture_cache.cache.manifest import read_manifest
from gesture_cache.cache.reader import open_cache
from gesture_cache.cache.verify import verify_cache
from gesture_cache.cli.main import main
from gesture_cache.common.errors import GestureCacheError
from gesture_cache.common.files import file_sha256
from tests.helpers import write_cache


def hostile_cache(folder, secret):
    """A consistent cache (hashes fixed up) whose first shard reads `secret` as features."""
    cache = write_cache(folder, [(f"r{i}", "ab"[i % 2], "", "") for i in range(4)], dim=8)
    manifest = read_manifest(cache)
    shard = cache / manifest["shards"][0]["file"]
    with h5py.File(shard, "a") as f:
        shape, dtype = f["features"].shape, f["features"].dtype
        del f["features"]
        size = int(np.prod(shape)) * dtype.itemsize
        secret.write_bytes((b"aws_secret_access_key=do-not-read-me " * 100)[:size])
        f.create_dataset("features", shape, dtype, external=[(str(secret), 0, size)])
    manifest["shards"][0]["sha256"] = file_sha256(shard)
    (cache / "manifest.json").write_text(json.dumps(manifest))
    return cache


def test_a_shard_reading_another_file_is_refused_everywhere(tmp_path, capsys):
    cache = hostile_cache(tmp_path / "cache", tmp_path / "credentials")
    problems = verify_cache(cache).problems
    assert len(problems) == 1 and "keeps its values in another file" in problems[0]
    with pytest.raises(GestureCacheError, match="another file"):
        open_cache(cache)
    out = tmp_path / "parquet"
    assert main(["export-features", str(cache), "--format", "parquet", "--out", str(out)]) != 0
    assert "another file" in capsys.readouterr().err and not out.exists()
