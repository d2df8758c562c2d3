"""push and pull between teammates: nothing either side extracted is lost without --force,
nothing but shards is ever deleted at a URL, damage heals, secrets stay out of messages."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from gesture_cache.cache.manifest import read_manifest
from gesture_cache.cache.pull import copy_source, local_copy, pull
from gesture_cache.cache.push import push
from gesture_cache.cache.remote import credentials, redacted
from gesture_cache.cache.repair import repair_cache
from gesture_cache.cache.verify import verify_cache
from gesture_cache.cli.main import main
from gesture_cache.common.errors import CacheError, ConfigError, GestureCacheError
from tests.helpers import write_cache

ROWS = [(f"r{i:02d}", ("a", "b")[i % 2], "", "") for i in range(8)]


def team_cache(folder: Path, rows=ROWS, shard_size: int = 2) -> Path:
    return write_cache(folder, rows, clips=3, dim=8, shard_size=shard_size)


def ids(cache: Path) -> set[str]:
    from gesture_cache.cache.reader import open_cache

    return set(open_cache(cache, load_features=False).recordings["recording_id"])


def extend(cache: Path, more: list[tuple[str, str, str, str]]) -> None:
    """What a teammate's `extract` into the same cache does: more recordings, new shards."""
    write_cache(cache, more, clips=3, dim=8, shard_size=2)


def remote_keys(s3, prefix: str) -> list[str]:
    listed = s3.list_objects_v2(Bucket="team", Prefix=prefix).get("Contents", [])
    return sorted(o["Key"][len(prefix) :] for o in listed)


def test_pull_keeps_what_was_extracted_here_and_push_then_sends_both(s3, tmp_path):
    url = "s3://team/merge/v1"
    push(team_cache(tmp_path / "a"), url)
    mine = tmp_path / "mine"
    pull(url, mine)
    extend(mine, [("x1", "a", "", ""), ("x2", "b", "", "")])  # extracted here
    push(team_cache(tmp_path / "b", ROWS + [("y1", "a", "", "")]), url, force=True)
    done = pull(url, mine)  # their y1 arrives, our x1 and x2 stay
    assert done.merged == 2
    assert ids(mine) == {r[0] for r in ROWS} | {"x1", "x2", "y1"}
    assert verify_cache(mine).problems == []
    push(mine, url)
    assert ids(local_copy(url, tmp_path / "copies")) == ids(mine)


def test_a_pull_rewrites_a_local_shard_that_partly_repeats_the_urls(s3, tmp_path):
    url = "s3://team/merge/overlap"
    push(team_cache(tmp_path / "base"), url)
    mine = tmp_path / "mine"
    pull(url, mine)
    extend(mine, [("x1", "a", "", ""), ("both", "b", "", "")])  # one shard: x1 and both
    theirs = team_cache(tmp_path / "theirs", ROWS + [("both", "b", "", "")])
    push(theirs, url, force=True)
    assert pull(url, mine).merged == 1
    assert ids(mine) == {r[0] for r in ROWS} | {"x1", "both"}
    assert verify_cache(mine).problems == []  # "both" is held once


def test_push_refuses_to_drop_a_teammates_recordings_and_names_them(s3, tmp_path, capsys):
    url = "s3://team/merge/drop"
    old = team_cache(tmp_path / "old")
    push(old, url)
    newer = tmp_path / "newer"
    pull(url, newer)
    extend(newer, [("t1", "a", "", ""), ("t2", "b", "", "")])
    push(newer, url)
    before = remote_keys(s3, "merge/drop/")
    assert main(["push", str(old), url]) != 0
    error = capsys.readouterr().err
    assert "2 recordings this cache lacks" in error and "t1" in error and "t2" in error
    assert remote_keys(s3, "merge/drop/") == before  # nothing removed
    assert main(["push", str(old), url, "--force"]) == 0  # said and done
    assert ids(local_copy(url, tmp_path / "copies")) == {r[0] for r in ROWS}


def test_push_force_deletes_only_shards_never_the_manifest(s3, tmp_path):
    url, prefix = "s3://team/merge/hostile", "merge/hostile"
    push(team_cache(tmp_path / "a"), url)
    manifest = json.loads(
        s3.get_object(Bucket="team", Key=f"{prefix}/manifest.json")["Body"].read()
    )
    manifest["shards"][0]["file"] = "manifest.json"
    s3.put_object(Bucket="team", Key=f"{prefix}/manifest.json", Body=json.dumps(manifest).encode())
    s3.put_object(Bucket="team", Key=f"{prefix}/notes.txt", Body=b"keep me")
    with pytest.raises(CacheError, match="not a shard's name"):
        pull(url, tmp_path / "copy")
    smaller = team_cache(tmp_path / "b", ROWS[:4])
    with pytest.raises(CacheError, match="--force replaces"):
        push(smaller, url)
    push(smaller, url, force=True)
    assert "notes.txt" in remote_keys(s3, f"{prefix}/")
    assert ids(local_copy(url, tmp_path / "copies")) == {r[0] for r in ROWS[:4]}


def test_repair_and_extract_accept_the_shard_names_pull_writes(s3, tmp_path):
    url = "s3://team/merge/names"
    push(team_cache(tmp_path / "a"), url)
    copy = tmp_path / "copy"
    pull(url, copy)
    assert all(s["file"][16] == "-" for s in read_manifest(copy)["shards"])
    report = repair_cache(copy)
    assert report.kept == len(ROWS) and not report.dropped
    assert ids(copy) == {r[0] for r in ROWS}
    extend(copy, [("z1", "a", "", "")])  # the writer numbers after the pulled shards
    assert verify_cache(copy).recordings == len(ROWS) + 1


def test_a_shard_altered_at_the_url_is_sent_again_by_the_next_push(s3, tmp_path):
    url, prefix = "s3://team/merge/heal", "merge/heal"
    cache = team_cache(tmp_path / "a")
    push(cache, url)
    name = json.loads(s3.get_object(Bucket="team", Key=f"{prefix}/manifest.json")["Body"].read())[
        "shards"
    ][1]["file"]
    body = bytearray(s3.get_object(Bucket="team", Key=f"{prefix}/{name}")["Body"].read())
    body[-20] ^= 0xFF  # same size, other content
    s3.put_object(Bucket="team", Key=f"{prefix}/{name}", Body=bytes(body))
    with pytest.raises(CacheError, match="does not match its manifest"):
        pull(url, tmp_path / "before")
    assert push(cache, url).moved == 1
    assert (
        verify_cache(tmp_path / "after" if pull(url, tmp_path / "after") else None).problems == []
    )


def test_a_damaged_local_copy_is_fetched_again(s3, tmp_path, capsys):
    url = "s3://team/merge/copy"
    push(team_cache(tmp_path / "a"), url)
    copies = tmp_path / "copies"
    copy = local_copy(url, copies)
    shard = copy / read_manifest(copy)["shards"][2]["file"]
    data = bytearray(shard.read_bytes())
    data[-20] ^= 0xFF
    shard.write_bytes(bytes(data))  # its time changes: the next use hashes and fetches it
    assert verify_cache(local_copy(url, copies)).problems == []
    mtime = shard.stat().st_mtime_ns
    shard.write_bytes(bytes(data))
    os.utime(shard, ns=(mtime, mtime))  # damage that keeps size and time: verify finds it
    assert main(["verify", url, "--cache-dir", str(copies)]) == 0
    assert "OK" in capsys.readouterr().out


def test_two_readers_of_one_url_wait_for_one_copy(s3, tmp_path):
    url = "s3://team/merge/two"
    push(team_cache(tmp_path / "a", shard_size=1), url)
    copies, results = tmp_path / "copies", []

    def read() -> None:
        try:
            results.append(verify_cache(local_copy(url, copies)).recordings)
        except GestureCacheError as error:
            results.append(str(error))

    threads = [threading.Thread(target=read) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [len(ROWS), len(ROWS)]


def test_a_manifest_listing_a_shard_twice_is_refused(s3, tmp_path):
    url, prefix = "s3://team/merge/twice", "merge/twice"
    push(team_cache(tmp_path / "a"), url)
    manifest = json.loads(
        s3.get_object(Bucket="team", Key=f"{prefix}/manifest.json")["Body"].read()
    )
    manifest["shards"].append(manifest["shards"][0])
    s3.put_object(Bucket="team", Key=f"{prefix}/manifest.json", Body=json.dumps(manifest).encode())
    with pytest.raises(CacheError, match="listed twice"):
        pull(url, tmp_path / "copy")


def test_a_read_only_destination_is_one_line(s3, tmp_path, capsys):
    url = "s3://team/merge/readonly"
    push(team_cache(tmp_path / "a"), url)
    locked = tmp_path / "locked"
    locked.mkdir()
    capsys.readouterr()
    with read_only(locked):
        assert main(["pull", url, str(locked / "copy")]) == 2
    err = capsys.readouterr().err
    assert (
        error_lines(err)
        == [
            f"gesture-cache pull: error: {locked / 'copy'}: cannot be "
            "created (Operation not permitted)"
        ]
        or "Permission" in err
    )
    assert "Traceback" not in err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "error:" in line]


@contextmanager
def read_only(folder: Path):
    """A folder nothing can be created in, even by root (chattr +i), else by permissions."""
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
            pytest.skip("root, and chattr +i is refused here: no read-only folder to test")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        return
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        yield
    finally:
        folder.chmod(stat.S_IRWXU)


@pytest.mark.slow
def test_an_endpoint_that_never_answers_fails_naming_it(tmp_path, capsys, monkeypatch):
    silent = socket.create_server(("127.0.0.1", 0))  # accepts connections, answers nothing
    endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    quick = json.dumps({"endpoint_url": endpoint, "config_kwargs": {"read_timeout": 0.5}})
    started = time.monotonic()
    try:
        code = main(["pull", "s3://team/x", str(tmp_path / "copy"), "--storage-options", quick])
    finally:
        silent.close()
    assert code == 2 and time.monotonic() - started < 60
    (line,) = error_lines(capsys.readouterr().err)
    assert f"s3://team/x (endpoint {endpoint}): the storage failed" in line


def test_file_localhost_urls_name_this_machine(tmp_path):
    cache = team_cache(tmp_path / "a")
    target = tmp_path / "drive"
    push(cache, f"file://localhost{target}")
    assert verify_cache(target).recordings == len(ROWS)
    assert not Path("localhost").exists()
    with pytest.raises(ConfigError, match="not one on host"):
        push(cache, "file://fileserver/share/x")


SECRETS = ["SeCrEtOnE/SeCrEtTwO", "SeCrEtOnE@SeCrEtTwO/SeCrEtThReE", "SeCrEtOnE%40:SeCrEtTwO/x"]


@pytest.mark.parametrize("secret", SECRETS)
def test_credentials_whatever_they_hold_never_reach_a_message(secret, capsys, tmp_path):
    url = f"s3://AKIAKEY:{secret}@no-such-bucket/x"
    assert secret not in redacted(url) and redacted(url) == "s3://no-such-bucket/x"
    assert credentials(url)[1] is not None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    options = json.dumps({"endpoint_url": f"http://127.0.0.1:{port}"})
    assert main(["pull", url, str(tmp_path / "c"), "--storage-options", options]) != 0
    err = capsys.readouterr().err
    assert "SeCrEt" not in err and "no-such-bucket" in err
    assert redacted("s3://bucket/v@2/cache") == "s3://bucket/v@2/cache"  # an @ in a path stays


def test_a_run_trained_from_a_url_records_the_url(s3, tmp_path):
    from gesture_cache.train.config import TrainConfig
    from gesture_cache.train.fit import train

    url = "s3://team/merge/run"
    push(team_cache(tmp_path / "a", [(f"r{i:02d}", "ab"[i % 2], "", "") for i in range(16)]), url)
    copy = local_copy(url, tmp_path / "copies")
    assert copy_source(copy) == url
    run = tmp_path / "run"
    config = TrainConfig(epochs=1, units=(4,), dense=0, window_clips=2)
    train(copy, run, config)
    recorded = json.loads((run / "config.json").read_text())["cache"]
    assert recorded["url"] == url and recorded["path"] == str(copy.resolve())
