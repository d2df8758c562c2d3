"""`gesture-cache detect`: many recordings, their outputs (events, windows, timelines,
videos) and, with --truth, their scores."""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from gesture_cache.cache.reader import Cache
from gesture_cache.common.errors import ConfigError, RunError
from gesture_cache.common.files import refuse_inputs
from gesture_cache.deploy.settings import DetectSettings
from gesture_cache.deploy.trained import Trained, load_trained
from gesture_cache.detect.detector import (
    Detection,
    Detector,
    detect_cached,
    detect_offline,
    detector_of,
)
from gesture_cache.detect.events import Event
from gesture_cache.detect.live import check_speed, detect_live, is_stream
from gesture_cache.video.decode import DEFAULT_FOLDER_FPS, Frames


def settings_record(settings: DetectSettings, detector: Detector) -> dict:
    return {**asdict(settings), "window": asdict(detector.window), "classes": detector.classes}


OUTPUT_FILES = ("events.csv", "recordings.csv", "windows.npz", "detection.json")


EVENT_COLUMNS = [
    "recording",
    "label",
    "start_frame",
    "end_frame",
    "start_time",
    "end_time",
    "fired_frame",
    "score",
]


@dataclass
class DetectionRun:
    detections: list[Detection]
    scores: dict | None
    out: Path


def output_stems(sources: list[str]) -> list[str]:
    """A file-name stem per source, unique among them: its name, or, where two sources share
    a name (a/rec.avi, b/rec.avi), its path with the separators replaced."""
    stems = [Path(s.rstrip("/")).stem or "recording" for s in sources]
    shared = {s for s in stems if stems.count(s) > 1}
    named = [
        re.sub(r"[^\w.-]+", "_", str(Path(s).with_suffix("")).strip("/."))
        if stem in shared
        else stem
        for s, stem in zip(sources, stems)
    ]
    return [n if named.count(n) == 1 else f"{n}-{i + 1}" for i, n in enumerate(named)]


def check_outputs(out: Path, outputs: list[Path], inputs: list[Path]) -> None:
    """No output may replace an input, and none may land inside a folder of frames or a cache
    that is read (a timeline PNG would become one of its frames)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder")
    refuse_inputs([out, *outputs], inputs)


def detect_sources(
    run_dir: str | Path,
    sources: list[str],
    out: str | Path,
    settings: DetectSettings,
    *,
    weights: str | None = None,
    random_weights: int | None = None,
    files: dict | None = None,
    cache_path: str | Path | None = None,
    realtime: bool = False,
    speed: float = 1.0,
    fps: float | None = None,
    truth: str | None = None,
    render: bool = False,
    on_event: Callable[[Event, float], None] | None = None,
    runtime: str | None = None,
    backend: str | None = None,
) -> DetectionRun:
    """Detect gestures in every source and write events.csv, recordings.csv, windows.npz,
    a timeline per recording, detection.json (settings, and scores with `truth`) and with
    `render` an .mp4 per recording. Everything that can be checked (settings, the run, the
    weights, the truth file, where outputs go) is checked before any work; files are
    rewritten after each recording, so a stop keeps what was found. `run_dir` may be a
    bundle (run with `runtime`, onnxruntime by default)."""
    from gesture_cache.common.files import write_json
    from gesture_cache.detect import scoring
    from gesture_cache.detect.timeline import plot_timeline

    check_sources(sources, cache_path, speed, fps, render)
    trained = load_trained(
        run_dir,
        weights=weights,
        random_weights=random_weights,
        files=files,
        runtime=runtime,
        with_extractor=not cache_path,
        backend=backend,
    )
    detector, extractor = detector_of(trained, run_dir), trained.extractor
    out = Path(out)
    stems = dict(zip(sources, output_stems(sources)))
    timelines = {s: out / f"{stem}.timeline.png" for s, stem in stems.items()}
    renders = {s: out / f"{stem}.detected.mp4" for s, stem in stems.items()} if render else {}
    inputs = [*trained.inputs]
    inputs += [Path(s) for s in sources if not cache_path and not is_stream(s)]
    inputs += [Path(p) for p in (truth, weights, cache_path, *(files or {}).values()) if p]
    outputs = [out / name for name in OUTPUT_FILES] + [*timelines.values(), *renders.values()]
    check_outputs(out, outputs, inputs)
    truth_rows = (
        scoring.truth_by_source(truth, sources, detector.classes, from_cache=bool(cache_path))
        if truth
        else None
    )
    cache = open_detection_cache(cache_path, trained, sources, run_dir) if cache_path else None
    if cache is None and not extractor.layout.streams:
        raise RunError(f"run {run_dir} was trained on fixed clips, not dense ones")
    out.mkdir(parents=True, exist_ok=True)
    record = {"settings": settings_record(settings, detector), "scores": None}
    write_json(out / "detection.json", record)
    detections: list[Detection] = []
    truths: list[pd.DataFrame] = []
    events = pd.DataFrame(columns=EVENT_COLUMNS)
    try:
        for source in sources:
            if cache is not None:
                detection = detect_cached(detector, cache, source, settings)
            elif realtime or is_stream(source):
                detection = detect_live(detector, extractor, source, settings, speed, on_event)
            else:
                detection = detect_offline(detector, extractor, source, settings, fps)
            detections.append(detection)
            events = write_outputs(out, detections, detector)
            mine = None
            if truth_rows is not None:
                mine = scoring.truth_frames(truth_rows[source], detection.recording, detection.fps)
                truths.append(mine)
            plot_timeline(detection, detector, timelines[source], mine)
            if render:
                render_video(detection, renders[source], fps)
            if detection.interrupted:
                raise KeyboardInterrupt
    finally:
        scores = None
        if detections and truth:
            recordings = pd.DataFrame([d.summary() for d in detections])
            scores = scoring.score(pd.concat(truths, ignore_index=True), events, recordings)
            write_json(out / "detection.json", {**record, "scores": scores})
    return DetectionRun(detections, scores, out)


def write_outputs(out: Path, detections: list[Detection], detector: Detector) -> pd.DataFrame:
    """events.csv, recordings.csv and windows.npz of the recordings so far; returns the
    events."""
    from gesture_cache.common.files import atomic_write

    events = pd.DataFrame([e.row() for d in detections for e in d.events], columns=EVENT_COLUMNS)
    atomic_write(out / "events.csv", events.to_csv(index=False).encode())
    recordings = pd.DataFrame([d.summary() for d in detections])
    atomic_write(out / "recordings.csv", recordings.to_csv(index=False).encode())
    arrays = {}
    for i, d in enumerate(detections):
        arrays[f"recording_{i}_clip_start"] = d.clip_start
        arrays[f"recording_{i}_probabilities"] = d.probabilities
    arrays["recordings"] = np.array([d.recording for d in detections])
    arrays["classes"] = np.array(detector.classes)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write(out / "windows.npz", buffer.getvalue())
    return events


def render_video(detection: Detection, path: Path, fps: float | None = None) -> None:
    """The recording (a file or a folder of frames) with the gesture of the moment written
    on it, written under a temporary name and renamed, never over its source."""
    temporary = path.with_name(f".{path.stem}.tmp{path.suffix}")
    writer = None
    try:
        for index, frame in enumerate(Frames(detection.path, None, fps)):
            if writer is None:
                height, width = frame.shape[:2]
                fourcc = cv2.VideoWriter_fourcc(*"mp4v")
                writer = cv2.VideoWriter(
                    str(temporary), fourcc, detection.fps or DEFAULT_FOLDER_FPS, (width, height)
                )
            label = next(
                (e.label for e in detection.events if e.start_frame <= index < e.end_frame), ""
            )
            if label:
                cv2.putText(frame, label, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 255, 0), 2)
            writer.write(frame)
    finally:
        if writer is not None:
            writer.release()
    if temporary.exists():
        temporary.replace(path)


def check_sources(
    sources: list[str], cache_path: str | Path | None, speed: float, fps: float | None, render: bool
) -> None:
    """The sources and the flags that go with them, before anything is loaded."""
    check_speed(speed)
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise ConfigError(f"--fps {fps}: give a frame rate above 0")
    duplicated = sorted({s for s in sources if sources.count(s) > 1})
    if duplicated:
        raise ConfigError(f"source {duplicated[0]!r} is given twice")
    missing = [s for s in sources if not cache_path and not is_stream(s) and not Path(s).exists()]
    if missing:
        raise ConfigError(f"source {missing[0]}: file not found")
    if render and cache_path:
        raise ConfigError("--render draws on the video itself; --cache holds features only")
    if render and any(is_stream(s) for s in sources):
        raise ConfigError("--render needs files or folders of frames, not cameras or URLs")


def open_detection_cache(
    cache_path: str | Path, trained: Trained, sources: list[str], run_dir: str | Path
) -> Cache:
    """The cache whose clips `--cache` reads: built by the run's extractor, holding every
    source (each a recording id)."""
    from gesture_cache.cache.verify import load_verified_cache

    cache = load_verified_cache(cache_path, 1e12)
    if cache.fingerprint != trained.fingerprint:
        raise ConfigError(
            f"cache {cache_path} was built with another extractor than {run_dir} "
            f"(fingerprint {cache.fingerprint[:12]} vs {trained.fingerprint[:12]})"
        )
    ids = cache.recordings["recording_id"].tolist()
    missing = [s for s in sources if s not in set(ids)]
    if missing:
        hint = " (with --cache, each SOURCE is a recording id of the cache, not a file)"
        raise ConfigError(
            f"cache {cache_path} does not hold {missing[0]!r}"
            + (hint if Path(missing[0]).exists() else "")
            + f"; it holds {len(ids)} recordings, e.g. {', '.join(map(repr, sorted(ids)[:3]))}"
        )
    return cache
