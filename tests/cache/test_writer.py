"""The writer: crash-safe shards and manifest, leftovers adopted or refused, links never
followed, a full disk one message."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gesture_cache import open_cache
from gesture_cache.cache import writer as writer_module
from gesture_cache.cache.manifest import ExtractorRecord, read_failures, read_manifest
from gesture_cache.cache.verify import verify_cache
from gesture_cache.cache.writer import CacheWriter
from gesture_cache.cli.main import main
from gesture_cache.common.errors import CacheError, GestureCacheError
from gesture_cache.extract.config import ExtractConfig
from gesture_cache.extract.extraction import build_cache
from tests.helpers import one_video_csv

FAST = {"random_weights": 0, "clip_stride": 64}


def writer_for(folder: Path) -> CacheWriter:
    manifest = read_manifest(folder)
    return CacheWriter(
        folder, ExtractorRecord(manifest["extractor"], 4096), dtype="float16", shard_size=3
    )


def test_a_lock_that_is_a_link_is_never_followed(copy, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (copy / ".lock").unlink(missing_ok=True)
    (copy / ".lock").symlink_to(victim)
    with pytest.raises(CacheError, match="lock"):
        writer_for(copy)
    assert main(["merge", str(copy), "--out", str(tmp_path / "merged")]) == 0
    assert victim.read_text() == "precious"


@pytest.mark.parametrize("name", ["part-00000.h5", "manifest.json", "failures.jsonl"])
def test_cache_files_linking_out_of_the_folder_are_refused(copy, tmp_path, name):
    outside = tmp_path / f"outside-{name}"
    target = copy / name
    if target.exists():
        shutil.move(target, outside)
    else:
        outside.write_text('{"video_id": "x", "reason": "r"}\n')
    target.symlink_to(outside)
    assert verify_cache(copy).problems or name == "failures.jsonl"
    with pytest.raises(GestureCacheError, match="outside"):
        open_cache(copy) if name != "failures.jsonl" else read_failures(copy)


def test_a_planted_temporary_link_is_replaced_not_followed(copy, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (copy / ".manifest.json.tmp").symlink_to(victim)
    with writer_for(copy) as writer:
        writer.write_failures()
    writer_module.write_manifest(copy, read_manifest(copy))
    assert victim.read_text() == "precious" and verify_cache(copy).problems == []


def test_files_that_are_not_ours_stop_the_writer_and_are_kept(copy):
    (copy / "notes.tmp").write_text("mine")
    with pytest.raises(CacheError, match="notes.tmp is not a file this tool wrote"):
        writer_for(copy)
    assert (copy / "notes.tmp").read_text() == "mine"
    (copy / "notes.tmp").unlink()
    (copy / "part-00007.h5").write_bytes(b"a file someone copied here")
    with pytest.raises(CacheError, match="cannot be adopted.*repair"):
        writer_for(copy)
    assert (copy / "part-00007.h5").exists()


@pytest.mark.slow
def test_ctrl_c_inside_a_manifest_write_leaves_no_video_twice(tmp_path, monkeypatch):
    """Ctrl-C lands after the new manifest is on disk but before the writer knows it."""
    csv = one_video_csv(tmp_path, n=3)
    out = tmp_path / "cache"
    real_write = writer_module.write_manifest
    calls = []

    def write_then_interrupt(folder, manifest):
        real_write(folder, manifest)
        calls.append(manifest["recordings"])
        if len(calls) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(writer_module, "write_manifest", write_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        build_cache(csv, out, ExtractConfig(**FAST, shard_size=2))
    monkeypatch.undo()
    assert verify_cache(out).problems == []
    build_cache(csv, out, ExtractConfig(**FAST, shard_size=2))
    cache = open_cache(out)
    assert sorted(cache.recordings["recording_id"]) == ["v0.avi", "v1.avi", "v2.avi"]
    assert verify_cache(out).problems == []


@pytest.mark.slow
def test_a_file_size_limit_is_a_message_not_a_crash(tmp_path):
    """RLIMIT_FSIZE makes every write past the limit fail (EFBIG), like a full disk."""
    csv = one_video_csv(tmp_path, n=2)
    out = tmp_path / "cache"
    command = [sys.executable, "-m", "gesture_cache.cli", "extract", str(csv), "--out", str(out)]
    command += ["--random-weights", "0", "--clip-stride", "64"]

    def limit_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, resource.RLIM_INFINITY))

    failed = subprocess.run(command, preexec_fn=limit_files, capture_output=True, text=True)
    assert failed.returncode == 2, failed.stderr[-2000:]
    assert "cannot write" in failed.stderr and "Traceback" not in failed.stderr
    assert not list(out.glob("part-*.h5"))
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert open_cache(out).manifest["recordings"] == 2


def test_a_writer_adopts_what_a_kill_left_named(copy):
    manifest = read_manifest(copy)
    manifest["shards"].pop()
    os.remove(copy / "manifest.json")
    with writer_for_extractor(copy, manifest) as writer:
        assert len(writer.done) == 8
    assert verify_cache(copy).problems == []


def writer_for_extractor(folder: Path, manifest: dict) -> CacheWriter:
    return CacheWriter(
        folder, ExtractorRecord(manifest["extractor"], 4096), dtype="float16", shard_size=3
    )


def test_failures_cut_short_by_a_kill_are_skipped(copy):
    (copy / "failures.jsonl").write_text('{"video_id": "a", "reason": "missing"}\n{"video_')
    assert list(read_failures(copy)) == ["a"]
    assert np.all(open_cache(copy).clip_valid)
