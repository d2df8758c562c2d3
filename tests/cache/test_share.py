"""Sharing a cache through object storage: push and pull against a real S3 API (moto's
server, started here on 127.0.0.1) and file:// URLs; incremental, resumable after kill -9,
verified on arrival; commands that read a cache reading a URL."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gesture_cache.cache.manifest import read_manifest
from gesture_cache.cache.pull import local_copy, pull
from gesture_cache.cache.push import push
from gesture_cache.cache.remote import redacted
from gesture_cache.cache.transfer import SIDECAR
from gesture_cache.cache.verify import verify_cache
from gesture_cache.cli.main import main
from gesture_cache.common.errors import CacheError, GestureCacheError
from tests.helpers import write_continuous_cache


@pytest.fixture(scope="module")
def shared(small_cache, tmp_path_factory) -> Path:
    """A cache of 12 shards (real writer, synthetic features)."""
    extractor = read_manifest(small_cache)["extractor"]
    ids = [f"r{i:02d}" for i in range(12)]
    folder = tmp_path_factory.mktemp("shared") / "cache"
    return write_continuous_cache(folder, extractor, ids, clips=16, shard_size=1)


def keys(client, prefix: str) -> list[str]:
    listed = client.list_objects_v2(Bucket="team", Prefix=prefix).get("Contents", [])
    return sorted(o["Key"][len(prefix) :] for o in listed)


def test_push_twice_sends_nothing_the_second_time_and_pull_gives_the_cache(s3, shared, tmp_path):
    url = "s3://team/gestures/v1"
    first = push(shared, url)
    assert (first.moved, first.kept) == (12, 0)
    again = push(shared, url)
    assert (again.moved, again.kept) == (0, 12)
    names = keys(s3, "gestures/v1/")
    assert "manifest.json" in names and sum(n.endswith(SIDECAR) for n in names) == 12
    copy = tmp_path / "copy"
    fetched = pull(url, copy)
    assert (fetched.moved, fetched.kept) == (12, 0)
    assert verify_cache(copy).recordings == 12
    assert read_manifest(copy)["fingerprint"] == read_manifest(shared)["fingerprint"]
    assert pull(url, copy).moved == 0  # up to date: nothing moves


def test_a_pull_into_a_cache_that_has_most_shards_moves_only_the_rest(s3, shared, tmp_path):
    url = "s3://team/gestures/most"
    push(shared, url)
    copy = tmp_path / "copy"
    pull(url, copy)
    manifest = read_manifest(copy)
    (copy / manifest["shards"][3]["file"]).unlink()
    (copy / manifest["shards"][5]["file"]).write_bytes(b"damaged")
    done = pull(url, copy)
    assert (done.moved, done.kept) == (2, 10)
    assert verify_cache(copy).recordings == 12


def test_an_altered_remote_shard_is_refused_and_nothing_of_it_kept(s3, shared, tmp_path):
    url = "s3://team/gestures/altered"
    push(shared, url)
    name = json.loads(s3.get_object(Bucket="team", Key="gestures/altered/manifest.json")
                      ["Body"].read())["shards"][2]["file"]  # fmt: skip
    body = s3.get_object(Bucket="team", Key=f"gestures/altered/{name}")["Body"].read()
    s3.put_object(Bucket="team", Key=f"gestures/altered/{name}", Body=body[: len(body) // 2])
    copy = tmp_path / "copy"
    with pytest.raises(CacheError, match=f"{name} does not match its manifest"):
        pull(url, copy, workers=1)
    assert not (copy / "manifest.json").exists()
    assert not (copy / name).exists() and not list(copy.glob(".*.part-*"))


def test_a_manifest_naming_a_shard_outside_its_prefix_is_refused(s3, shared, tmp_path):
    url = "s3://team/gestures/escape"
    push(shared, url)
    manifest = json.loads(s3.get_object(Bucket="team", Key="gestures/escape/manifest.json")
                          ["Body"].read())  # fmt: skip
    for bad in ("../v1/manifest.json", "/etc/passwd", "s3://other/x.h5"):
        manifest["shards"][0]["file"] = bad
        s3.put_object(Bucket="team", Key="gestures/escape/manifest.json",
                      Body=json.dumps(manifest).encode())  # fmt: skip
        with pytest.raises(GestureCacheError, match="leaves the folder"):
            pull(url, tmp_path / "copy")
        assert not (tmp_path / "copy").exists()


def test_a_missing_bucket_and_another_cache_are_one_line_each(
    s3, shared, small_cache, capsys, tmp_path
):
    extractor = read_manifest(small_cache)["extractor"]
    other = {**extractor, "clip_stride": 2 * extractor["clip_stride"]}  # another fingerprint
    small_cache = write_continuous_cache(tmp_path / "other", other, ["o1", "o2"], clips=16)
    assert main(["push", str(shared), "s3://no-such-bucket/x"]) != 0
    err = capsys.readouterr().err
    error = [line for line in err.splitlines() if "error" in line]  # (and the progress bar)
    assert len(error) == 1 and "s3://no-such-bucket/x" in error[0] and "does not exist" in error[0]
    assert "testing-secret-do-not-print" not in err
    url = "s3://team/gestures/other"
    push(shared, url)
    assert main(["push", str(small_cache), url]) != 0
    assert "holds another cache" in capsys.readouterr().err
    before = keys(s3, "gestures/other/")
    assert main(["push", str(small_cache), url, "--force"]) == 0
    after = keys(s3, "gestures/other/")
    old_shards = {name for name in before if name.endswith((".h5", SIDECAR))}
    assert old_shards and not old_shards & set(after)  # the replaced cache's shards are gone
    copy = local_copy(url, tmp_path / "copies")
    assert read_manifest(copy)["fingerprint"] == read_manifest(small_cache)["fingerprint"]


def test_a_filesystem_that_connects_as_it_opens_is_one_line_too(capsys):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main(["info", f"ftp://bob:hunter2@127.0.0.1:{port}/cache"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "hunter2" not in err, err
    assert f"ftp://127.0.0.1:{port}/cache: the storage failed (ConnectionRefusedError" in err


def test_credentials_never_reach_messages_or_urls():
    assert redacted("s3://AKIA:secret@bucket/x") == "s3://bucket/x"
    assert redacted("file:///data/cache") == "file:///data/cache"


@pytest.mark.slow
def test_a_push_killed_midway_resumes_where_it_stopped(s3, small_cache, tmp_path):
    extractor = read_manifest(small_cache)["extractor"]
    ids = [f"k{i:02d}" for i in range(30)]
    cache = write_continuous_cache(tmp_path / "big", extractor, ids, clips=400, shard_size=1)
    url = "s3://team/gestures/killed"
    program = "import sys; from gesture_cache.cli.main import main; sys.exit(main(sys.argv[1:]))"
    process = subprocess.Popen(
        [sys.executable, "-c", program, "push", str(cache), url, "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while sum(k.endswith(SIDECAR) for k in keys(s3, "gestures/killed/")) < 3:
        assert process.poll() is None and time.monotonic() < deadline, "push ended too soon"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert "manifest.json" not in keys(s3, "gestures/killed/")  # nothing readable yet
    resumed = push(cache, url)
    assert resumed.kept >= 3 and resumed.moved + resumed.kept == 30
    assert verify_cache(local_copy(url, tmp_path / "copies")).recordings == 30


@pytest.mark.slow
def test_train_and_info_read_a_cache_at_a_url_through_a_local_copy(s3, shared, tmp_path, capsys):
    url = "s3://team/gestures/train"
    push(shared, url)
    copies = tmp_path / "copies"
    assert main(["info", url, "--cache-dir", str(copies)]) == 0
    assert read_manifest(shared)["fingerprint"] in capsys.readouterr().out
    run = tmp_path / "run"
    assert main(["train", url, "--out", str(run), "--epochs", "2", "--cache-dir", str(copies),
                 "--window-clips", "4"]) == 0  # fmt: skip
    assert (run / "model.keras").is_file()
    copy = next(copies.iterdir())
    assert {p.name for p in copy.glob("*.h5")} == {
        s["file"] for s in read_manifest(copy)["shards"]
    }  # the copy's shards are named by their sha256, as at the URL
    assert all(p.name[:16] == s["sha256"][:16] for p, s in zip(
        sorted(copy.glob("*.h5")), sorted(read_manifest(copy)["shards"], key=lambda s: s["file"])
    ))  # fmt: skip


def test_file_urls_and_plain_folders_work_the_same(shared, tmp_path):
    target = tmp_path / "team-drive" / "gestures"
    assert push(shared, f"file://{target}").moved == 12
    assert verify_cache(target).recordings == 12  # a pushed folder is itself a cache
    assert pull(str(target), tmp_path / "copy").moved == 12


def test_two_pushes_at_once_leave_one_whole_cache(s3, shared, small_cache, tmp_path):
    extractor = read_manifest(small_cache)["extractor"]
    other = {**extractor, "clip_stride": 2 * extractor["clip_stride"]}
    theirs = write_continuous_cache(tmp_path / "theirs", other, [f"t{i}" for i in range(12)],
                                    clips=16, shard_size=1)  # fmt: skip
    url, outcomes = "s3://team/gestures/race", {}

    def attempt(cache: Path) -> None:
        try:
            push(cache, url, workers=2)
            outcomes[cache] = "pushed"
        except CacheError as error:
            outcomes[cache] = str(error)

    threads = [threading.Thread(target=attempt, args=(c,)) for c in (shared, theirs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [c for c, outcome in outcomes.items() if outcome == "pushed"]
    assert len(winners) == 1, outcomes
    loser = next(outcome for outcome in outcomes.values() if outcome != "pushed")
    assert "someone else pushed" in loser or "holds another cache" in loser
    copy = pull(url, tmp_path / "copy")
    assert copy.moved == 12 and verify_cache(tmp_path / "copy").recordings == 12
    assert (
        read_manifest(tmp_path / "copy")["fingerprint"] == read_manifest(winners[0])["fingerprint"]
    )


class DroppingProxy:
    """A TCP proxy to the S3 server that drops every connection, and refuses new ones, once
    `cut_after` bytes have come back through it: a connection lost in the middle of a shard."""

    def __init__(self, upstream: str, cut_after: int):
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream, self.cut_after, self.sent = (host, int(port)), cut_after, 0
        self.cut, self.lock, self.sockets = threading.Event(), threading.Lock(), []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.cut.is_set():
                client.close()
                continue
            server = socket.create_connection(self.upstream)
            with self.lock:
                self.sockets += [client, server]
            threading.Thread(target=self.pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self.pump, args=(server, client, True), daemon=True).start()

    def pump(self, source: socket.socket, target: socket.socket, counted: bool) -> None:
        try:
            while data := source.recv(65536):
                if counted:
                    with self.lock:
                        self.sent += len(data)
                    if self.sent >= self.cut_after:
                        target.sendall(data[: len(data) // 2])  # half a reply, then nothing
                        self.drop()
                        return
                target.sendall(data)
        except OSError:
            pass

    def drop(self) -> None:
        self.cut.set()
        with self.lock:
            for sock in self.sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()
        self.drop()


def assert_no_half_shard(copy: Path, url_manifest: dict) -> None:
    """Whatever an interrupted pull left: no manifest yet, no temporary file, and every
    shard there whole (its sha256 the remote manifest's)."""
    from gesture_cache.common.files import file_sha256

    assert not (copy / "manifest.json").exists()
    assert not list(copy.glob(".*.part-*"))
    expected = {s["file"]: s["sha256"] for s in url_manifest["shards"]}
    for shard in copy.glob("*.h5"):
        assert file_sha256(shard) == expected[shard.name], shard


def remote_manifest(client, prefix: str) -> dict:
    return json.loads(
        client.get_object(Bucket="team", Key=f"{prefix}/manifest.json")["Body"].read()
    )


def test_a_connection_dropped_mid_shard_is_one_error_and_the_pull_resumes(s3, shared, tmp_path):
    url = "s3://team/gestures/dropped"
    push(shared, url)
    shard_bytes = (shared / read_manifest(shared)["shards"][0]["file"]).stat().st_size
    proxy = DroppingProxy(
        os.environ["AWS_ENDPOINT_URL"], cut_after=4 * shard_bytes + shard_bytes // 2
    )
    quick = {"config_kwargs": {"retries": {"max_attempts": 1}}}  # fail in seconds, not minutes
    copy = tmp_path / "copy"
    try:
        with pytest.raises(GestureCacheError, match="run the same command again"):
            pull(url, copy, {**quick, "endpoint_url": proxy.url}, workers=1)
    finally:
        proxy.close()
    assert_no_half_shard(copy, remote_manifest(s3, "gestures/dropped"))
    whole = len(list(copy.glob("*.h5")))
    assert 1 <= whole < 12
    done = pull(url, copy)  # the connection is back
    assert (done.kept, done.moved) == (whole, 12 - whole)
    assert verify_cache(copy).recordings == 12 and not (copy / ".pull.json").exists()


def test_a_full_disk_during_pull_leaves_no_half_shard_and_the_pull_resumes(s3, shared, tmp_path):
    url = "s3://team/gestures/full"
    push(shared, url)
    copy = tmp_path / "copy"
    shard_bytes = (shared / read_manifest(shared)["shards"][0]["file"]).stat().st_size
    command = [sys.executable, "-m", "gesture_cache.cli", "pull", url, str(copy), "--workers", "1"]

    def disk_full_midway() -> None:  # every write past the limit fails (EFBIG), as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (shard_bytes // 2, resource.RLIM_INFINITY))

    failed = subprocess.run(command, preexec_fn=disk_full_midway, capture_output=True, text=True)
    assert failed.returncode == 2, failed.stderr[-2000:]
    assert "cannot be written" in failed.stderr and "Traceback" not in failed.stderr
    assert "testing-secret-do-not-print" not in failed.stderr
    assert_no_half_shard(copy, remote_manifest(s3, "gestures/full"))
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert verify_cache(copy).recordings == 12


def test_gs_urls_push_pull_and_refuse_an_altered_shard(gcs, shared, tmp_path, capsys):
    """gs:// through gcsfs against an emulator. (It ignores ifGenerationMatch, so the
    exclusive claim that keeps two pushes apart is tested on S3 only.)"""
    import gcsfs

    url = "gs://team/gestures/v1"
    assert (push(shared, url, gcs).moved, push(shared, url, gcs).kept) == (12, 12)
    copy = tmp_path / "copy"
    assert pull(url, copy, gcs).moved == 12 and verify_cache(copy).recordings == 12
    assert main(["verify", url, "--storage-options", json.dumps(gcs),
                 "--cache-dir", str(tmp_path / "copies")]) == 0  # fmt: skip
    fs = gcsfs.GCSFileSystem(**gcs)
    name = json.loads(fs.cat_file("team/gestures/v1/manifest.json"))["shards"][4]["file"]
    fs.pipe_file(f"team/gestures/v1/{name}", fs.cat_file(f"team/gestures/v1/{name}")[:-100])
    other = tmp_path / "other"
    with pytest.raises(CacheError, match=f"{name} does not match its manifest"):
        pull(url, other, gcs, workers=1)
    assert not (other / name).exists() and not (other / "manifest.json").exists()
    capsys.readouterr()
    options = ["--storage-options", json.dumps(gcs)]
    assert main(["push", str(shared), "gs://no-such-bucket/x", *options]) != 0
    error = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(error) == 1 and "gs://no-such-bucket/x" in error[0], error
