"""The extraction job: CSV rows -> recordings -> decode workers -> batched backbone -> writer.

Decode workers (threads: OpenCV releases the GIL while it decodes and resizes) stream each
recording's clips into one bounded queue; the main thread runs the backbone on batches of
`batch_clips` clips drawn from whatever recordings are in flight, and hands a recording to
the writer once all its clips have features. Memory stays bounded whatever the length:
frames pass through a 16-frame ring buffer and at most a queue's worth of clips waits.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from gesture_cache.backbones.keras_backends import software_versions
from gesture_cache.cache.manifest import ExtractorRecord
from gesture_cache.cache.writer import CacheWriter
from gesture_cache.extract.config import ExtractConfig
from gesture_cache.extract.extractor import (
    Extractor,
    extractor_files,
    extractor_from_config,
    resolved,
)
from gesture_cache.extract.job import (
    ExtractSummary,
    InFlight,
    Job,
    SetupError,
    fail,
    job_events,
    row_key,
    store,
)
from gesture_cache.sources.meta import Row, conflicting_rows, read_meta
from gesture_cache.video.decode import source_sha256, source_stat

log = logging.getLogger(__name__)


def in_partition(recording_id: str, num_shards: int, shard_index: int) -> bool:
    """Deterministic `--num-shards/--shard-index` split by a hash of the recording id."""
    digest = hashlib.sha256(recording_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % num_shards == shard_index


def check_settings(config: ExtractConfig) -> None:
    if not 0 <= config.shard_index < config.num_shards:
        raise SetupError(f"--shard-index {config.shard_index} is not in 0..{config.num_shards - 1}")
    for name in ("batch_clips", "decode_workers", "shard_size"):
        if getattr(config, name) is not None and getattr(config, name) < 1:
            raise SetupError(f"--{name.replace('_', '-')} must be at least 1")
    if config.engine not in ("local", "ray"):
        raise SetupError(f"unknown --engine {config.engine!r}: use local or ray")
    if config.engine == "local" and (config.ray_address or config.actors is not None):
        raise SetupError("--address and --actors go with --engine ray")
    if config.actors is not None and config.actors < 1:
        raise SetupError(f"--actors {config.actors}: give at least 1")
    if config.dtype not in ("float16", "float32"):
        raise SetupError(f"unknown --dtype {config.dtype!r}: use float16 or float32")
    if config.mean_file and not Path(config.mean_file).is_file():
        raise SetupError(f"--mean-file {config.mean_file} does not exist")
    if config.fps is not None and not config.fps > 0:
        raise SetupError(f"--fps {config.fps} must be above 0")


def run_extraction(csv_path: str | Path, out: str | Path, config: ExtractConfig) -> ExtractSummary:
    """Extract every usable recording of the CSV into the cache at `out`, resuming if it
    exists."""
    started = time.perf_counter()
    check_settings(config)
    config = resolved(config)
    if config.engine == "ray":
        from gesture_cache.extract.ray_engine import connect

        connect(config.ray_address)  # before anything is written
    rows = read_meta(csv_path, config.video_root, config.path_column, config.label_column)
    rows = [r for r in rows if in_partition(r.recording_id, config.num_shards, config.shard_index)]
    extractor = extractor_from_config(config)
    summary = ExtractSummary(
        setup_seconds=time.perf_counter() - started,
        network_in_decoding=extractor.backbone.network_in_stream,
        decode_workers=config.decode_workers,
    )
    record = ExtractorRecord(
        extractor.spec,
        extractor.feature_dim,
        files=extractor_files(config),
        software=software_versions(config.backend),
    )
    writer = CacheWriter(
        out,
        record,
        dtype=config.dtype,
        shard_size=config.shard_size,
        compression=config.compression,
    )
    with writer:
        jobs = plan(rows, writer, config, summary)
        pipeline_started = time.perf_counter()
        with tqdm(total=len(jobs), unit="recording", desc="extract", dynamic_ncols=True) as bar:

            def progress(clip_count: int) -> None:
                summary.clips += clip_count
                bar.update()
                building = getattr(extractor.backbone, "build_seconds", 0.0)  # once, apart
                summary.pipeline_seconds = time.perf_counter() - pipeline_started - building
                bar.set_postfix_str(rates(summary))

            pipeline = run_pipeline
            if config.engine == "ray":
                from gesture_cache.extract.ray_engine import run_ray_pipeline as pipeline
            pipeline(jobs, extractor, writer, config, summary, progress)
        summary.setup_seconds += getattr(extractor.backbone, "build_seconds", 0.0)
        summary.recordings_in_cache = writer.manifest["recordings"] + len(writer.pending)
        wanted = {r.recording_id for r in rows}
        summary.failures_recorded = sum(1 for k in writer.failures if k.split("#")[0] in wanted)
    summary.seconds = time.perf_counter() - started
    return summary


def rates(summary: ExtractSummary) -> str:
    """Clips/s of the whole pipeline and of the model alone, and how busy the model is: a
    model busy well under 100% is waiting for decoding (more --decode-workers). A backbone
    whose network runs in the decode workers (hands) has no model of its own to time."""
    text = f"{summary.clips / max(summary.pipeline_seconds, 1e-9):.2f} clips/s"
    if summary.network_in_decoding:
        return text + f" (the network runs in the {summary.decode_workers} decode workers)"
    if summary.model_seconds:
        busy = min(1.0, summary.model_seconds / max(summary.pipeline_seconds, 1e-9))
        text += f", model {summary.clips / summary.model_seconds:.2f} clips/s, busy {busy:.0%}"
    return text


def plan(
    rows: list[Row], writer: CacheWriter, config: ExtractConfig, summary: ExtractSummary
) -> list[Job]:
    """Recordings still to extract; bad rows become failures, done recordings are skipped."""
    by_recording: dict[str, list[Row]] = {}
    for row in rows:
        by_recording.setdefault(row.recording_id, []).append(row)
    if config.retry_failed:
        writer.forget_failures(set(by_recording))
    jobs = []
    for recording_id, same in by_recording.items():
        same = unique_rows(same, summary)
        if recording_id in writer.done:
            summary.skipped += 1
            report_if_changed(same, writer, summary)
        elif recording_id in writer.failures:
            summary.skipped += 1
        elif not recording_id:
            fail(writer, summary, same[0], "empty_path", f"row {same[0].row}: the path is empty")
        elif conflict := conflicting_rows(same):
            fail(writer, summary, same[0], "conflicting_labels", next(iter(conflict.values())))
        elif all(row_key(r) in writer.failures for r in same):
            summary.skipped += 1  # every row recorded as failed on an earlier run
        elif usable := usable_rows(same, writer, summary):
            fps = next((r.fps for r in usable if r.fps), None) or config.fps
            jobs.append(Job(recording_id, usable[0].path, usable, fps))
    return jobs


def unique_rows(rows: list[Row], summary: ExtractSummary) -> list[Row]:
    """Rows that say the same thing twice (label and bounds) count once, with a warning."""
    seen, unique = set(), []
    for row in rows:
        key = (row.label, row.start, row.end, row.in_seconds, row.also_seconds)
        if key in seen:
            summary.duplicate_rows += 1
            log.warning(
                "row %d repeats an earlier row for %r; used once", row.row, row.recording_id
            )
            continue
        seen.add(key)
        unique.append(row)
    return unique


def usable_rows(rows: list[Row], writer: CacheWriter, summary: ExtractSummary) -> list[Row]:
    """The rows that can be used before decoding; the others become row failures."""
    usable = []
    for row in rows:
        key = row_key(row)
        if key in writer.failures:
            continue
        if row.problem:
            fail(writer, summary, row, "bad_row", row.problem, key)
        elif not row.label:
            message = f"row {row.row} ({row.recording_id}): empty label"
            fail(writer, summary, row, "empty_label", message, key)
        else:
            usable.append(row)
    return usable


def report_if_changed(rows: list[Row], writer: CacheWriter, summary: ExtractSummary) -> None:
    """A cached recording whose rows or file changed since: said, counted, never silent."""
    recording_id = rows[0].recording_id
    n_frames, fps = writer.done_frames[recording_id]
    cached = writer.done_segments.get(recording_id, set())
    for row in rows:
        bounds = row.frames(fps) or (0, n_frames)
        if (row.label, *bounds) not in cached and row_key(row) not in writer.failures:
            summary.relabelled += 1
            log.warning(
                "row %d: %s %r %s is not in the cache (label or segment changed since it was "
                "extracted); the cache keeps what it has: extract into a new cache to change it",
                row.row,
                recording_id,
                row.label,
                list(bounds),
            )
    path = rows[0].path
    if not path.exists():
        return
    if writer.done_stats.get(recording_id) == source_stat(path):
        return  # same size and time as when it was hashed: not re-hashed
    if source_sha256(path) != writer.done[recording_id]:
        summary.changed += 1
        log.warning(
            "%s changed since it was cached (its sha256 differs); the cache keeps the old "
            "features: extract into a new cache to use it",
            recording_id,
        )


class DecodeWorkers:
    """Threads that stream the jobs' clips into one bounded queue: ("clip", index, start,
    clip, valid), then ("done", index, Decoded) or ("failed", index, VideoError)."""

    def __init__(self, jobs: list[Job], extractor: Extractor, workers: int, capacity: int):
        self.jobs, self.extractor = jobs, extractor
        self.items: queue.Queue = queue.Queue(maxsize=capacity)
        self.stop = threading.Event()
        self._next = iter(range(len(jobs)))
        self._take = threading.Lock()
        self.threads = [
            threading.Thread(target=self._work, daemon=True, name=f"decode-{i}")
            for i in range(min(workers, max(len(jobs), 1)))
        ]
        for thread in self.threads:
            thread.start()

    def __iter__(self) -> Iterator[tuple]:
        running = len(self.threads)
        while running:
            item = self.items.get()
            if item[0] == "exit":
                running -= 1
            elif item[0] == "crashed":  # a fault outside any one recording: ends the job
                raise item[1]
            else:
                yield item

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=5)

    def _work(self) -> None:
        """Decode jobs until none is left; whatever escapes a job ends the extraction with
        its message (never a wait for a worker that died)."""
        try:
            while not self.stop.is_set():
                with self._take:
                    index = next(self._next, None)
                if index is None:
                    break
                self._decode(index)
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            self._put(("crashed", error))
        finally:
            self._put(("exit",))

    def _decode(self, index: int) -> None:
        for kind, *rest in job_events(self.jobs[index], self.extractor):
            if not self._put((kind, index, *rest)):
                return

    def _put(self, item: tuple) -> bool:
        """Queue an item, giving up (False) once the pipeline stops."""
        while not self.stop.is_set():
            try:
                self.items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False


def run_pipeline(
    jobs: list[Job],
    extractor: Extractor,
    writer: CacheWriter,
    config: ExtractConfig,
    summary: ExtractSummary,
    progress: Callable[[int], None],
) -> None:
    in_flight: dict[int, InFlight] = {}
    batch: list[tuple[int, np.ndarray]] = []

    def run_batch() -> None:
        started, built = time.perf_counter(), getattr(extractor.backbone, "build_seconds", 0.0)
        outputs = extractor.backbone.forward(np.stack([clip for _, clip in batch]))
        building = getattr(extractor.backbone, "build_seconds", 0.0) - built  # the first call
        summary.model_seconds += time.perf_counter() - started - building
        for (index, _), output in zip(batch, outputs):
            in_flight[index].features.append(output)
            in_flight[index].waiting -= 1
        touched = {index for index, _ in batch}
        batch.clear()
        for index in touched:
            finish(index)

    def finish(index: int) -> None:
        recording = in_flight[index]
        if recording.failed and not recording.waiting:
            del in_flight[index]
        elif recording.decoded is not None and not recording.waiting:
            store(recording, writer, config, summary)
            progress(len(recording.clip_start))
            del in_flight[index]

    workers = DecodeWorkers(jobs, extractor, config.decode_workers, 2 * config.batch_clips + 16)
    try:
        for kind, index, *rest in workers:
            recording = in_flight.setdefault(index, InFlight(jobs[index]))
            if kind == "clip":
                start, clip, valid = rest
                recording.clip_start.append(start)
                recording.clip_valid.append(valid)
                recording.waiting += 1
                batch.append((index, clip))
                if len(batch) >= config.batch_clips:
                    run_batch()
            elif kind == "done":
                recording.decoded = rest[0]
                finish(index)
            else:
                error = rest[0]
                recording.failed = True
                fail(writer, summary, recording.job.rows[0], error.reason, str(error))
                progress(0)
                finish(index)
        if batch:
            run_batch()
    finally:
        workers.close()
