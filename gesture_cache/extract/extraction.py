"""`extract`: a cache built (or resumed) from a meta CSV. The rows are read and planned
(recordings done or failed before are skipped, bad rows recorded), the extractor is built
once, and an engine (`local_engine`: threads on this machine; `ray_engine`: a Ray cluster)
turns the recordings into features that one writer stores.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

from tqdm.auto import tqdm

from gesture_cache.backbones.keras_backends import software_versions
from gesture_cache.cache.manifest import ExtractorRecord
from gesture_cache.cache.writer import CacheWriter
from gesture_cache.extract.config import ExtractConfig
from gesture_cache.extract.extractor import Extractor, extractor_from_config, resolved
from gesture_cache.extract.job import ExtractSummary, Job, fail, row_key
from gesture_cache.extract.local_engine import extract_locally
from gesture_cache.sources.meta import Row, conflicting_rows, read_meta
from gesture_cache.video.decode import source_sha256, source_stat
from gesture_cache.video.nvdec import package_version

log = logging.getLogger(__name__)


def in_part(recording_id: str, num_parts: int, part_index: int) -> bool:
    """Deterministic `--num-parts/--part-index` split by a hash of the recording id."""
    digest = hashlib.sha256(recording_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % num_parts == part_index


def build_cache(csv_path: str | Path, out: str | Path, config: ExtractConfig) -> ExtractSummary:
    """Extract every usable recording of the CSV into the cache at `out`, resuming if it
    exists."""
    started = time.perf_counter()
    config = resolved(config)
    if config.engine == "ray":
        from gesture_cache.extract.ray_engine import connect

        connect(config.ray_address)  # before anything is written
    rows = read_meta(csv_path, config.video_root, config.path_column, config.label_column)
    rows = [r for r in rows if in_part(r.recording_id, config.num_parts, config.part_index)]
    extractor = extractor_from_config(config)
    summary = ExtractSummary(
        setup_seconds=time.perf_counter() - started,
        network_in_decoding=extractor.backbone.network_in_stream,
        decode_workers=config.decode_workers,
        decoding=extractor.decoding,
    )
    log.info("decoding: %s", extractor.decoding)
    record = ExtractorRecord(
        extractor.spec,
        extractor.feature_dim,
        files=config.files(),
        software=software_versions(config.backend) | decoder_versions(extractor),
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
                building = extractor.backbone_build_seconds  # once, apart
                summary.pipeline_seconds = time.perf_counter() - pipeline_started - building
                bar.set_postfix_str(rates(summary))

            engine = extract_locally
            if config.engine == "ray":
                from gesture_cache.extract.ray_engine import extract_on_ray as engine
            engine(jobs, extractor, writer, config, summary, progress)
        summary.setup_seconds += extractor.backbone_build_seconds
        if extractor.nvdec is not None:
            summary.decoded_by_opencv = sum(extractor.nvdec.refused.values())
        summary.recordings_in_cache = writer.manifest["recordings"] + len(writer.pending)
        wanted = {r.recording_id for r in rows}
        summary.failures_recorded = sum(1 for k in writer.failures if k.split("#")[0] in wanted)
    summary.seconds = time.perf_counter() - started
    return summary


def decoder_versions(extractor: Extractor) -> dict[str, str]:
    """Which decoder the shards' recordings went through (OpenCV's version is recorded with
    every shard; with NVDEC, PyNvVideoCodec's too)."""
    if extractor.nvdec is None:
        return {"decoder": "opencv"}
    return {"decoder": "nvdec, opencv where it cannot", "pynvvideocodec": package_version()}


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
