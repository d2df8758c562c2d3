"""The serve page live, in headless Chromium: frame-to-label latency (from the moment the page
grabs a camera frame to the moment the server's answer for it arrives: JPEG encoding, the
WebSocket both ways, hand landmarks, the detector) and frames/s processed, with the fake
camera playing the real recording (../shared/fixtures/hands/fingers-lq.gif) at 30 fps.

    python benchmarks/serve.py [--size 640x480] [--frames 300] [--run RUN]

Without --run, a hands detector is trained on the recording's first part first (as the
tests do). Needs chromium and chromium-driver (Debian's). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gesture_cache.deploy.settings import DetectSettings  # noqa: E402
from gesture_cache.serve.app import make_app  # noqa: E402
from tests.fixtures.hands.make_reference import frames_of  # noqa: E402
from tests.helpers import HANDS, make_hands_run  # noqa: E402
from tests.serve.test_app import Server  # noqa: E402
from tests.serve.test_browser import y4m  # noqa: E402


def measure(run: Path, camera: Path, frames: int) -> dict:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    server = Server(make_app(run, DetectSettings()))
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--use-fake-ui-for-media-stream",
                 "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-video-capture={camera}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get(server.page)
        driver.find_element(By.ID, "start").click()
        state = lambda: driver.execute_script("return window.gestureState")  # noqa: E731
        while state()["processed"] < 30:  # warm: models loaded, first windows classified
            time.sleep(0.2)
        first, started = state()["processed"], time.perf_counter()
        while state()["processed"] < first + frames:
            time.sleep(0.2)
        seconds, final = time.perf_counter() - started, state()
    finally:
        driver.quit()
        server.stop()
    latencies = np.array(final["latencies"][first:])  # the measured frames only
    return {
        "frames": len(latencies),
        "frames_per_second": round((final["processed"] - first) / seconds, 1),
        "latency_ms_median": round(float(np.median(latencies)), 1),
        "latency_ms_p95": round(float(np.percentile(latencies, 95)), 1),
        "dropped": final["dropped"],
        "events": final["labels"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="640x480", help="the camera's frame size")
    parser.add_argument("--frames", type=int, default=300, help="frames measured")
    parser.add_argument("--run", help="a hands run or bundle (default: trained here first)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        run = Path(args.run) if args.run else make_hands_run(folder / "hands", epochs=30) / "run"
        frames = [cv2.resize(f, (width, height)) for f in frames_of(HANDS / "fingers-lq.gif")]
        camera = y4m(frames, folder / "camera.y4m", fps=30)
        result = measure(run, camera, args.frames)
    result = {"machine": platform.processor() or platform.machine(), "size": args.size, **result}
    median, p95 = result["latency_ms_median"], result["latency_ms_p95"]
    print(f"{result['frames_per_second']} frames/s, latency {median} ms (95th percentile {p95})")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
