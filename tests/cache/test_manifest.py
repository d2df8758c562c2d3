"""The manifest is checked field by field at open: what readers use is there, by name."""

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
