"""The detection timeline: a recording's window probabilities, its events and its truth."""

from __future__ import annotations

from pathlib import Path


def plot_timeline(detection, detector, path: Path, truth=None) -> Path:
    """Per-window probabilities over time, the events found and (when known) the true
    segments, as a PNG at `path`."""
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(12, 3.5))
    classes, background = detector.classes, detector.background
    centres = detection.clip_start + detector.clip_len // 2
    colours = plt.get_cmap("tab10")
    gestures = [i for i, c in enumerate(classes) if c != background]
    for n, i in enumerate(gestures):
        if len(detection.probabilities):
            axis.plot(centres, detection.probabilities[:, i], color=colours(n), label=classes[i])
    for event in detection.events:
        n = gestures.index(classes.index(event.label))
        axis.axvspan(event.start_frame, event.end_frame, 0.9, 1.0, color=colours(n), alpha=0.8)
        axis.axvline(event.fired_frame, color=colours(n), linestyle=":", linewidth=1)
    if truth is not None:
        for row in truth.itertuples():
            n = gestures.index(classes.index(row.label))
            axis.axvspan(row.start_frame, row.end_frame, 0.0, 0.08, color=colours(n), alpha=0.8)
    axis.set_ylim(0, 1.05)
    axis.set_xlim(0, max(detection.n_frames, 1))
    axis.set_xlabel("frame (top band: events, dotted: when they fired; bottom band: truth)")
    axis.set_ylabel("probability")
    axis.set_title(detection.recording)
    axis.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
