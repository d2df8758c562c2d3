"""Hand landmarks on one CPU core: frames per second of the hands backbone, tracked and
static, full and lite models, at the real recording's 320x240 and at 640x480 (IPN Hand's
size); live detection's real-time factor at 30 fps (the fastest playback, as a multiple of 30 fps,
at which no clip is skipped); the default layout (pose and trajectory) against layout 1
(the pose alone); MediaPipe's own Hands on the same frames
(when --mediapipe names a Python that has it) and C3D's clips/s, on the same core.

    python benchmarks/hands.py [--mediapipe /path/to/mediapipe-env/bin/python] [--quick]

The process is pinned to one core (os.sched_setaffinity) and OpenCV to one thread; the
models run with one LiteRT thread. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GIF = ROOT.parent / "shared" / "fixtures" / "hands" / "fingers-lq.gif"
sys.path.insert(0, str(ROOT))
from tests.fixtures.hands.make_reference import frames_of  # noqa: E402

MEDIAPIPE_TIMING = """
import os, sys, time, json, numpy as np, cv2, mediapipe as mp
os.sched_setaffinity(0, {0}); cv2.setNumThreads(1)
frames = list(np.load(sys.argv[1])["frames"])
out = {}
for static in (False, True):
    with mp.solutions.hands.Hands(static_image_mode=static, max_num_hands=2) as hands:
        hands.process(cv2.cvtColor(frames[0], cv2.COLOR_BGR2RGB))
        started = time.perf_counter()
        for frame in frames:
            hands.process(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        out["static" if static else "tracked"] = len(frames) / (time.perf_counter() - started)
print(json.dumps(out))
"""


def frames_per_second(frames: list, model: str, static: bool, layout: int = 2) -> float:
    from gesture_cache.backbones.hands.backbone import Hands
    from gesture_cache.backbones.hands.options import Options

    options = Options(hands_model=model, max_hands=2, hands_static=static, hands_layout=layout)
    hands = Hands(options)
    list(hands.stream(frames[:2]))  # the interpreters, built once
    started = time.perf_counter()
    for _ in hands.stream(frames):
        pass
    return len(frames) / (time.perf_counter() - started)


def c3d_clips_per_second(clips: int) -> float:
    from gesture_cache.backbones.c3d.backbone import C3D
    from gesture_cache.backbones.c3d.options import Options

    c3d = C3D(Options(), random_seed=0, batch_clips=clips)
    batch = np.random.default_rng(0).integers(0, 255, (clips, *C3D.clip_shape), dtype=np.uint8)
    c3d.forward(batch)
    started = time.perf_counter()
    c3d.forward(batch)
    return clips / (time.perf_counter() - started)


def live_real_time_factor(folder: Path, frames: list) -> dict:
    """A hands run trained on the recording, then live detection of a 640x480 video of it
    played as a 30 fps camera delivers it."""
    from gesture_cache.deploy.settings import DetectSettings
    from gesture_cache.detect.detector import load_detector
    from gesture_cache.detect.live import detect_live
    from gesture_cache.extract.extractor import extractor_from_spec
    from gesture_cache.train.run_folder import read_run_config
    from tests.helpers import make_hands_run

    make_hands_run(folder, epochs=30)
    video = folder / "camera.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (640, 480))
    for frame in frames:
        writer.write(frame)
    writer.release()
    detector = load_detector(folder / "run")
    extractor = extractor_from_spec(read_run_config(folder / "run")["extractor"])
    result = {"frames": len(frames)}
    for speed in (1, 2, 3, 4, 6):  # the camera at 30 fps, then 2x, 3x ... as fast
        started = time.perf_counter()
        live = detect_live(detector, extractor, str(video), DetectSettings(), speed=speed)
        duration = len(frames) / (30 * speed)
        lag = time.perf_counter() - started - duration
        result[f"at_{speed}x"] = {
            "skipped_clips": live.skipped,
            "seconds_behind": round(lag, 2),
            "kept_up": live.skipped == 0 and lag <= 0.05 * duration + 0.2,  # + start-up
        }
        if speed == 1:
            result["events_at_1x"] = [e.label for e in live.events]
    kept_up = [k for k in (1, 2, 3, 4, 6) if result[f"at_{k}x"]["kept_up"]]
    result["real_time_factor_30fps"] = max(kept_up, default=0)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mediapipe", help="a Python with mediapipe 0.10.21 (its own env)")
    parser.add_argument("--quick", action="store_true", help="fewer frames")
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})
    cv2.setNumThreads(1)
    recording = frames_of(GIF)
    repeats = 1 if args.quick else 4
    sizes = {
        "320x240": recording * repeats,
        "640x480": [cv2.resize(f, (640, 480)) for f in recording] * repeats,
    }
    result = {"machine": platform.processor() or platform.machine(), "cores_used": 1}
    for size, frames in sizes.items():
        for model in ("full", "lite"):
            for static in (False, True):
                key = f"ours_{model}_{'static' if static else 'tracked'}_{size}_fps"
                result[key] = round(frames_per_second(frames, model, static), 1)
                print(f"{key:40s} {result[key]:7.1f} frames/s", flush=True)
        key = f"ours_full_tracked_{size}_layout1_fps"  # the pose alone (caches of 0.1)
        result[key] = round(frames_per_second(frames, "full", False, layout=1), 1)
        print(f"{key:40s} {result[key]:7.1f} frames/s", flush=True)
        if args.mediapipe:
            with tempfile.TemporaryDirectory() as scratch:
                np.savez(Path(scratch) / "frames.npz", frames=np.stack(frames))
                process = subprocess.run(
                    [args.mediapipe, "-c", MEDIAPIPE_TIMING, str(Path(scratch) / "frames.npz")],
                    capture_output=True, text=True, check=True,
                )  # fmt: skip
            for mode, fps in json.loads(process.stdout.splitlines()[-1]).items():
                key = f"mediapipe_full_{mode}_{size}_fps"
                result[key] = round(fps, 1)
                print(f"{key:40s} {result[key]:7.1f} frames/s", flush=True)
    result["c3d_clips_per_second"] = round(c3d_clips_per_second(4 if args.quick else 8), 2)
    print(f"{'c3d (random weights) clips/s':40s} {result['c3d_clips_per_second']:7.2f}")
    with tempfile.TemporaryDirectory() as scratch:
        result["live"] = live_real_time_factor(Path(scratch), sizes["640x480"])
    print(f"live detection, 640x480 at 30 fps: {json.dumps(result['live'])}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
