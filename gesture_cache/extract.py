"""The extraction job: CSV rows -> decode workers -> batched C3D -> shard writer.

Decoding runs in a thread pool (OpenCV releases the GIL) while the main thread feeds the
model batches of `batch_clips` clips drawn from several videos at once.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import cv2
import h5py
import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from gesture_cache import __version__, c3d
from gesture_cache.cache import CachedVideo, CacheWriter
from gesture_cache.config import ExtractConfig
from gesture_cache.errors import ConfigError
from gesture_cache.files import file_sha256
from gesture_cache.meta import VideoRow, read_meta, row_problem
from gesture_cache.video import (
    CLIP_LEN,
    CROP_SIZE,
    Layout,
    Preprocessing,
    Probe,
    VideoError,
    decode,
    make_preprocessing,
    to_clips,
)

# Bump whenever video.py or c3d.py changes what features come out for the same settings:
# it is part of the fingerprint, so an old cache is never resumed with new code.
FEATURES_VERSION = 2
FLOAT16_MAX = float(np.finfo(np.float16).max)
log = logging.getLogger(__name__)


class SetupError(ConfigError):
    """Settings that stop the job before any video is read."""


def software_versions() -> dict[str, str]:
    """The libraries that decide what a shard holds, recorded with every shard."""
    return {
        "gesture_cache": __version__,
        "opencv": cv2.__version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "h5py": h5py.__version__,
        "numpy": np.__version__,
    }


@dataclass
class ExtractSummary:
    cached: int = 0
    skipped: int = 0
    duplicate_rows: int = 0
    changed: int = 0  # cached videos whose file differs now
    relabelled: int = 0  # cached videos whose CSV label differs from the cache's
    short: int = 0  # cached videos that decode fewer frames than their container claims
    failed: Counter = field(default_factory=Counter)
    clips: int = 0
    seconds: float = 0.0
    setup_seconds: float = 0.0  # reading the CSV, building C3D, loading weights
    videos_in_cache: int = 0
    failures_recorded: int = 0

    @property
    def ok(self) -> bool:
        return self.videos_in_cache > 0


@dataclass
class Decoded:
    row: VideoRow
    sha256: str
    file_size: int
    file_mtime: float
    clips: np.ndarray  # (T, 16, 112, 112, 3) uint8
    mask: np.ndarray
    probe: Probe


class Extractor:
    """C3D with weights, cut at a layer, plus the layout and preprocessing that feed it:
    everything that turns a video file into a feature sequence (shared with `predict`).

    The network is built on the first `clip_features` call, so a job whose videos all fail
    to decode never pays for it."""

    def __init__(self, spec: dict, weights: str | None, mean_file: str | None = None):
        self.spec = spec
        self.weights, self.mean_file = weights, mean_file
        self.layout = Layout(spec["frames"], spec["clip_stride"], spec["sampling"], spec["pad"])
        known = {f.name for f in fields(Preprocessing)}  # old caches also named the mean file
        self.preprocessing = Preprocessing(
            **{
                k: tuple(v) if isinstance(v, list) else v
                for k, v in spec["preprocessing"].items()
                if k in known
            }
        )
        self.feature_dim = 4096
        self._forward: Callable | None = None

    def _build(self) -> Callable:
        spec = self.spec
        dtype = None if spec["precision"] == "float32" else spec["precision"]
        network = c3d.build_c3d(spec["pool5_pad"], dtype=dtype)
        if self.weights:
            c3d.load_keras2_weights(network, self.weights)
        else:
            c3d.randomize_weights(network, spec["weights"]["random_seed"])
        mean_cube = (
            c3d.load_mean_cube(self.mean_file, self.preprocessing) if self.mean_file else None
        )
        model = c3d.feature_extractor(network, spec["layer"], self.preprocessing, mean_cube)
        signature = [tf.TensorSpec((None, CLIP_LEN, CROP_SIZE, CROP_SIZE, 3), tf.uint8)]
        return tf.function(lambda clips: model(clips, training=False), input_signature=signature)

    def clip_features(self, clips: np.ndarray) -> np.ndarray:
        """uint8 clips (n, 16, 112, 112, 3) -> float32 features (n, D)."""
        if self._forward is None:
            self._forward = self._build()
        return self._forward(clips).numpy()

    def load(self, path: str | Path) -> tuple[np.ndarray, np.ndarray, Probe]:
        """A video file -> its clips (T, 16, 112, 112, 3) uint8, clip mask (T,) and probe."""
        frames, probe = decode(path, self.preprocessing)
        clips, mask = to_clips(frames, self.layout)
        return clips, mask, probe


def extractor_spec(config: ExtractConfig) -> dict:
    """What produced the features; its fingerprint decides whether a cache can be reused."""
    if (config.weights is None) == (config.random_weights is None):
        raise SetupError("give exactly one of --weights FILE.h5 or --random-weights SEED")
    if config.precision not in ("float32", "mixed_float16", "mixed_bfloat16"):
        raise SetupError(f"unknown --precision {config.precision!r}")
    if config.dtype not in ("float16", "float32"):
        raise SetupError(f"unknown --dtype {config.dtype!r}: use float16 or float32")
    if config.layer not in ("fc7", "fc6"):
        raise SetupError(f"unknown --layer {config.layer!r}: use fc7 or fc6")
    if config.mean_file and not Path(config.mean_file).is_file():
        raise SetupError(f"--mean-file {config.mean_file} does not exist")
    if config.weights:
        if not Path(config.weights).is_file():
            raise SetupError(f"--weights {config.weights} does not exist")
        weights = {"sha256": file_sha256(config.weights)}
    else:
        weights = {"random_seed": int(config.random_weights)}
    layout = Layout(config.frames, config.clip_stride, config.sampling, config.pad)
    preprocessing = make_preprocessing(config.preprocess, config.mean_file)
    if config.mean_file:
        c3d.load_mean_cube(config.mean_file, preprocessing)  # its shape, checked up front
    return {
        "model": "C3D Sports-1M (Keras)",
        "features_version": FEATURES_VERSION,
        "layer": config.layer,
        "weights": weights,
        "preprocessing": asdict(preprocessing),
        "frames": layout.frames,
        "clip_len": CLIP_LEN,
        "clip_stride": layout.clip_stride,
        "sampling": layout.sampling,
        "pad": layout.pad,
        "pool5_pad": config.pool5_pad,
        "precision": config.precision,
    }


def extractor_files(config: ExtractConfig) -> dict:
    """The names of the files the extractor read: metadata, never part of the fingerprint."""
    names = {"weights": config.weights, "mean_file": config.mean_file}
    return {k: Path(v).name for k, v in names.items() if v}


def in_partition(video_id: str, num_shards: int, shard_index: int) -> bool:
    """Deterministic `--num-shards/--shard-index` split by a hash of the video id."""
    digest = hashlib.sha256(video_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % num_shards == shard_index


def run_extraction(csv_path: str | Path, out: str | Path, config: ExtractConfig) -> ExtractSummary:
    """Extract every usable video of the CSV into the cache at `out`, resuming if it exists."""
    started = time.perf_counter()
    if not 0 <= config.shard_index < config.num_shards:
        raise SetupError(f"--shard-index {config.shard_index} is not in 0..{config.num_shards - 1}")
    for name in ("batch_clips", "decode_workers", "shard_size"):
        if getattr(config, name) < 1:
            raise SetupError(f"--{name.replace('_', '-')} must be at least 1")
    rows = read_meta(csv_path, config.video_root, config.path_column, config.label_column)
    rows = [r for r in rows if in_partition(r.video_id, config.num_shards, config.shard_index)]
    spec = extractor_spec(config)
    extractor = Extractor(spec, config.weights, config.mean_file)
    shape = (extractor.layout.num_clips, extractor.feature_dim)
    summary = ExtractSummary(setup_seconds=time.perf_counter() - started)
    files, software = extractor_files(config), software_versions()
    with CacheWriter(out, spec, shape, config.dtype, config.shard_size, files, software) as writer:
        todo = plan(rows, writer, config.retry_failed, summary)
        pipeline_started = time.perf_counter()
        with tqdm(total=len(todo), unit="video", desc="extract", dynamic_ncols=True) as bar:

            def on_video(clip_count: int) -> None:
                summary.clips += clip_count
                bar.update()
                elapsed = max(time.perf_counter() - pipeline_started, 1e-9)
                bar.set_postfix(clips_per_s=f"{summary.clips / elapsed:.2f}")

            run_pipeline(todo, extractor, writer, config, summary, on_video)
        summary.videos_in_cache = writer.manifest["videos"] + len(writer.pending)
        wanted = {r.video_id for r in rows}
        summary.failures_recorded = sum(1 for v in writer.failures if v in wanted)
    summary.seconds = time.perf_counter() - started
    return summary


def plan(
    rows: list[VideoRow], writer: CacheWriter, retry_failed: bool, summary: ExtractSummary
) -> list[VideoRow]:
    """Rows still to extract; bad rows become failures, done ones are skipped."""
    by_id: dict[str, list[VideoRow]] = {}
    for row in rows:
        by_id.setdefault(row.video_id, []).append(row)
    if retry_failed:
        writer.forget_failures(set(by_id))
    todo = []
    for video_id, same in by_id.items():
        row = same[0]
        summary.duplicate_rows += len(same) - 1
        if len(same) > 1:
            log.warning(
                "rows %s list the same video %r; it is cached once",
                ", ".join(str(r.row) for r in same),
                video_id,
            )
        if video_id in writer.done:
            summary.skipped += 1
            report_if_changed(row, writer, summary)
        elif video_id in writer.failures:
            summary.skipped += 1
        elif problem := row_problem(row):
            fail(writer, summary, row, "bad_text", problem)
        elif not video_id:
            fail(writer, summary, row, "empty_path", f"row {row.row}: the path is empty")
        elif not row.label:
            fail(writer, summary, row, "empty_label", f"row {row.row} ({video_id}): empty label")
        elif len({r.label for r in same}) > 1:
            fail(
                writer,
                summary,
                row,
                "conflicting_labels",
                f"rows {', '.join(str(r.row) for r in same)} give {video_id!r} different labels",
            )
        else:
            todo.append(row)
    return todo


def report_if_changed(row: VideoRow, writer: CacheWriter, summary: ExtractSummary) -> None:
    """A cached video whose CSV label or file changed since: said, counted, never silent."""
    cached_label = writer.done_labels.get(row.video_id)
    if cached_label is not None and cached_label != row.label:
        summary.relabelled += 1
        log.warning(
            "row %d: %s is labelled %r in the CSV but %r in the cache; the cache keeps its "
            "label: extract into a new cache to relabel",
            row.row,
            row.video_id,
            row.label,
            cached_label,
        )
    if not row.path.is_file():
        return
    stat = row.path.stat()
    if writer.done_stats.get(row.video_id) == (stat.st_size, stat.st_mtime):
        return  # same size and time as when it was hashed: not re-hashed
    if file_sha256(row.path) != writer.done[row.video_id]:
        summary.changed += 1
        log.warning(
            "%s changed since it was cached (its sha256 differs); the cache "
            "keeps the old features: extract into a new cache to use it",
            row.video_id,
        )


def fail(
    writer: CacheWriter, summary: ExtractSummary, row: VideoRow, reason: str, message: str
) -> None:
    summary.failed[reason] += 1
    writer.record_failure(
        {
            "video_id": row.video_id,
            "row": row.row,
            "label": row.label,
            "reason": reason,
            "message": message,
        }
    )


def load_row(row: VideoRow, extractor: Extractor) -> Decoded | VideoError:
    """Decode one row (runs in a worker thread); a bad video is returned, not raised.

    The file is hashed before and after decoding: a file replaced meanwhile is a failure,
    so a cached sha256 always names the content that was decoded."""
    try:
        stat = row.path.stat() if row.path.is_file() else None
        before = file_sha256(row.path) if stat else None
        clips, mask, probe = extractor.load(row.path)
        if file_sha256(row.path) != before or row.path.stat().st_mtime != stat.st_mtime:
            raise VideoError("changed_while_reading", f"{row.path}: the file changed while read")
        return Decoded(
            row=row,
            sha256=before,
            file_size=stat.st_size,
            file_mtime=stat.st_mtime,
            clips=clips,
            mask=mask,
            probe=probe,
        )
    except VideoError as error:
        return error
    except Exception as error:  # noqa: BLE001 - any decoder crash is this video's failure
        return VideoError("decode_error", f"{row.path}: {type(error).__name__}: {error}")


def run_pipeline(
    todo: list[VideoRow],
    extractor: Extractor,
    writer: CacheWriter,
    config: ExtractConfig,
    summary: ExtractSummary,
    on_video: Callable[[int], None],
) -> None:
    batcher = ClipBatcher(extractor.clip_features, config.batch_clips)
    with ThreadPoolExecutor(config.decode_workers) as pool:
        loaded = ordered_map(
            pool, lambda row: load_row(row, extractor), todo, ahead=2 * config.decode_workers + 2
        )
        for row, result in zip(todo, loaded):
            if isinstance(result, VideoError):
                fail(writer, summary, row, result.reason, str(result))
                on_video(0)
                continue
            for decoded, features in batcher.add(result):
                store(decoded, features, writer, config, summary, on_video)
        for decoded, features in batcher.finish():
            store(decoded, features, writer, config, summary, on_video)


def store(
    decoded: Decoded,
    features: np.ndarray,
    writer: CacheWriter,
    config: ExtractConfig,
    summary: ExtractSummary,
    on_video: Callable[[int], None],
) -> None:
    row, probe = decoded.row, decoded.probe
    shortfall = probe.claimed_frames > probe.decoded_frames
    if shortfall and config.strict:
        fail(
            writer,
            summary,
            row,
            "frame_shortfall",
            f"{row.path}: the container claims {probe.claimed_frames} frames but only "
            f"{probe.decoded_frames} decode (--strict)",
        )
    elif not np.isfinite(features).all():
        fail(writer, summary, row, "nonfinite_features", f"{row.path}: C3D gave inf or NaN")
    elif config.dtype == "float16" and np.abs(features).max() > FLOAT16_MAX:
        fail(
            writer,
            summary,
            row,
            "float16_overflow",
            f"{row.path}: features reach {np.abs(features).max():.3g}, beyond float16; "
            "use --dtype float32",
        )
    else:
        writer.add(
            CachedVideo(
                video_id=row.video_id,
                label=row.label,
                group=row.group,
                video_sha256=decoded.sha256,
                features=features,
                mask=decoded.mask,
                n_frames=probe.decoded_frames,
                fps=probe.fps,
                height=probe.height,
                width=probe.width,
                claimed_frames=probe.claimed_frames,
                file_size=decoded.file_size,
                file_mtime=decoded.file_mtime,
                extra=row.extra,
            )
        )
        summary.cached += 1
        if shortfall:
            summary.short += 1
            log.warning(
                "%s: the container claims %d frames, %d decode; cached what decodes",
                row.path,
                probe.claimed_frames,
                probe.decoded_frames,
            )
    on_video(len(decoded.mask))


class ClipBatcher:
    """Batches clips from consecutive videos into model calls of `batch_clips` and hands back
    each video, in order, once all its clips have features."""

    def __init__(self, forward: Callable[[np.ndarray], np.ndarray], batch_clips: int):
        self.forward, self.batch_clips = forward, batch_clips
        self.waiting: deque[tuple[Decoded, list[np.ndarray]]] = deque()
        self.queue: deque[tuple[np.ndarray, list[np.ndarray]]] = deque()  # clip, its video's list

    def add(self, decoded: Decoded) -> list[tuple[Decoded, np.ndarray]]:
        features: list[np.ndarray] = []
        self.waiting.append((decoded, features))
        self.queue.extend((clip, features) for clip in decoded.clips)
        while len(self.queue) >= self.batch_clips:
            self._run(self.batch_clips)
        return self._finished()

    def finish(self) -> list[tuple[Decoded, np.ndarray]]:
        while self.queue:
            self._run(min(len(self.queue), self.batch_clips))
        return self._finished()

    def _run(self, n: int) -> None:
        batch = [self.queue.popleft() for _ in range(n)]
        outputs = self.forward(np.stack([clip for clip, _ in batch]))
        for (_, features), output in zip(batch, outputs):
            features.append(output)

    def _finished(self) -> list[tuple[Decoded, np.ndarray]]:
        finished = []
        while self.waiting and len(self.waiting[0][1]) == len(self.waiting[0][0].clips):
            decoded, features = self.waiting.popleft()
            finished.append((decoded, np.stack(features)))
        return finished


def ordered_map(
    pool: ThreadPoolExecutor, function: Callable, items: Iterable, ahead: int
) -> Iterator:
    """`pool.map` that keeps at most `ahead` items in flight (bounded memory)."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(function, item))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
