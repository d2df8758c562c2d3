"""Faults and hostile input around the cache: links, leftovers, interrupts, full disks,
tampered manifests, merge and repair."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from gesture_cache import open_cache
from gesture_cache.cache import writer as writer_module
from gesture_cache.cache.manifest import ExtractorRecord, read_failures, read_manifest
from gesture_cache.cache.repair import repair_cache
from gesture_cache.cache.verify import load_verified_cache, verify_cache
from gesture_cache.cache.writer import CacheWriter
from gesture_cache.cli.main import main
from gesture_cache.common.errors import CacheError, GestureCacheError
from gesture_cache.extract.config import ExtractConfig
from gesture_cache.extract.extraction import build_cache
from tests.helpers import write_cache, write_video

FAST = {"random_weights": 0, "clip_stride": 64}


@pytest.fixture
def copy(small_cache, tmp_path) -> Path:
    target = tmp_path / "cache"
    shutil.copytree(small_cache, target)
    return target


def writer_for(folder: Path) -> CacheWriter:
    manifest = read_manifest(folder)
    return CacheWriter(
        folder, ExtractorRecord(manifest["extractor"], 4096), dtype="float16", shard_size=3
    )


def failure_of(cache: Path, recording_id: str) -> dict:
    (record,) = [r for r in read_failures(cache).values() if r["recording_id"] == recording_id]
    return record


def one_video_csv(tmp_path: Path, n: int = 1, label: str = "wave") -> Path:
    lines = ["file_path,action"]
    for i in range(n):
        write_video(tmp_path / f"v{i}.avi", 10, seed=i)
        lines.append(f"v{i}.avi,{label}")
    csv = tmp_path / "meta.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv


# --- damage a verification stamp must not hide ------------------------------------------


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


# --- links --------------------------------------------------------------------------


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


# --- leftovers, interrupts, the disk ----------------------------------------------------


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


def test_tqdm_disabled_extraction_works(tmp_path, monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    summary = build_cache(one_video_csv(tmp_path), tmp_path / "c", ExtractConfig(**FAST))
    assert summary.cached == 1


def test_many_missing_files_fail_fast_without_building_c3d(tmp_path, monkeypatch):
    rows = "".join(f"gone_{i}.avi,wave\n" for i in range(500))
    (tmp_path / "meta.csv").write_text("file_path,action\n" + rows)

    def no_model(*args, **kwargs):
        raise AssertionError("C3D was built although no video decodes")

    monkeypatch.setattr("gesture_cache.backbones.c3d.backbone.build_c3d", no_model)
    summary = build_cache(tmp_path / "meta.csv", tmp_path / "c", ExtractConfig(**FAST))
    assert summary.failed["missing"] == 500 and not summary.ok
    assert len(read_failures(tmp_path / "c")) == 500
    assert len((tmp_path / "c" / "failures.jsonl").read_text().splitlines()) == 500


# --- rows -----------------------------------------------------------------------------


def test_a_nul_byte_fails_its_row_only(tmp_path):
    csv = one_video_csv(tmp_path, n=2)
    csv.write_text(csv.read_text().replace("v1.avi,wave", "v1.avi,wa\0ve"))
    out = tmp_path / "c"
    summary = build_cache(csv, out, ExtractConfig(**FAST))
    assert summary.cached == 1 and failure_of(out, "v1.avi")["reason"] == "bad_row"
    assert "NUL" in failure_of(out, "v1.avi")["message"]
    assert build_cache(csv, out, ExtractConfig(**FAST)).skipped == 2


def test_a_column_name_with_a_slash_is_refused_up_front(tmp_path, capsys):
    csv = one_video_csv(tmp_path)
    csv.write_text(csv.read_text().replace("file_path,action", "file_path,action,a/b", 1))
    code = main(["extract", str(csv), "--out", str(tmp_path / "c"), "--random-weights", "0"])
    assert code == 2 and "column name 'a/b'" in capsys.readouterr().err


def test_a_label_fixed_in_the_csv_is_reported(tmp_path, caplog):
    csv = one_video_csv(tmp_path)
    build_cache(csv, tmp_path / "c", ExtractConfig(**FAST))
    csv.write_text(csv.read_text().replace(",wave", ",click"))
    again = build_cache(csv, tmp_path / "c", ExtractConfig(**FAST))
    assert again.relabelled == 1 and "'click' [0, 10] is not in the cache" in caplog.text


def test_a_file_replaced_while_decoded_is_a_failure(tmp_path, monkeypatch):
    from gesture_cache.extract.extractor import Extractor

    real_clips = Extractor.clips

    def clips_then_replace(self, frames):
        yield from real_clips(self, frames)
        with open(frames.path, "ab") as f:
            f.write(b"appended while decoding")

    monkeypatch.setattr(Extractor, "clips", clips_then_replace)
    out = tmp_path / "c"
    summary = build_cache(one_video_csv(tmp_path), out, ExtractConfig(**FAST))
    assert summary.cached == 0
    assert failure_of(out, "v0.avi")["reason"] == "changed_while_reading"


def test_trailing_commas_do_not_shift_columns(tmp_path):
    csv = one_video_csv(tmp_path, n=2)
    csv.write_text(csv.read_text().replace("wave\n", "wave,\n"))
    assert build_cache(csv, tmp_path / "c", ExtractConfig(**FAST)).cached == 2


# --- tampered manifests and shards --------------------------------------------------------


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


# --- merge and repair -------------------------------------------------------------------


def test_merge_checks_everything_before_writing(tmp_path, small_cache, capsys):
    out = tmp_path / "merged"
    assert main(["merge", str(small_cache), str(small_cache), "--out", str(out)]) == 2
    assert "is in both" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".merged*"))
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(["merge", str(small_cache), "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err and (out / "keep.txt").exists()


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


def test_a_rerun_does_not_rehash_unchanged_files(tmp_path, monkeypatch):
    csv = one_video_csv(tmp_path, n=2)
    build_cache(csv, tmp_path / "c", ExtractConfig(**FAST))

    def no_hashing(path):
        raise AssertionError(f"{path} was hashed although its size and time are unchanged")

    monkeypatch.setattr("gesture_cache.extract.extraction.source_sha256", no_hashing)
    assert build_cache(csv, tmp_path / "c", ExtractConfig(**FAST)).skipped == 2
