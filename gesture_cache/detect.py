"""Gestures in continuous video: sliding windows, smoothing, hysteresis, live sources.

A run trained with a background class slides its window over a recording's clips: one
window per clip, centred on it (T clips `step` apart, the same windows training drew, shifted
inside the recording at its ends). Each window's class probabilities are smoothed with a
causal moving average and turned into events by hysteresis: a gesture fires when its
smoothed probability reaches `on` (and leads the other gestures), and ends when it falls
below `off`; events of one label closer than `min_gap` frames are merged.

Offline, a recording's clips come from the extractor (or from a cache that holds it). Live,
frames are read as they arrive into the extractor's ring buffer, a clip every stride goes to
C3D through a one-slot queue (a clip that finds it full replaces the waiting one, and is
counted as skipped), and events are reported the moment they fire.
"""

from __future__ import annotations

import io
import itertools
import logging
import math
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from gesture_cache.clips import CLIP_LEN, stream_clips
from gesture_cache.config import DetectSettings
from gesture_cache.errors import ConfigError, RunError
from gesture_cache.files import refuse_inputs
from gesture_cache.interrupts import acted_on
from gesture_cache.trained import Trained, load_trained
from gesture_cache.video import Frames, prepare_frame, read_capture
from gesture_cache.windows import Window, windows

log = logging.getLogger(__name__)


@dataclass
class Event:
    recording: str
    label: str
    start_frame: int
    end_frame: int  # exclusive
    fired_frame: int  # the last frame the window that fired it had seen
    score: float  # the highest smoothed probability while it lasted
    fps: float = 0.0

    def row(self) -> dict:
        seconds = (lambda f: round(f / self.fps, 3)) if self.fps else (lambda f: None)
        return {
            "recording": self.recording,
            "label": self.label,
            "start_frame": self.start_frame,
            "end_frame": self.end_frame,
            "start_time": seconds(self.start_frame),
            "end_time": seconds(self.end_frame),
            "fired_frame": self.fired_frame,
            "score": round(self.score, 4),
        }


class EventTracker:
    """Smoothing and hysteresis over windows, one at a time, in order (offline and live)."""

    def __init__(
        self,
        recording: str,
        classes: list[str],
        background: str,
        settings: DetectSettings,
        half_stride: int,
        fps: float,
    ):
        self.recording, self.classes, self.settings = recording, classes, settings
        self.gestures = [i for i, c in enumerate(classes) if c != background]
        self.half, self.fps = half_stride, fps
        # a causal moving average of L windows lags (L - 1) / 2 windows behind them
        self.lag = (settings.smoothing - 1) * half_stride
        self.recent: deque[np.ndarray] = deque(maxlen=settings.smoothing)
        self.active: dict | None = None
        self.events: list[Event] = []

    def update(self, centre: int, seen: int, probabilities: np.ndarray) -> Event | None:
        """One window (centred on frame `centre`, its last frame `seen`); returns the event
        that fired with it, if one did."""
        centre -= self.lag  # where the smoothed evidence is centred
        self.recent.append(probabilities)
        smoothed = np.mean(self.recent, axis=0)
        best = max(self.gestures, key=lambda i: smoothed[i])
        fired = None
        if self.active and smoothed[self.active["class"]] < self.settings.off:
            self._close()
        if self.active:
            self.active["end"] = centre + self.half
            self.active["score"] = max(self.active["score"], float(smoothed[self.active["class"]]))
        elif smoothed[best] >= self.settings.on:
            fired = self._open(best, centre, seen, float(smoothed[best]))
        return fired

    def finish(self) -> list[Event]:
        if self.active:
            self._close()
        return self.events

    def _open(self, index: int, centre: int, seen: int, score: float) -> Event | None:
        label = self.classes[index]
        last = self.events[-1] if self.events else None
        if (
            last
            and last.label == label
            and centre - self.half - last.end_frame <= self.settings.min_gap
        ):
            self.events.pop()  # the same gesture again after a short dip: one event
            self.active = {
                "class": index,
                "start": last.start_frame,
                "end": centre + self.half,
                "fired": last.fired_frame,
                "score": max(last.score, score),
            }
            return None
        self.active = {
            "class": index,
            "start": max(centre - self.half, 0),
            "end": centre + self.half,
            "fired": seen,
            "score": score,
        }
        return Event(
            self.recording, label, self.active["start"], centre + self.half, seen, score, self.fps
        )

    def _close(self) -> None:
        a = self.active
        self.events.append(
            Event(
                self.recording,
                self.classes[a["class"]],
                a["start"],
                a["end"],
                a["fired"],
                a["score"],
                self.fps,
            )
        )
        self.active = None


@dataclass
class Detector:
    """A trained run, ready to classify windows of clip features."""

    classify: Callable[[np.ndarray, np.ndarray], np.ndarray]  # windows, masks -> probabilities
    classes: list[str]
    background: str
    window: Window
    dtype: str  # features are rounded to the cache's storage type, as training saw them

    def probabilities(self, features: np.ndarray, centres: np.ndarray) -> np.ndarray:
        """Class probabilities (len(centres), C) of the windows centred on these clips of
        one recording's clip features (K, D)."""
        count = np.full(len(centres), len(features))
        positions, mask = windows(
            centres, centres + 1, np.ones(len(features), bool), self.window,
            rec_lo=np.zeros(len(centres), np.int64), rec_hi=count,
        )  # fmt: skip
        stored = features.astype(self.dtype).astype(np.float32)
        return self.classify(stored[positions], mask)

    @property
    def span(self) -> int:
        """Clips from a window's first to its last."""
        return (self.window.clips - 1) * self.window.step + 1

    def last_clip(self, centre: int, clips: int) -> int:
        """The last clip the window centred on `centre` reads, of a recording of `clips`."""
        after = (self.window.clips - 1 - self.window.clips // 2) * self.window.step
        return min(max(centre + after, self.span - 1), clips - 1)

    def probabilities_at(self, features: list[np.ndarray], centre: int) -> np.ndarray:
        """The window centred on `centre` from the clips so far (live): only the clips it can
        read are stacked, and it reads what the offline window over the same clips reads."""
        half = (self.window.clips // 2) * self.window.step
        base = max(0, min(centre - half, len(features) - self.span))
        return self.probabilities(np.stack(features[base:]), np.array([centre - base]))[0]


def detector_of(trained: Trained, name: str | Path) -> Detector:
    """The trained run as a detector; refused when it was trained without a background class
    or with windows that are not consecutive clips (what sliding needs)."""
    if trained.background_label is None and trained.background_asked:
        raise RunError(
            f"{name} was trained with --background, but its cache had no background "
            "stretches, so it has no background class: annotate continuous recordings with "
            "segments (frames no segment covers are background) and train again"
        )
    if trained.background_label is None:
        raise RunError(
            f"{name} was trained without a background class, so it cannot tell when no "
            "gesture happens; train with --background on continuous recordings annotated "
            "with segments (frames no segment covers are background), and --window-step 1"
        )
    if trained.window is None or trained.window.step is None:
        raise RunError(
            f"{name} spread its windows over whole segments; detection slides windows "
            "of consecutive clips: train with --window-step 1 (--window-sampling random)"
        )
    return Detector(
        trained.classify, trained.classes, trained.background_label, trained.window, trained.dtype
    )


def load_detector(run_dir: str | Path) -> Detector:
    """A run folder's (or a bundle's) detector."""
    return detector_of(load_trained(run_dir, with_extractor=False), run_dir)


@dataclass
class Detection:
    """One recording's detection."""

    recording: str
    path: str  # the file or folder read (absolute); a camera or URL as given; a cache's id
    events: list[Event]
    clip_start: np.ndarray
    probabilities: np.ndarray  # (clips, C), one window per clip
    n_frames: int
    fps: float
    skipped: int = 0  # clips dropped because C3D fell behind (live)
    seconds: dict = field(default_factory=dict)  # decode+C3D, classifier
    interrupted: bool = False  # Ctrl-C ended a live run; what came before is kept
    source: str = "file"  # file (or folder of frames), stream (camera, URL) or cache

    def summary(self) -> dict:
        total = sum(self.seconds.values())
        return {
            "recording": self.recording,
            "path": self.path,
            "source": self.source,
            "n_frames": self.n_frames,
            "fps": self.fps,
            "clips": len(self.clip_start),
            "events": len(self.events),
            "skipped_clips": self.skipped,
            "ms_per_frame": 1000 * total / max(self.n_frames, 1),
        }


def events_of(
    detector: Detector,
    recording: str,
    clip_start: np.ndarray,
    probabilities: np.ndarray,
    settings: DetectSettings,
    fps: float,
) -> list[Event]:
    """Events of a whole recording from its windows' probabilities (offline)."""
    stride = int(np.median(np.diff(clip_start))) if len(clip_start) > 1 else CLIP_LEN
    tracker = EventTracker(
        recording, detector.classes, detector.background, settings, max(stride // 2, 1), fps
    )
    for p, probs in enumerate(probabilities):
        seen = int(clip_start[detector.last_clip(p, len(clip_start))]) + CLIP_LEN
        tracker.update(int(clip_start[p]) + CLIP_LEN // 2, seen, probs)
    return tracker.finish()


def detect_offline(
    detector: Detector,
    extractor,
    source: str,
    settings: DetectSettings,
    fps: float | None = None,
) -> Detection:
    started = time.perf_counter()
    clips = extractor.features(source, fps)
    decoded = time.perf_counter()
    probabilities = detector.probabilities(clips.features, np.arange(len(clips.clip_start)))
    classified = time.perf_counter()
    probe = clips.probe
    events = events_of(detector, source, clips.clip_start, probabilities, settings, probe.fps)
    return Detection(
        source,
        str(Path(source).resolve()),
        events,
        clips.clip_start,
        probabilities,
        probe.decoded_frames,
        probe.fps,
        seconds={"decode_and_c3d": decoded - started, "classifier": classified - decoded},
    )


def detect_cached(detector: Detector, cache, recording: str, settings: DetectSettings) -> Detection:
    """Detection over a recording a cache already holds (no decoding, no C3D)."""
    ids = list(cache.recordings["recording_id"])
    if recording not in ids:
        raise ConfigError(f"cache {cache.path} does not hold {recording!r}")
    i = ids.index(recording)
    lo = int(cache.recordings["clip_offset"][i])
    hi = lo + int(cache.recordings["clip_count"][i])
    fps = float(cache.recordings["fps"][i])
    started = time.perf_counter()
    features = cache.features[lo:hi].astype(np.float32)
    probabilities = detector.probabilities(features, np.arange(hi - lo))
    events = events_of(detector, recording, cache.clip_start[lo:hi], probabilities, settings, fps)
    return Detection(
        recording,
        recording,
        events,
        cache.clip_start[lo:hi],
        probabilities,
        int(cache.recordings["n_frames"][i]),
        fps,
        seconds={"classifier": time.perf_counter() - started},
        source="cache",
    )


# --- live -----------------------------------------------------------------------------------


def is_camera(source: str) -> bool:
    """A camera index: ASCII digits only ("٣" and "²" are file names, not cameras)."""
    return source.isascii() and source.isdigit()


def is_stream(source: str) -> bool:
    """A camera index ("0") or a URL: frames arrive at their own pace and cannot be re-read."""
    return is_camera(source) or "://" in source


def open_source(source: str, fps: float | None = None) -> tuple[Iterator[np.ndarray], float]:
    """The raw BGR frames of a file, a folder of frames, a camera index ("0") or any URL
    OpenCV opens, and their frame rate (30 when the source gives none)."""
    if not is_stream(source):
        frames = Frames(source, None, fps)  # a missing or empty source is a VideoError
        iterator = iter(frames)
        first = next(iterator, None)  # a video's frame rate is known once it is open
        rate = frames.probe.fps or 30.0
        return (itertools.chain([first], iterator) if first is not None else iter(())), rate
    capture = cv2.VideoCapture(int(source) if is_camera(source) else source)
    if not capture.isOpened():
        what = "camera" if is_camera(source) else "source"
        raise ConfigError(f"{what} {source!r} cannot be opened")
    return read_capture(capture), float(capture.get(cv2.CAP_PROP_FPS) or 0) or 30.0


def paced_frames(
    frames: Iterator[np.ndarray], fps: float, speed: float, stop: threading.Event, paced: bool
) -> Iterator[tuple[np.ndarray, float]]:
    """(frame, the time it arrived): a file is played at its frame rate times `speed`, as a
    camera would deliver it; a stream or camera delivers at its own pace."""
    started = time.perf_counter()
    for index, frame in enumerate(frames):
        if stop.is_set():
            return
        if paced:
            due = started + index / (fps * speed)
            time.sleep(max(due - time.perf_counter(), 0))
        yield frame, time.perf_counter()


def detect_live(
    detector: Detector,
    extractor,
    source: str,
    settings: DetectSettings,
    speed: float = 1.0,
    on_event: Callable[[Event, float], None] | None = None,
    stop: threading.Event | None = None,
) -> Detection:
    """Detection while frames arrive. Clips wait in a one-slot queue: when C3D is still busy
    with the previous clip, the waiting one is replaced and counted as skipped, so the
    detector never falls further behind. `on_event(event, latency_s)` is called the moment
    an event fires; `stop` (or Ctrl-C) ends the stream and keeps what was found."""
    check_speed(speed)
    source_frames, fps = open_source(source)
    paced = not is_stream(source)
    stop = stop or threading.Event()
    slot: queue.Queue = queue.Queue(maxsize=1)
    skipped = [0]
    crashed: list[BaseException] = []
    arrival: dict[int, float] = {}
    n_frames = [0]
    preprocessing = extractor.backbone.preprocessing

    def read() -> None:
        """Frames to clips to the slot; whatever goes wrong here ends the command with its
        message (re-raised by the main thread), never a wait for a clip that cannot come."""

        def frames() -> Iterator[np.ndarray]:
            for frame, at in paced_frames(source_frames, fps, speed, stop, paced):
                arrival[n_frames[0]] = at
                n_frames[0] += 1
                yield prepare_frame(frame, preprocessing)

        try:
            for start, clip in stream_clips(frames(), extractor.layout.clip_stride):
                offer(slot, (start, clip), skipped)
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            crashed.append(error)
        finally:
            slot.put(None)

    reader = threading.Thread(target=read, daemon=True, name="live-reader")
    reader.start()
    starts, features = [], []
    tracker = EventTracker(
        source, detector.classes, detector.background, settings,
        max(extractor.layout.clip_stride // 2, 1), fps,
    )  # fmt: skip
    probabilities, done, interrupted = [], 0, False
    seconds = {"c3d": 0.0, "classifier": 0.0}

    def classify(final: bool) -> None:
        """Every window whose clips are all here (at the end: every window left)."""
        nonlocal done
        while done < len(starts) and (final or detector.last_clip(done, 10**12) < len(starts)):
            t0 = time.perf_counter()
            probs = detector.probabilities_at(features, done)
            seconds["classifier"] += time.perf_counter() - t0
            probabilities.append(probs)
            seen = starts[detector.last_clip(done, len(starts))] + CLIP_LEN
            event = tracker.update(starts[done] + CLIP_LEN // 2, seen, probs)
            if event and on_event:
                latency = time.perf_counter() - arrival.get(seen - 1, time.perf_counter())
                on_event(event, latency if not final else 0.0)
            done += 1

    try:
        while (item := slot.get()) is not None:
            start, clip = item
            t0 = time.perf_counter()
            features.append(extractor.backbone.forward(clip[None])[0])
            seconds["c3d"] += time.perf_counter() - t0
            starts.append(start)
            classify(final=False)
    except BaseException as error:
        if not acted_on(error):
            raise
        interrupted = True
        log.warning("interrupted: keeping the events found so far")
    finally:
        stop.set()
    if crashed:
        raise crashed[0]  # the reader's own error, in the main thread
    classify(final=True)
    return Detection(
        source,
        source if not paced else str(Path(source).resolve()),
        tracker.finish(),
        np.array(starts, np.int64),
        np.array(probabilities).reshape(len(probabilities), len(detector.classes)),
        n_frames[0],
        fps,
        skipped=skipped[0],
        seconds=seconds,
        interrupted=interrupted,
        source="file" if paced else "stream",
    )


def offer(slot: queue.Queue, item: tuple, skipped: list[int]) -> None:
    """Put `item` in the one-slot queue, replacing (and counting) a clip still waiting."""
    try:
        slot.put_nowait(item)
    except queue.Full:
        try:
            slot.get_nowait()
            skipped[0] += 1
        except queue.Empty:
            pass
        slot.put_nowait(item)


def check_speed(speed: float) -> None:
    if not (math.isfinite(speed) and speed > 0):
        raise ConfigError(f"--speed {speed}: give a playback rate above 0")


def settings_record(settings: DetectSettings, detector: Detector) -> dict:
    return {**asdict(settings), "window": asdict(detector.window), "classes": detector.classes}


# --- a detection run: sources in, files out ----------------------------------------------------

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


def run_detection(
    run_dir: str | Path,
    sources: list[str],
    out: str | Path,
    settings: DetectSettings,
    *,
    weights: str | None = None,
    random_weights: int | None = None,
    mean_file: str | None = None,
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
    from gesture_cache import scoring
    from gesture_cache.files import write_json
    from gesture_cache.timeline import plot_timeline

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
    trained = load_trained(
        run_dir,
        weights,
        random_weights,
        mean_file,
        runtime,
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
    inputs += [Path(p) for p in (truth, weights, mean_file, cache_path) if p]
    outputs = [out / name for name in OUTPUT_FILES] + [*timelines.values(), *renders.values()]
    check_outputs(out, outputs, inputs)
    if truth:
        keys = {s: s if cache_path else str(Path(s).resolve()) for s in sources}
        scoring.check_truth(truth, keys, detector.classes, from_cache=bool(cache_path))
    cache = None
    if cache_path:
        from gesture_cache.integrity import load_verified_cache

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
    elif not extractor.layout.streams:
        raise RunError(f"run {run_dir} was trained on fixed clips, not dense ones")
    out.mkdir(parents=True, exist_ok=True)
    record = {"settings": settings_record(settings, detector), "scores": None}
    write_json(out / "detection.json", record)
    detections: list[Detection] = []
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
            plot_timeline(detection, detector.classes, detector.background, timelines[source])
            if render:
                render_video(detection, renders[source], fps)
            if detection.interrupted:
                raise KeyboardInterrupt
    finally:
        scores = None
        if detections and truth:
            recordings = pd.DataFrame([d.summary() for d in detections])
            true = scoring.read_truth(truth, recordings, detector.classes)
            scores = scoring.score(true, events, recordings)
            for detection, source in zip(detections, sources):
                mine = true[true["recording"] == detection.recording]
                plot_timeline(
                    detection, detector.classes, detector.background, timelines[source], mine
                )
            write_json(out / "detection.json", {**record, "scores": scores})
    return DetectionRun(detections, scores, out)


def write_outputs(out: Path, detections: list[Detection], detector: Detector) -> pd.DataFrame:
    """events.csv, recordings.csv and windows.npz of the recordings so far; returns the
    events."""
    from gesture_cache.files import atomic_write

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
                    str(temporary), fourcc, detection.fps or 30.0, (width, height)
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
