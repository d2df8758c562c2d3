"""Extraction on Ray (`extract --engine ray`): decode on CPU tasks, the backbone in an actor
pool, one writer.

Ray Data streams one row per clip. A decode task per recording (1 CPU) yields its clips and
then a "done" row (what was learned of the file) or a "failed" row; an actor pool (one actor
per GPU, or `--actors` on CPUs) runs the backbone on batches of `--batch-clips` clips drawn
from any recordings, and passes the other rows through. Ray Data bounds what waits between
the stages (backpressure), retries a decode task whose worker died and restarts a dead actor.

The driver gathers each recording's clips by number (a clip computed twice after a retry is
kept once) and hands finished recordings to the same writer and checks as a local run: same
cache, same fingerprint, same failures. Only features come back (16 KB per clip, 1/40 of the
clip itself), so the driver stays the one writer of the cache and its manifest; a driver
that dies leaves every shard written so far, and the next run skips those recordings.
"""

from __future__ import annotations

import logging
import pickle
import socket
from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np

from gesture_cache.cache.writer import CacheWriter
from gesture_cache.common.errors import ConfigError, GestureCacheError
from gesture_cache.extract.config import ExtractConfig
from gesture_cache.extract.extractor import Extractor, extractor_from_config
from gesture_cache.extract.job import (
    ExtractSummary,
    InFlight,
    Job,
    fail,
    job_events,
    store,
)

log = logging.getLogger(__name__)


def connect(address: str | None) -> None:
    """Join the cluster at `address` ("auto", "ray://host:10001", host:port), or start a Ray
    instance on this machine when there is none."""
    try:
        import ray
    except ModuleNotFoundError:
        raise ConfigError("--engine ray needs Ray: pip install 'gesture_cache[ray]'") from None
    if ray.is_initialized():
        return
    if address and address != "auto":
        check_reachable(address)
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    except Exception as error:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ...
        where = address or "a new local instance"
        raise ConfigError(
            f"--address {where}: cannot reach the Ray cluster ({type(error).__name__}: "
            f"{cause(error)})"
        ) from None


def check_reachable(address: str, timeout: float = 10.0) -> None:
    """Fail in seconds, not minutes (Ray's own retries), when nothing listens at HOST:PORT."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not (port.isascii() and port.isdigit()):
        raise ConfigError(f"--address {address}: give auto, ray://HOST:PORT or HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as error:
        raise ConfigError(
            f"--address {address}: cannot reach the Ray cluster ({error}); is it running "
            "(ray start --head) and is the port open?"
        ) from None


def backbone_actors(requested: int | None) -> tuple[int, float]:
    """How many backbone actors, and the GPUs each takes: one per GPU of the cluster, or
    `--actors N` (on CPUs, one each)."""
    import ray

    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus:
        return (requested or gpus), 1.0
    return (requested or 1), 0.0


class BackboneActor:
    """Runs the backbone on batches of clip rows; other rows pass through."""

    def __init__(self, config: ExtractConfig, spec: dict):
        self.extractor = extractor_from_config(config)
        if self.extractor.spec != spec:  # e.g. another weights file under the same path
            raise ConfigError(
                "this Ray worker's extractor differs from the driver's (weights or mean file "
                "with other contents?): every machine needs the same files at the same paths"
            )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        is_clip = batch["kind"] == "clip"
        dim = self.extractor.feature_dim
        features = np.zeros((len(is_clip), dim), np.float32)
        if is_clip.any():
            features[is_clip] = self.extractor.backbone.forward(batch["clip"][is_clip])
        rows = {name: column for name, column in batch.items() if name != "clip"}
        return {**rows, "features": features}


def decode_rows(jobs: list[Job], extractor: Extractor, clip_shape: tuple) -> Callable:
    """The decode task: one recording's events as rows of one schema (events other than
    clips carry a blank clip and their payload pickled in `info`)."""
    blank = np.zeros(clip_shape, extractor.backbone.clip_dtype)

    def rows(item: dict) -> Iterator[dict]:
        index = int(item["index"])
        number = 0
        for kind, *rest in job_events(jobs[index], extractor):
            row = {"index": index, "number": number, "kind": kind, "start": -1, "valid": False}
            if kind == "clip":
                start, clip, valid = rest
                yield {**row, "start": start, "valid": valid, "clip": clip, "info": b""}
                number += 1
            else:
                yield {**row, "clip": blank, "info": pickle.dumps(rest[0])}

    return rows


def extract_on_ray(
    jobs: list[Job],
    extractor: Extractor,
    writer: CacheWriter,
    config: ExtractConfig,
    summary: ExtractSummary,
    progress: Callable[[int], None],
) -> None:
    """`local_engine.extract_locally`'s contract on a Ray cluster (joined by `connect`
    already). The actors take the driver's batch size."""
    if not jobs:
        return
    import ray

    actors, gpus_each = backbone_actors(config.actors)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the driver's tqdm counts recordings
    context.execution_options.preserve_order = False
    clip_shape = extractor.backbone.clip_shape
    items = [{"index": i} for i in range(len(jobs))]
    # Ray Data's defaults retry a task whose worker died and restart a dead actor (its
    # batches rerun): what a killed worker needs, so nothing is set here.
    rows = (
        ray.data.from_items(items, override_num_blocks=len(jobs))
        .flat_map(decode_rows(jobs, extractor, clip_shape), num_cpus=1)
        .map_batches(
            BackboneActor,
            fn_constructor_args=(
                replace(config, batch_clips=extractor.batch_clips),
                extractor.spec,
            ),
            batch_size=extractor.batch_clips,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_gpus=gpus_each,
            num_cpus=0 if gpus_each else 1,
        )
    )
    log.info("Ray: %d backbone actor(s), %d recordings", actors, len(jobs))
    gathered: dict[int, dict] = {}  # index -> {"clips": {number: row}, "done": row}
    finished: set[int] = set()
    try:
        for row in rows.iter_rows():
            index = int(row["index"])
            if index in finished:
                continue  # a retried task's repeat
            recording = gathered.setdefault(index, {"clips": {}, "done": None})
            if row["kind"] == "failed":
                error = pickle.loads(row["info"])
                fail(writer, summary, jobs[index].rows[0], error.reason, str(error))
                progress(0)
                finished.add(index)
                gathered.pop(index)
                continue
            if row["kind"] == "clip":
                recording["clips"][int(row["number"])] = row
            else:
                recording["done"] = row
            done = recording["done"]
            if done is not None and len(recording["clips"]) == int(done["number"]):
                store(assemble(jobs[index], recording), writer, config, summary)
                progress(int(done["number"]))
                finished.add(index)
                gathered.pop(index)
    except ray.exceptions.RayError as error:
        raise GestureCacheError(
            f"the Ray job failed ({cause(error)}); every recording stored so far is kept: "
            "run the same command again to go on"
        ) from None


def cause(error: Exception) -> str:
    """The line of a Ray error that says what went wrong: a remote traceback ends with the
    worker's own exception ("ConfigError: ...")."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    named = [line for line in lines if "Error:" in line or "Exception:" in line]
    return (named[-1] if named else lines[0] if lines else type(error).__name__)[:400]


def assemble(job: Job, recording: dict) -> InFlight:
    """A recording's clips in order, as the local pipeline hands them to `store`."""
    clips = [recording["clips"][n] for n in range(len(recording["clips"]))]
    return InFlight(
        job,
        clip_start=[int(c["start"]) for c in clips],
        clip_valid=[bool(c["valid"]) for c in clips],
        features=[np.asarray(c["features"], np.float32) for c in clips],
        decoded=pickle.loads(recording["done"]["info"]),
    )
