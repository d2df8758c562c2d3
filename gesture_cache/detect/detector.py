"""A trained run as a detector: its window slid over a recording's clips, one window per
clip, centred on it (T clips `step` apart, the same windows training drew, shifted inside
the recording at its ends), the probabilities turned into events (`events.py`).

Offline, a recording's clips come from the extractor (`detect_offline`) or from a cache that
holds it (`detect_cached`); live sources are in `live.py`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gesture_cache.common.errors import ConfigError, RunError
from gesture_cache.data.windows import Window, windows
from gesture_cache.deploy.settings import DetectSettings
from gesture_cache.deploy.trained import Trained, load_trained
from gesture_cache.detect.events import Event, EventTracker


@dataclass
class Detector:
    """A trained run, ready to classify windows of clip features."""

    classify: Callable[[np.ndarray, np.ndarray], np.ndarray]  # windows, masks -> probabilities
    classes: list[str]
    background: str
    window: Window
    dtype: str  # features are rounded to the cache's storage type, as training saw them
    clip_len: int  # frames a clip spans: a window's probability belongs to its centre frame

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
        trained.classify,
        trained.classes,
        trained.background_label,
        trained.window,
        trained.dtype,
        trained.clip_len,
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
    stride = int(np.median(np.diff(clip_start))) if len(clip_start) > 1 else detector.clip_len
    tracker = EventTracker(
        recording, detector.classes, detector.background, settings, max(stride // 2, 1), fps
    )
    for p, probs in enumerate(probabilities):
        seen = int(clip_start[detector.last_clip(p, len(clip_start))]) + detector.clip_len
        tracker.update(int(clip_start[p]) + detector.clip_len // 2, seen, probs)
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
