"""`merge`: everything checked before anything is written, one line for a link, staging
folders of this process only, the differing extractor field named."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gesture_cache.cache.manifest import read_manifest
from gesture_cache.cli.main import main
from gesture_cache.common.errors import GestureCacheError
from gesture_cache.common.files import staging_folder
from tests.helpers import write_cache


def test_merge_checks_everything_before_writing(tmp_path, small_cache, capsys):
    out = tmp_path / "merged"
    assert main(["merge", str(small_cache), str(small_cache), "--out", str(out)]) == 2
    assert "is in both" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".merged*"))
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(["merge", str(small_cache), "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err and (out / "keep.txt").exists()


def test_merge_into_a_link_is_a_one_line_error(small_cache, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "empty")
    assert main(["merge", str(small_cache), "--out", str(tmp_path / "link")]) == 2
    err = capsys.readouterr().err
    assert "is a link" in err and err.count("\n") == 1


def test_staging_folders_are_per_process_and_a_dead_ones_are_removed(small_cache, tmp_path):
    out = tmp_path / "merged"
    first, second = staging_folder(out), staging_folder(out)
    assert first != second and first.is_dir() and second.is_dir()  # this process is alive
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = os.uname().nodename
    leftover = tmp_path / f".merged.building-{host}-{dead.pid}-abc"
    (leftover / "part-00000.h5").parent.mkdir()
    (leftover / "part-00000.h5").write_bytes(b"half")
    assert main(["merge", str(small_cache), "--out", str(out)]) == 0
    assert not leftover.exists() and first.exists()
    assert read_manifest(out)["recordings"] == read_manifest(small_cache)["recordings"]


def test_merge_names_the_field_the_extractors_differ_in(tmp_path):
    from gesture_cache.cache.merge import merge_caches
    from tests.helpers import SYNTHETIC_EXTRACTOR

    rows = [("a.avi", "wave", "", ""), ("b.avi", "clap", "", "")]
    first = write_cache(tmp_path / "a", rows)
    other = write_cache(tmp_path / "b", [("c.avi", "wave", "", "")],
                        extractor={**SYNTHETIC_EXTRACTOR, "clip_stride": 4})  # fmt: skip
    with pytest.raises(GestureCacheError, match="differs in: clip_stride"):
        merge_caches([first, other], tmp_path / "merged")
