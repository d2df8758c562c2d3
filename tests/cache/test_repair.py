"""`repair`: a damaged cache made consistent, every intact recording kept, damaged shards
set aside, a lost manifest rebuilt from the shards."""

from __future__ import annotations

import json
import shutil

import h5py

from gesture_cache import open_cache
from gesture_cache.cache.manifest import read_manifest
from gesture_cache.cache.repair import repair_cache
from gesture_cache.cache.verify import verify_cache
from gesture_cache.cli.main import main
from tests.helpers import write_cache


def test_repair_keeps_every_intact_video(copy):
    manifest = read_manifest(copy)
    # a video in two shards (as a Ctrl-C inside a manifest write once left it) ...
    with h5py.File(copy / "part-00000.h5") as f:
        first_id = f["recording_id"].asstr()[0]
    shutil.copy(copy / "part-00000.h5", copy / "part-00005.h5")
    manifest["shards"].append({**manifest["shards"][0], "file": "part-00005.h5"})
    # ... and a corrupt shard
    data = bytearray((copy / "part-00001.h5").read_bytes())
    data[-5000] ^= 0xFF
    (copy / "part-00001.h5").write_bytes(bytes(data))
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert verify_cache(copy).problems
    lost = manifest["shards"][1]["recordings"]

    report = repair_cache(copy)
    assert verify_cache(copy).problems == []
    cache = open_cache(copy)
    ids = list(cache.recordings["recording_id"])
    assert len(ids) == 8 - lost and ids.count(first_id) == 1
    assert any("part-00001.h5" in d for d in report.dropped)
    assert (copy / "damaged-part-00001.h5").exists()  # kept aside, never deleted


def test_repair_rebuilds_a_lost_manifest_from_the_shards(copy, capsys):
    (copy / "manifest.json").write_text('{"format": "gesture-cache", "schema')
    assert main(["repair", str(copy)]) == 0
    assert "8 recordings kept" in capsys.readouterr().out
    assert verify_cache(copy).problems == [] and open_cache(copy).manifest["recordings"] == 8


def test_repair_counts_recordings_kept_and_shards_set_aside_apart(tmp_path, capsys):

    rows = [(f"r{i}.avi", ("wave", "clap")[i % 2], "", "") for i in range(6)]
    cache = write_cache(tmp_path / "cache", rows, shard_size=2)
    (cache / "part-00001.h5").write_bytes(b"not a shard any more")
    assert main(["repair", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "4 recordings kept; 1 damaged shard set aside as damaged-part-00001.h5" in out
    assert "(2 recordings listed in them)" in out
