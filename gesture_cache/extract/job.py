"""What every extraction engine shares (the local threads of `local.py` and the Ray tasks
of `ray_engine.py`): a recording's job, its decoding as a stream of events, the checks of a
finished recording, its segments and its place in the cache, and the failures."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gesture_cache.cache.manifest import CachedRecording, Segment
from gesture_cache.cache.writer import CacheWriter
from gesture_cache.extract.config import ExtractConfig
from gesture_cache.extract.extractor import Extractor
from gesture_cache.sources.meta import Row, segment_problem
from gesture_cache.video.decode import Probe, VideoError, source_sha256, source_stat

FLOAT16_MAX = float(np.finfo(np.float16).max)


log = logging.getLogger(__name__)


@dataclass
class ExtractSummary:
    cached: int = 0
    skipped: int = 0
    duplicate_rows: int = 0
    changed: int = 0  # cached recordings whose file differs now
    relabelled: int = 0  # rows whose label or segment is not what the cache holds
    short: int = 0  # cached recordings that decode fewer frames than their container claims
    overlaps: int = 0  # pairs of overlapping segments with different labels
    failed: Counter = field(default_factory=Counter)
    clips: int = 0
    seconds: float = 0.0
    setup_seconds: float = 0.0  # reading the CSV, building the backbone
    model_seconds: float = 0.0  # inside the backbone's forward (local engine)
    pipeline_seconds: float = 0.0  # from the first decode to the last write
    network_in_decoding: bool = False  # the backbone's network runs in the decode workers
    decode_workers: int = 0
    decoding: str = ""  # which decoder, in words
    decoded_by_opencv: int = 0  # recordings NVDEC could not open
    recordings_in_cache: int = 0
    failures_recorded: int = 0

    @property
    def ok(self) -> bool:
        return self.recordings_in_cache > 0


@dataclass
class Job:
    """One recording to extract and the rows that label it."""

    recording_id: str
    path: Path
    rows: list[Row]
    fps: float | None  # for folders of frames


@dataclass
class Decoded:
    """What a decode worker learned of a recording once its last clip was out."""

    sha256: str
    file_size: int
    file_mtime: float
    probe: Probe


def row_key(row: Row) -> str:
    return f"{row.recording_id}#{row.row}"


def fail(
    writer: CacheWriter,
    summary: ExtractSummary,
    row: Row,
    reason: str,
    message: str,
    key: str | None = None,
) -> None:
    """Record a failure of a whole recording (key: its id) or of one row (`id#row`)."""
    summary.failed[reason] += 1
    writer.record_failure(
        {
            "key": key or row.recording_id,
            "recording_id": row.recording_id,
            "row": row.row,
            "label": row.label,
            "reason": reason,
            "message": message,
        }
    )


def job_events(
    job: Job, extractor: Extractor, stack: Callable[[Sequence[np.ndarray]], Any] = np.stack
) -> Iterator[tuple]:
    """A recording as events: ("clip", start, clip, valid) for each clip, then
    ("done", Decoded) or ("failed", VideoError). Local threads and Ray tasks both use it;
    `stack` makes each clip of its frames (`stream_clips`).
    The source is hashed before and after decoding: one replaced meanwhile is a failure, so
    a cached sha256 always names the content that was decoded."""
    try:
        frames = extractor.frames(job.path, job.fps)  # checks that the source can be read
        size, mtime = source_stat(job.path)
        sha256 = source_sha256(job.path)
        for start, clip, valid in extractor.clips(frames, stack):
            yield ("clip", start, clip, valid)
        if source_stat(job.path) != (size, mtime) or source_sha256(job.path) != sha256:
            raise VideoError("changed_while_reading", f"{job.path}: the file changed while read")
        yield ("done", Decoded(sha256, size, mtime, frames.probe))
    except VideoError as error:
        yield ("failed", error)
    except Exception as error:  # noqa: BLE001 - any decoder crash is this recording's failure
        yield ("failed", VideoError("decode_error", f"{job.path}: {type(error).__name__}: {error}"))


@dataclass
class InFlight:
    """A recording whose clips are being computed."""

    job: Job
    clip_start: list[int] = field(default_factory=list)
    clip_valid: list[bool] = field(default_factory=list)
    features: list[np.ndarray] = field(default_factory=list)
    waiting: int = 0  # clips handed to the batch, not computed yet
    decoded: Decoded | None = None  # set when its last clip is out
    failed: bool = False


def store(
    recording: InFlight, writer: CacheWriter, config: ExtractConfig, summary: ExtractSummary
) -> None:
    """Check a finished recording, turn its rows into segments, hand it to the writer."""
    job, decoded = recording.job, recording.decoded
    probe, first = decoded.probe, job.rows[0]
    features = np.stack(recording.features)
    if probe.claimed_frames > probe.decoded_frames and config.strict:
        message = (
            f"{job.path}: the container claims {probe.claimed_frames} frames but only "
            f"{probe.decoded_frames} decode (--strict)"
        )
        return fail(writer, summary, first, "frame_shortfall", message)
    if not np.isfinite(features).all():
        return fail(writer, summary, first, "nonfinite_features", f"{job.path}: inf or NaN")
    if config.dtype == "float16" and np.abs(features).max() > FLOAT16_MAX:
        message = (
            f"{job.path}: features reach {np.abs(features).max():.3g}, beyond float16; "
            "use --dtype float32"
        )
        return fail(writer, summary, first, "float16_overflow", message)
    segments = row_segments(job, probe, writer, summary)
    if not segments:
        return  # every row failed, each recorded
    report_overlaps(job, segments, summary)
    writer.add(
        CachedRecording(
            recording_id=job.recording_id,
            sha256=decoded.sha256,
            features=features,
            clip_start=np.array(recording.clip_start, np.int64),
            clip_valid=np.array(recording.clip_valid, bool),
            segments=segments,
            n_frames=probe.decoded_frames,
            fps=probe.fps,
            height=probe.height,
            width=probe.width,
            claimed_frames=probe.claimed_frames,
            file_size=decoded.file_size,
            file_mtime=decoded.file_mtime,
        )
    )
    summary.cached += 1
    if len(probe.sizes) > 1:
        log.warning(
            "%s: frames of mixed sizes (%s), each resized to the model's input; cached",
            job.path,
            probe.sizes_text(),
        )
    if probe.claimed_frames > probe.decoded_frames:
        summary.short += 1
        log.warning(
            "%s: the container claims %d frames, %d decode; cached what decodes",
            job.path,
            probe.claimed_frames,
            probe.decoded_frames,
        )


def row_segments(
    job: Job, probe: Probe, writer: CacheWriter, summary: ExtractSummary
) -> list[Segment]:
    """Each row's segment in frames; a row outside the recording is a row failure."""
    segments = []
    for row in job.rows:
        (start, end), problem = segment_problem(row, probe.decoded_frames, probe.fps)
        if problem:
            fail(writer, summary, row, "bad_segment", problem, row_key(row))
            continue
        segments.append(Segment(row.label, start, end, row.group, row.row, row.extra))
    return segments


def report_overlaps(job: Job, segments: list[Segment], summary: ExtractSummary) -> None:
    ordered = sorted(segments, key=lambda s: s.start_frame)
    for i, a in enumerate(ordered):
        for b in ordered[i + 1 :]:
            if b.start_frame >= a.end_frame:
                break
            if a.label != b.label:
                summary.overlaps += 1
                log.warning(
                    "%s: rows %d (%s) and %d (%s) overlap with different labels",
                    job.recording_id,
                    a.row,
                    a.label,
                    b.row,
                    b.label,
                )
