"""Sharing speed against an S3 API on this machine (moto's server, started here): push and
pull of a cache of a few hundred MB against copying the same files with fsspec's own
`put`/`get`; the no-op second push; and a whole `train` process (one epoch) reading the cache
from the URL cold (empty --cache-dir), warm (the same --cache-dir again), and from local disk.

    python benchmarks/share.py [--recordings 60] [--clips 400]

The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed(step) -> tuple[float, object]:
    started = time.perf_counter()
    result = step()
    return time.perf_counter() - started, result


def train_seconds(cache: str, out: Path, copies: Path) -> float:
    command = [sys.executable, "-m", "gesture_cache.cli", "train", cache, "--out", str(out),
               "--epochs", "1", "--cache-dir", str(copies)]  # fmt: skip
    seconds, done = timed(lambda: subprocess.run(command, capture_output=True, text=True))
    assert done.returncode == 0, done.stderr[-2000:]
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recordings", type=int, default=60)
    parser.add_argument("--clips", type=int, default=400)
    args = parser.parse_args()

    import boto3
    import fsspec
    from moto.server import ThreadedMotoServer

    from gesture_cache.cache.pull import pull
    from gesture_cache.cache.push import push
    from gesture_cache.extract.config import ExtractConfig
    from gesture_cache.extract.extractor import extractor_from_config
    from tests.helpers import write_continuous_cache

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
    )  # fmt: skip
    boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).create_bucket(Bucket="bench")
    result: dict = {"machine": platform.node(), "server": "moto ThreadedMotoServer, 127.0.0.1"}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        spec = extractor_from_config(ExtractConfig(random_weights=0)).spec
        ids = [f"r{i:03d}" for i in range(args.recordings)]
        cache = write_continuous_cache(scratch / "cache", spec, ids, clips=args.clips, shard_size=1)
        files = sorted(cache.glob("*.h5"))
        size = sum(f.stat().st_size for f in files)
        result["cache_mb"] = round(size / 1e6, 1)
        result["shards"] = len(files)
        print(f"cache: {len(files)} shards, {size / 1e6:.0f} MB", flush=True)

        fs = fsspec.filesystem("s3")
        local, remote = [str(f) for f in files], [f"bench/put/{f.name}" for f in files]
        fetched = [str(scratch / "get" / f.name) for f in files]
        put_s, _ = timed(lambda: fs.put(local, remote))
        push_s, _ = timed(lambda: push(cache, "s3://bench/cache"))
        noop_s, again = timed(lambda: push(cache, "s3://bench/cache"))
        assert again.moved == 0
        get_s, _ = timed(lambda: fs.get(remote, fetched))
        pull_s, _ = timed(lambda: pull("s3://bench/cache", scratch / "pulled"))
        mb = size / 1e6
        result.update(
            fsspec_put_mb_s=round(mb / put_s, 1), push_mb_s=round(mb / push_s, 1),
            push_over_put=round(put_s / push_s, 2), noop_push_s=round(noop_s, 2),
            fsspec_get_mb_s=round(mb / get_s, 1), pull_mb_s=round(mb / pull_s, 1),
            pull_over_get=round(get_s / pull_s, 2),
        )  # fmt: skip
        print(json.dumps(result), flush=True)

        copies = scratch / "copies"
        cold = train_seconds("s3://bench/cache", scratch / "run-cold", copies)
        warm = train_seconds("s3://bench/cache", scratch / "run-warm", copies)
        local = train_seconds(str(cache), scratch / "run-local", copies)
        result.update(
            train_cold_s=round(cold, 1), train_warm_s=round(warm, 1), train_local_s=round(local, 1),
            warm_over_local=round(local / warm, 2),
        )  # fmt: skip
    server.stop()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
