"""`extract --engine ray` on a local Ray instance (2 CPUs here): the cache equals a local
run's, and a killed worker or driver loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from gesture_cache.cache.manifest import read_manifest
from gesture_cache.cli.main import main
from gesture_cache.extract.config import ExtractConfig
from gesture_cache.extract.extraction import build_cache
from tests.helpers import assert_same_cache, write_video

SETTINGS = {"random_weights": 0, "clip_stride": 32}


@pytest.fixture(scope="module")
def mixed_csv(tmp_path_factory, synth_csv) -> Path:
    """The 8 synthetic videos plus a missing file, a text file and a truncated video (cached:
    it decodes 23 of 40 frames)."""
    root = tmp_path_factory.mktemp("mixed")
    table = pd.read_csv(synth_csv)
    table["file_path"] = [str(synth_csv.parent / p) for p in table.file_path]
    (root / "text.mp4").write_text("not a video\n" * 50)
    full = write_video(root / "full.avi", 40, seed=3).read_bytes()
    (root / "truncated.avi").write_bytes(full[: len(full) * 6 // 10])
    extra = [(str(root / n), "Shake_Hand") for n in ("missing.avi", "text.mp4", "truncated.avi")]
    table = pd.concat([table, pd.DataFrame(extra, columns=table.columns)], ignore_index=True)
    table.to_csv(root / "meta.csv", index=False)
    return root / "meta.csv"


@pytest.fixture(scope="module")
def local_cache(tmp_path_factory, mixed_csv) -> Path:
    out = tmp_path_factory.mktemp("local") / "cache"
    build_cache(mixed_csv, out, ExtractConfig(**SETTINGS, shard_size=4))
    return out


def extract_on_ray(csv: Path, out: Path, *extra: str) -> list[str]:
    command = [sys.executable, "-m", "gesture_cache.cli", "extract", str(csv), "--out", str(out)]
    command += ["--random-weights", "0", "--clip-stride", "32", "--engine", "ray", *extra]
    return command


def wait_for(condition, process: subprocess.Popen, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the extraction ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def recordings_listed(cache: Path) -> int:
    try:
        return read_manifest(cache)["recordings"]
    except Exception:  # noqa: BLE001 - not written yet
        return 0


def ray_worker_pids(title: bytes) -> list[int]:
    """Ray workers whose process title (ray::...) holds `title`."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and title in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


@pytest.mark.slow
def test_a_killed_backbone_worker_is_replaced_and_nothing_is_lost(mixed_csv, local_cache, tmp_path):
    out = tmp_path / "cache"
    command = extract_on_ray(mixed_csv, out, "--shard-size", "1", "--batch-clips", "2")
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        wait_for(lambda: recordings_listed(out) >= 1, process, "the first recording was stored")
        actors = ray_worker_pids(b"BackboneActor")
        assert actors, "no backbone actor process found"
        for pid in actors:
            os.kill(pid, signal.SIGKILL)  # mid-run: its batch is lost with it
        stdout, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, stderr[-3000:]
    assert_same_cache(out, local_cache)


@pytest.mark.slow
def test_a_killed_decode_worker_is_retried(tmp_path):
    rows = []
    for i in range(2):  # long enough to be caught decoding
        write_video(tmp_path / f"long{i}.avi", 400, 160, 120, seed=i)
        rows.append((f"long{i}.avi", ["clap", "wave"][i]))
    csv = tmp_path / "meta.csv"
    pd.DataFrame(rows, columns=["file_path", "action"]).to_csv(csv, index=False)
    local = tmp_path / "local"
    build_cache(csv, local, ExtractConfig(**SETTINGS))
    out = tmp_path / "cache"
    process = subprocess.Popen(
        extract_on_ray(csv, out, "--batch-clips", "2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for(lambda: ray_worker_pids(b"ray::FlatMap"), process, "a decode task ran")
        for pid in ray_worker_pids(b"ray::FlatMap"):
            os.kill(pid, signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, stderr[-3000:]
    assert "worker died" in stdout + stderr  # Ray saw it (and retried the task)
    assert_same_cache(out, local, failures=0)


@pytest.mark.slow
def test_a_run_whose_driver_died_resumes_without_extracting_twice(mixed_csv, local_cache, tmp_path):
    out = tmp_path / "cache"
    command = extract_on_ray(mixed_csv, out, "--shard-size", "1", "--batch-clips", "2")
    first = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the driver and the Ray instance it started
    )
    try:
        wait_for(lambda: recordings_listed(out) >= 2, first, "two recordings were stored")
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the whole machine's job, at once
        first.wait()
    stored = recordings_listed(out)
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    cached_now = int(again.stdout.split(" cached,")[0].rsplit(" ", 1)[-1])
    assert cached_now == 9 - stored  # the stored ones were skipped, not extracted again
    assert_same_cache(out, local_cache)


@pytest.mark.slow
def test_ray_extraction_equals_a_local_run(mixed_csv, local_cache, tmp_path):
    out = tmp_path / "cache"
    done = subprocess.run(extract_on_ray(mixed_csv, out), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_cache(out, local_cache)


def test_an_unreachable_cluster_is_one_line_and_writes_nothing(synth_csv, tmp_path, capsys):
    out = tmp_path / "cache"
    args = ["extract", str(synth_csv), "--out", str(out), "--random-weights", "0"]
    assert main([*args, "--engine", "ray", "--address", "127.0.0.1:1"]) == 2
    assert "cannot reach the Ray cluster" in capsys.readouterr().err
    assert main([*args, "--actors", "2"]) == 2
    assert "--engine ray" in capsys.readouterr().err
    assert main([*args, "--engine", "ray", "--actors", "0"]) == 2
    assert "--actors 0: give at least 1" in capsys.readouterr().err
    assert not out.exists()


def test_a_worker_with_other_weights_refuses_to_start(weights_file):
    from gesture_cache.common.errors import ConfigError
    from gesture_cache.extract.extractor import extractor_from_config
    from gesture_cache.extract.ray_engine import BackboneActor

    config = ExtractConfig(weights=str(weights_file))
    spec = extractor_from_config(config).spec
    BackboneActor(config, spec)  # the same file: fine
    other = {**spec, "weights": {"sha256": "0" * 64}}  # the driver hashed another file
    with pytest.raises(ConfigError, match="same files at the same paths"):
        BackboneActor(config, other)
