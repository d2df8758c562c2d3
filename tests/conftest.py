from __future__ import annotations

import os
import pickle
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from filelock import FileLock

from gesture_cache import open_cache
from gesture_cache.backbones.c3d.network import build_c3d, randomize_weights
from gesture_cache.cache.manifest import read_manifest
from gesture_cache.extract.config import ExtractConfig
from gesture_cache.extract.extraction import build_cache
from gesture_cache.sources import synth
from gesture_cache.train.config import TrainConfig
from gesture_cache.train.fit import train
from tests.helpers import (
    HANDS,
    VIDEOS,
    make_hands_run,
    save_keras2_weights,
    write_continuous_cache,
)
from tests.postgres import postgres_bin, postgres_server
from tests.toy_backbone import extract_config as toy_config
from tests.toy_backbone import register as register_toy_backbone

register_toy_backbone()  # for the tests whose subject is not a network (and test_registry's)


def built_once(
    tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], object]
):
    """A session fixture's value, built by the first xdist worker that asks and read by the
    others (pytest-xdist's recipe: a lock in the folder the workers share). For what the tests
    only read: a demo's cache and run, a trained detector."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return build(tmp_path_factory.mktemp(name))
    shared = tmp_path_factory.getbasetemp().parent  # this run's, shared by its workers
    value = shared / f"{name}.pickle"
    with FileLock(str(shared / f"{name}.lock")):
        if not value.is_file():
            result = build(Path(tempfile.mkdtemp(prefix=f"{name}-", dir=shared)))
            value.write_bytes(pickle.dumps(result))
        return pickle.loads(value.read_bytes())


@pytest.fixture(scope="session")
def shared_videos() -> Path:
    if not (VIDEOS / "tree.avi").exists():
        pytest.skip("../shared/fixtures/videos is not here")
    return VIDEOS


@pytest.fixture(scope="session")
def synth_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two synthetic videos per gesture."""
    return synth.make_dataset(tmp_path_factory.mktemp("synth"), per_class=2, seed=1)


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Keras-2 layout weights file holding seeded random C3D weights."""
    model = build_c3d()
    randomize_weights(model, seed=7)
    return save_keras2_weights(model, tmp_path_factory.mktemp("weights") / "c3d_keras2.h5")


@pytest.fixture(scope="session")
def small_cache(tmp_path_factory: pytest.TempPathFactory, synth_csv: Path) -> Path:
    """8 synthetic videos, two or three clips each (stride 32), random weights: ~8 s of C3D.
    One decode worker, so the recordings reach the shards in the CSV's order every time."""
    out = tmp_path_factory.mktemp("cache") / "cache"
    config = ExtractConfig(random_weights=0, clip_stride=32, shard_size=3, decode_workers=1)
    summary = build_cache(synth_csv, out, config)
    assert summary.cached == 8
    return out


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory):
    """`gesture-cache demo` itself (C3D, random weights): 64 synthetic videos, about 4 clips
    each, the compact preset trained. For what the README says of the demo, and for tests of
    a C3D run; every other run-level test takes `toy_demo`."""
    from gesture_cache.cli.demo import classification_demo

    return classification_demo(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="session")
def toy_demo(tmp_path_factory: pytest.TempPathFactory):
    """The classification demo's own steps on the toy backbone: the same 64 synthetic videos,
    cache, compact run and metrics, in seconds instead of minutes."""
    from gesture_cache.cli.demo import classification_demo

    return built_once(
        tmp_path_factory, "toy-demo", lambda out: classification_demo(out, extract=toy_config())
    )


@pytest.fixture(scope="session")
def detect_demo(tmp_path_factory: pytest.TempPathFactory):
    """The detection demo's own steps on the toy backbone: 16 continuous recordings, a
    detector trained with the background class, detection scored on 3 unseen recordings."""
    from gesture_cache.cli.demo import detection_demo

    return built_once(
        tmp_path_factory, "detect-demo", lambda out: detection_demo(out, extract=toy_config())
    )


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server on loopback for this test session (skips without one)."""
    if postgres_bin() is None:
        pytest.skip("PostgreSQL is not installed (.ci/run installs it)")
    folder = Path(tempfile.mkdtemp(prefix="gesture-cache-pg-"))  # the server's user can reach it
    try:
        with postgres_server(folder) as url:
            yield url
    finally:
        shutil.rmtree(folder, ignore_errors=True)


DETECTOR = TrainConfig(
    background=True,
    window_clips=2,
    window_step=1,
    window_sampling="random",
    epochs=12,
    patience=12,
    units=(8,),
    dense=0,
    lr=3e-3,
)


@pytest.fixture(scope="session")
def detector(small_cache, tmp_path_factory):
    """A detector trained on continuous recordings whose gestures are labelled `NA` and
    `null`; every recording is called rec.avi, in a folder of its own."""
    folder = tmp_path_factory.mktemp("continuous")
    extractor = read_manifest(small_cache)["extractor"]
    ids = [f"s{i:02d}/rec.avi" for i in range(10)]
    cache = write_continuous_cache(folder / "cache", extractor, ids)
    run = folder / "run"
    train(cache, run, DETECTOR)
    split = pd.read_csv(run / "split.csv", dtype=str, keep_default_na=False)
    unseen = sorted(set(split.loc[split["split"] == "test", "recording_id"]))
    segments = open_cache(cache).segments
    truth = pd.DataFrame(
        {
            "file_path": segments["recording_id"],
            "action": segments["label"],
            "start_frame": segments["start_frame"],
            "end_frame": segments["end_frame"],
        }
    )
    truth = truth[truth["file_path"].isin(unseen)]
    truth.to_csv(folder / "truth.csv", index=False)
    return SimpleNamespace(
        cache=cache, run=run, unseen=unseen, truth=folder / "truth.csv", folder=folder
    )


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """An S3 API on 127.0.0.1 with the bucket `team`; the environment points at it the way a
    user points at MinIO or Ceph (AWS_ENDPOINT_URL), with throwaway credentials."""
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("s3fs")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing-key-id",
        "AWS_SECRET_ACCESS_KEY": "testing-secret-do-not-print",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    with pytest.MonkeyPatch.context() as environment:
        for key, value in env.items():
            environment.setenv(key, value)
        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
        client.create_bucket(Bucket="team")
        yield client
    server.stop()


@pytest.fixture(scope="session")
def gcs():
    """A GCS JSON API on 127.0.0.1 (gcp-storage-emulator, in memory) with the bucket `team`;
    gcsfs finds it the way it finds any emulator, through STORAGE_EMULATOR_HOST. gcsfs' newer
    buckets (zonal, hierarchical) are probed over gRPC with TLS, which an emulator does not
    speak: each probe waited 60 s, so they are off, as gcsfs' own variable says, before import."""
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
        pytest.importorskip("gcsfs")
        emulator = pytest.importorskip("gcp_storage_emulator.server")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = emulator.create_server("127.0.0.1", port, in_memory=True, default_bucket="team")
        server.start()
        environment.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
        yield {"token": "anon"}  # the storage options a user gives an emulator
    server.stop()


@pytest.fixture
def copy(small_cache, tmp_path) -> Path:
    """A copy of `small_cache` a test may damage."""
    target = tmp_path / "cache"
    shutil.copytree(small_cache, target)
    return target


@pytest.fixture
def many_shards(tmp_path, small_cache):
    """40 recordings, one a shard: over PARALLEL_SHARDS, so verify uses a process per core."""
    extractor = read_manifest(small_cache)["extractor"]
    ids = [f"r{i:02d}" for i in range(40)]
    return write_continuous_cache(tmp_path / "cache", extractor, ids, clips=8, shard_size=1)


@pytest.fixture(scope="session")
def hands_run(tmp_path_factory):
    """A hands detector trained on the real recording's first 25 frames, tested on the other
    18 (`helpers.make_hands_run`; skips without ../shared)."""
    if not HANDS.is_dir():
        pytest.skip("../shared/fixtures/hands absent")
    return built_once(tmp_path_factory, "hands-run", make_hands_run)
