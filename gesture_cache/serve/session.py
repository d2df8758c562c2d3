"""One browser's live detection: frames pushed in as they arrive (the newest waits, an older
one still waiting is dropped), each processed frame answered with what the page shows.

The detection is `detect --live`'s: the backbone streams the frames into clips, each window
whose clips are all here is classified, and `EventTracker` smooths the windows into events.
Each session loads its own run (backbone, tracker state and classifier), so two browsers
never share state, and closing a session frees it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

from gesture_cache.common.errors import ConfigError
from gesture_cache.deploy.settings import DetectSettings
from gesture_cache.deploy.trained import load_trained
from gesture_cache.detect.detector import detector_of
from gesture_cache.detect.events import Event, EventTracker
from gesture_cache.video.clips import stream_clips
from gesture_cache.video.decode import prepare_frame

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 4 * 1024 * 1024  # an encoded frame: a 1080p JPEG is well under 1 MB
MAX_FRAME_SIDE = 4096  # pixels
FPS = 30.0  # the frame rate the detector's settings assume (a webcam's usual)
CLOSED = object()  # the slot's last item: the session ends


def decode_frame(data: bytes) -> np.ndarray:
    """A browser's JPEG or PNG frame as BGR; a ConfigError saying what is wrong with it."""
    if len(data) > MAX_FRAME_BYTES:
        raise ConfigError(f"a frame of {len(data)} bytes: at most {MAX_FRAME_BYTES}")
    frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if frame is None:
        raise ConfigError("a frame that is not an image (send JPEG or PNG)")
    if max(frame.shape[:2]) > MAX_FRAME_SIDE:
        raise ConfigError(f"a frame of {frame.shape[1]}x{frame.shape[0]}: at most {MAX_FRAME_SIDE}")
    return frame


class LiveSession:
    """Detection over the frames one browser sends. `send(message)` is called from the
    session's own thread once for every frame processed, with the page's state: the frame's
    hands (hands backbone), the current label and its probability, and every event so far."""

    def __init__(
        self,
        run: str | Path,
        settings: DetectSettings,
        send: Callable[[dict], None],
        loading: dict | None = None,
        name: str = "live",
    ):
        """`loading`: what `load_trained` takes besides the run (weights, runtime)."""
        trained = load_trained(run, **(loading or {}))
        self.detector, self.extractor = detector_of(trained, run), trained.extractor
        if not self.extractor.layout.streams:
            raise ConfigError(f"{run} was trained on fixed clips, not dense ones: it cannot detect")
        self.send, self.name = send, name
        self.tracker = EventTracker(
            name, self.detector.classes, self.detector.background, settings,
            max(self.extractor.layout.clip_stride // 2, 1), FPS,
        )  # fmt: skip
        self.slot: queue.Queue = queue.Queue(maxsize=1)
        self.received = self.dropped = 0
        self.arrived: list[float] = []  # seconds from the first frame, a frame received
        self.index: int | None = None  # the frame being processed
        self.answered: int | None = None  # the last frame the page was sent a state for
        self.probabilities: np.ndarray | None = None  # the latest window's
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self.run, daemon=True, name=f"session-{name}")
        self.thread.start()

    def offer(self, frame: np.ndarray) -> None:
        """The newest frame waits for the detector; a frame still waiting is dropped."""
        if not self.arrived:
            self.started = time.monotonic()
        self.arrived.append(time.monotonic() - self.started)
        self.received += 1
        self.replace((self.received - 1, frame))

    def close(self) -> list[Event]:
        """End the session; its events."""
        self.replace(CLOSED)
        self.thread.join(timeout=30)
        return self.tracker.finish()

    def replace(self, item) -> None:
        while True:
            try:
                self.slot.put_nowait(item)
                return
            except queue.Full:
                try:
                    waiting = self.slot.get_nowait()
                except queue.Empty:
                    continue
                if waiting is CLOSED:  # closing wins over any frame
                    item = CLOSED
                else:
                    self.dropped += 1

    def frames(self) -> Iterator[np.ndarray]:
        """The frames as they arrive. Asked for the next one, the previous one is done: a
        frame that completed no clip (C3D's 16 frames make one) is answered here, so the
        page, which sends a frame once the last one is answered, never waits for a clip."""
        preprocessing = self.extractor.backbone.preprocessing
        while True:
            if self.index is not None and self.answered != self.index:
                self.answer()
            item = self.slot.get()
            if item is CLOSED:
                return
            self.index, frame = item
            yield prepare_frame(frame, preprocessing)

    def answer(self) -> None:
        self.answered = self.index
        self.send(self.state())

    def run(self) -> None:
        backbone, layout = self.extractor.backbone, self.extractor.layout
        starts, features, done = [], [], 0
        try:
            stream = backbone.stream(self.frames())
            clips = stream_clips(stream, layout.clip_stride, clip_len=layout.clip_len)
            for start, clip in clips:
                features.append(backbone.forward(clip[None])[0])
                starts.append(start)
                last = self.detector.last_clip
                while done < len(starts) and last(done, 10**12) < len(starts):
                    self.probabilities = self.detector.probabilities_at(features, done)
                    seen = starts[last(done, len(starts))] + self.detector.clip_len
                    centre = starts[done] + self.detector.clip_len // 2
                    self.tracker.update(centre, seen, self.probabilities)
                    done += 1
                self.answer()
        except BaseException as error:  # noqa: BLE001 - reported to the page, not raised
            log.exception("session %s failed", self.name)
            self.failure = error
            self.send({"type": "error", "error": f"detection stopped: {error}"})

    def state(self) -> dict:
        """What the page shows after this frame."""
        label, probability, probabilities = None, 0.0, self.probabilities
        if probabilities is not None:
            best = int(np.argmax(probabilities))
            label, probability = self.detector.classes[best], float(probabilities[best])
        events = self.tracker.so_far()
        return {
            "type": "frame",
            "frame": self.index,
            "hands": [
                {
                    "right": round(float(h.right), 3),
                    "landmarks": np.round(h.landmarks[:, :2], 4).tolist(),
                }
                for h in getattr(self.extractor.backbone, "last_hands", [])
            ],  # fmt: skip
            "label": label,
            "probability": round(probability, 4),
            "background": self.detector.background,
            "events": [self.timed(e) for e in events],
            "dropped": self.dropped,
        }

    def timed(self, event: Event) -> dict:
        """An event's row as `detect` writes it, its times when its frames arrived (a
        browser sends frames at its own pace, not at a fixed rate)."""
        at = lambda frame: round(self.arrived[min(frame, len(self.arrived) - 1)], 3)  # noqa: E731
        return {**event.row(), "start_time": at(event.start_frame), "end_time": at(event.end_frame)}
