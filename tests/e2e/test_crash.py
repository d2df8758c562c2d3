"""Crash safety, tested by killing real extraction processes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gesture_cache import open_cache
from gesture_cache.cache.manifest import ExtractorRecord, read_manifest
from gesture_cache.cache.verify import verify_cache
from gesture_cache.cache.writer import CacheWriter
from gesture_cache.extract.extraction import build_cache
from tests.helpers import WITH_TOY, clips_of, unlist_last_shard
from tests.toy_backbone import extract_config as toy_config

SHARD_SIZE = 2


# The toy backbone at a network's pace (50 ms a clip): each process has work to be killed
# in, without the seconds C3D takes to load.
TOY = ["--backbone", "toy", "--random-weights", "0", "--seconds-per-clip", "0.05"]


def extract_command(csv: Path, out: Path, shard_size: int = SHARD_SIZE) -> list[str]:
    command = [sys.executable, "-c", WITH_TOY, "extract", str(csv), "--out", str(out), *TOY]
    return command + ["--shard-size", str(shard_size), "--batch-clips", "1"]


def videos_listed(out: Path) -> int:
    try:
        return json.loads((out / "manifest.json").read_text())["recordings"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


@pytest.mark.slow
def test_sigkill_at_any_moment_then_rerun(tmp_path, synth_csv):
    out = tmp_path / "cache"
    rng = np.random.default_rng(0)
    kills = 0
    while kills < 4:
        before = videos_listed(out)
        process = subprocess.Popen(
            extract_command(synth_csv, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 120
        while videos_listed(out) == before and time.monotonic() < deadline:
            if process.poll() is not None:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0, 0.6))  # somewhere inside the next shard's work
        if process.poll() is not None:
            break
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
        assert verify_cache(out).problems == [], f"cache unreadable after kill {kills}"
    done_before_last_run = videos_listed(out)
    finished = subprocess.run(extract_command(synth_csv, out), capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert kills >= 2
    assert verify_cache(out).problems == []
    build_cache(synth_csv, tmp_path / "whole", toy_config())  # the same, never killed
    cache, whole = open_cache(out), open_cache(tmp_path / "whole")
    ids = cache.recordings["recording_id"]
    assert sorted(ids) == sorted(whole.recordings["recording_id"])  # every one exactly once
    assert len(set(ids)) == len(ids) and cache.manifest["clips"] == whole.manifest["clips"]
    assert "cached" in finished.stdout and f"{8 - done_before_last_run} cached" in finished.stdout
    for recording_id in ids:
        np.testing.assert_allclose(
            clips_of(cache, recording_id), clips_of(whole, recording_id), atol=2e-3, rtol=1e-2
        )


@pytest.mark.slow
def test_ctrl_c_keeps_every_recording_that_finished(tmp_path, synth_csv):
    """Shards of 100: what finished before the Ctrl-C is still in memory, waiting for the
    writer (its own thread), and must reach the disk all the same."""
    out, log = tmp_path / "cache", tmp_path / "stderr.txt"
    command = extract_command(synth_csv, out, shard_size=100)
    with log.open("w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + 120
        while "3/8" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        assert process.wait(60) != 0
    said = log.read_text()
    assert "interrupted; finished work is kept" in said
    reported = max(int(n) for n in re.findall(r"(\d)/8", said))  # tqdm's last count
    kept = videos_listed(out)
    assert 3 <= reported <= kept < 8, said[-500:]
    assert verify_cache(out).problems == []
    finished = subprocess.run(command, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert f"{8 - kept} cached" in finished.stdout and videos_listed(out) == 8


def test_leftovers_of_a_killed_writer_are_adopted_or_cleaned_on_resume(tmp_path, small_cache):
    import shutil

    out = tmp_path / "cache"
    shutil.copytree(small_cache, out)
    last = unlist_last_shard(out)  # killed between the shard's rename and the manifest
    manifest = read_manifest(out)
    (out / ".part-00009.h5.tmp").write_bytes(b"half a shard")

    with CacheWriter(
        out, ExtractorRecord(manifest["extractor"], 4096), dtype="float16", shard_size=3
    ) as writer:
        assert len(writer.done) == 8  # the named shard is adopted: its videos are done
    assert (out / last["file"]).exists() and not (out / ".part-00009.h5.tmp").exists()
    assert open_cache(out).manifest["recordings"] == 8 and verify_cache(out).problems == []


def test_lock_is_released_when_the_holder_dies(tmp_path, small_cache):
    """A SIGKILLed extraction leaves .lock behind, but not the lock itself."""
    import shutil

    out = tmp_path / "cache"
    shutil.copytree(small_cache, out)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR);"
            "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
            str(out / ".lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    from gesture_cache.common.errors import CacheError

    manifest = read_manifest(out)
    with pytest.raises(CacheError, match="being written"):
        CacheWriter(
            out, ExtractorRecord(manifest["extractor"], 4096), dtype="float16", shard_size=3
        )
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with CacheWriter(
        out, ExtractorRecord(manifest["extractor"], 4096), dtype="float16", shard_size=3
    ) as writer:
        assert len(writer.done) == 8


def train_process(cache: Path, run: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "gesture_cache.cli", "train", str(cache), "--out", str(run)]
    command += ["--epochs", "12", "--patience", "12", "--units", "4", "--dense", "0"]
    command += ["--window-clips", "2", "--batch-size", "2"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def kill_when(process: subprocess.Popen, ready, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the condition never came"
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def epochs_logged(run: Path) -> int:
    try:
        return max(len((run / "history.csv").read_text().splitlines()) - 1, 0)
    except FileNotFoundError:
        return 0


@pytest.mark.slow
def test_a_run_killed_in_its_first_epoch_or_later_resumes_and_is_listed_dead(tmp_path):
    """kill -9 while the first epoch runs (history.csv created, still empty) and after some
    epochs: `runs` lists the run as dead (no process holds it) while a live one is running
    and refuses a second trainer, and `train --resume` finishes it with every epoch once."""
    from gesture_cache.cli.main import main
    from gesture_cache.train.runs import runs_table
    from tests.helpers import write_cache

    rows = [(f"r{i:02d}.avi", ("wave", "clap")[i % 2], "", "") for i in range(16)]
    cache = write_cache(tmp_path / "cache", rows)
    for name, ready in (
        ("first", lambda run: (run / "history.csv").exists()),
        ("later", lambda run: epochs_logged(run) >= 3),
    ):
        run = tmp_path / name
        process = train_process(cache, run)
        kill_when(process, lambda run=run, ready=ready: ready(run) and (run / ".lock").exists())
        if name == "first":
            assert (run / "history.csv").read_text() == "", "killed too late to test this"
        status = runs_table(tmp_path).set_index("run")["status"]
        assert status[name] == "dead", status
        assert main(["train", "--out", str(run), "--resume"]) == 0
        history = [
            int(line.split(",")[0]) for line in (run / "history.csv").read_text().splitlines()[1:]
        ]
        assert history == list(range(len(history))) and history, history
        assert json.loads((run / "config.json").read_text())["status"] == "finished"
    live = train_process(cache, tmp_path / "live")
    try:
        kill_until = time.monotonic() + 240
        while not epochs_logged(tmp_path / "live"):
            assert live.poll() is None and time.monotonic() < kill_until
            time.sleep(0.05)
        assert runs_table(tmp_path).set_index("run")["status"]["live"] == "running"
        assert main(["train", "--out", str(tmp_path / "live"), "--resume"]) == 2
    finally:
        live.kill()
        live.wait()
