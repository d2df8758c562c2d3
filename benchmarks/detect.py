"""Detection speed: milliseconds per frame from cached clips, from a file, and live; split
into decode + C3D and classifier; the real-time factor at 30 fps for each stride, in float32
and mixed_bfloat16.

    python benchmarks/detect.py [--quick] [--strides 8,16]

For each stride a small detection run is trained on synthetic recordings (speed, not
accuracy, is measured), then one unseen recording is detected. A real-time factor above 1
means the machine keeps up with a 30 fps camera at that stride; live, it shows as zero
skipped clips. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
from pathlib import Path

from gesture_cache.cache.reader import open_cache
from gesture_cache.deploy.settings import DetectSettings
from gesture_cache.detect.detector import detect_cached, detect_offline, load_detector
from gesture_cache.detect.live import detect_live
from gesture_cache.extract.config import ExtractConfig
from gesture_cache.extract.extraction import build_cache
from gesture_cache.extract.extractor import extractor_from_spec
from gesture_cache.sources import synth
from gesture_cache.train.config import TrainConfig
from gesture_cache.train.fit import train
from gesture_cache.train.run_folder import read_run_config

FPS = 30.0


def per_frame_ms(detection) -> dict:
    frames = max(detection.n_frames, 1)
    return {k: round(1000 * v / frames, 2) for k, v in detection.seconds.items()}


def measure(stride: int, tmp: Path, recordings: int) -> dict:
    folder = tmp / f"s{stride}"
    csv = synth.make_recordings(folder / "train", recordings, gestures=3, seed=stride)
    unseen = synth.make_recordings(folder / "unseen", 1, gestures=3, seed=stride + 1)
    build_cache(csv, folder / "cache", ExtractConfig(random_weights=0, clip_stride=stride))
    build_cache(
        unseen, folder / "unseen_cache", ExtractConfig(random_weights=0, clip_stride=stride)
    )
    config = TrainConfig(background=True, window_clips=4, window_step=1, epochs=2, units=(16,))
    train(folder / "cache", folder / "run", config)
    detector = load_detector(folder / "run")
    spec = read_run_config(folder / "run")["extractor"]
    source = str(next((folder / "unseen").glob("*.avi")))
    settings = DetectSettings()
    cached = detect_cached(
        detector, open_cache(folder / "unseen_cache"), Path(source).name, settings
    )
    result = {"stride": stride, "cached_ms_per_frame": per_frame_ms(cached)}
    for precision in ("float32", "mixed_bfloat16"):
        extractor = extractor_from_spec({**spec, "precision": precision}, random_seed=0)
        extractor.features(source)  # build and trace the network before timing
        offline = detect_offline(detector, extractor, source, settings)
        ms = per_frame_ms(offline)
        total = sum(ms.values())
        result[precision] = {
            "offline_ms_per_frame": ms,
            "realtime_factor_at_30fps": round(1000 / total / FPS, 2),
        }
    extractor = extractor_from_spec(spec, random_seed=0)
    extractor.features(source)
    live = detect_live(detector, extractor, source, settings, speed=1.0)
    result["live_float32"] = {
        "clips": len(live.clip_start),
        "skipped_clips": live.skipped,
        "ms_per_frame": per_frame_ms(live),
    }
    return result


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 training recordings")
    parser.add_argument("--strides", default="8,16")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for stride in map(int, args.strides.split(",")):
            result = measure(stride, Path(tmp), 2 if args.quick else 4)
            results.append(result)
            for precision in ("float32", "mixed_bfloat16"):
                r = result[precision]
                print(
                    f"stride {stride} {precision}: {r['offline_ms_per_frame']} ms/frame, "
                    f"real-time factor at 30 fps {r['realtime_factor_at_30fps']}"
                )
            live = result["live_float32"]
            print(
                f"stride {stride} live float32 at 1x: {live['clips']} clips, "
                f"{live['skipped_clips']} skipped; cached clips: {result['cached_ms_per_frame']}"
            )
    print(json.dumps({"results": results, "machine": platform.node()}))


if __name__ == "__main__":
    main()
