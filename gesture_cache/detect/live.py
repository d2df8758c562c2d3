"""Detection on live sources (cameras, streams, files at their frame rate).

import logging
Frames are read as they arrive into the extractor's ring buffer, a clip every stride goes to
the backbone through a one-slot queue (a clip that finds it full replaces the waiting one,
and is counted as skipped), and events are reported the moment they fire.
"""

from __future__ import annotations

import itertools
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

from gesture_cache.common.errors import ConfigError
from gesture_cache.common.interrupts import acted_on
from gesture_cache.deploy.settings import DetectSettings
from gesture_cache.detect.detector import Detection, Detector
from gesture_cache.detect.events import Event, EventTracker
from gesture_cache.video.clips import stream_clips
from gesture_cache.video.decode import DEFAULT_FOLDER_FPS, Frames, prepare_frame, read_capture

log = logging.getLogger(__name__)


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
        rate = frames.probe.fps or DEFAULT_FOLDER_FPS
        return (itertools.chain([first], iterator) if first is not None else iter(())), rate
    capture = cv2.VideoCapture(int(source) if is_camera(source) else source)
    if not capture.isOpened():
        what = "camera" if is_camera(source) else "source"
        raise ConfigError(f"{what} {source!r} cannot be opened")
    return read_capture(capture), float(capture.get(cv2.CAP_PROP_FPS) or 0) or DEFAULT_FOLDER_FPS


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
            stream = extractor.backbone.stream(frames())
            layout = extractor.layout
            for start, clip in stream_clips(stream, layout.clip_stride, clip_len=layout.clip_len):
                offer(slot, (start, clip), skipped)
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            crashed.append(error)
        finally:
            slot.put(None)

    # the classifier's first call builds it: before the first frame, not during it
    detector.probabilities(np.zeros((detector.span, extractor.feature_dim)), np.array([0]))
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
            seen = starts[detector.last_clip(done, len(starts))] + detector.clip_len
            event = tracker.update(starts[done] + detector.clip_len // 2, seen, probs)
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
