"""Class probabilities of sliding windows -> gesture events: a causal moving average, then
hysteresis (a gesture fires at `on` while it leads, ends below `off`; events of one label
closer than `min_gap` frames are merged)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from gesture_cache.deploy.settings import DetectSettings


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
        return self._event(self.active)

    def so_far(self) -> list[Event]:
        """The events until now, the one still going included (its end where it is)."""
        return self.events + ([self._event(self.active)] if self.active else [])

    def _close(self) -> None:
        self.events.append(self._event(self.active))
        self.active = None

    def _event(self, a: dict) -> Event:
        label = self.classes[a["class"]]
        return Event(self.recording, label, a["start"], a["end"], a["fired"], a["score"], self.fps)
