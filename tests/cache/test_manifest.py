"""The manifest is checked field by field at open: what readers use is there, by name.

Faults and hostile input around the cache: links, leftovers, interrupts, full disks,
tampered manifests, merge and repair."""

from __future__ import annotations

import json

import pytest

from gesture_cache.cache.manifest import read_manifest
from gesture_cache.cli.main import main
from gesture_cache.common.errors import CacheError
from tests.helpers import write_cache


@pytest.mark.parametrize("field", ["preprocessing", "model", "clip_stride"])
def test_an_extractor_record_lacking_a_field_is_one_line_naming_it(field, tmp_path, capsys):
    cache = write_cache(tmp_path / "cache", [("r0", "a", "", ""), ("r1", "b", "", "")])
    manifest = json.loads((cache / "manifest.json").read_text())
    del manifest["extractor"][field]
    (cache / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CacheError, match=f"extractor.{field}"):
        read_manifest(cache)
    assert main(["info", str(cache)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"extractor.{field}' is missing" in err


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda m: m.pop("shards"), "'shards'"),
        (lambda m: m.update(recordings="8"), "'recordings'"),
        (lambda m: m["shards"][0].pop("sha256"), "'sha256'"),
        (lambda m: m.update(feature_dim=[4096]), "'feature_dim'"),
        (lambda m: m["extractor"].update(weights=None), "extractor.weights"),
        (lambda m: m.update(class_counts={"x": "2"}), "class_counts"),
    ],
)
def test_every_command_names_a_bad_manifest_field(copy, tmp_path, capsys, edit, field):
    manifest = json.loads((copy / "manifest.json").read_text())
    edit(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    for command in (
        ["info", str(copy)],
        ["train", str(copy), "--out", str(tmp_path / "run")],
        ["merge", str(copy), "--out", str(tmp_path / "m")],
    ):
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert field in err and "Traceback" not in err, (command, err)
    assert main(["verify", str(copy)]) == 1
    assert field in capsys.readouterr().out
