"""The serve page in a real browser: headless Chromium (Debian's chromium and chromium-driver,
which .ci/run installs), its fake camera fed from the real recording of
../shared/fixtures/hands, serving a hands run trained on that recording's first part. The
page draws the landmarks and names the gestures; a video dropped on its second tab gets the
events table. A screenshot of each goes to the test's folder."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

pytest.importorskip("selenium")
pytest.importorskip("starlette")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

from gesture_cache.cli.main import main  # noqa: E402
from gesture_cache.deploy.settings import DetectSettings  # noqa: E402
from gesture_cache.serve.app import make_app  # noqa: E402
from tests.fixtures.hands.make_reference import frames_of  # noqa: E402
from tests.helpers import HANDS  # noqa: E402
from tests.serve.test_app import Server  # noqa: E402

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [
    pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="chromium and chromium-driver absent "
                       "(.ci/run installs them: apt-get install chromium chromium-driver)"),
    pytest.mark.skipif(not HANDS.is_dir(), reason="../shared/fixtures/hands absent"),
    pytest.mark.slow,
]  # fmt: skip


def y4m(frames: list[np.ndarray], path: Path, fps: int = 15) -> Path:
    """Frames as a YUV4MPEG2 file, what Chromium's fake camera plays (looping)."""
    height, width = frames[0].shape[:2]
    with path.open("wb") as file:
        file.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            file.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
    return path


@pytest.fixture(scope="module")
def page(hands_run, tmp_path_factory):
    """The served page open in Chromium, its camera the real recording."""
    folder = tmp_path_factory.mktemp("browser")
    camera = y4m(frames_of(HANDS / "fingers-lq.gif"), folder / "camera.y4m")
    server = Server(make_app(hands_run / "run", DetectSettings()))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--window-size=1300,900",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-video-capture={camera}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.get(server.page)
    yield driver, folder
    driver.quit()
    server.stop()


def page_state(driver) -> dict:
    return driver.execute_script("return window.gestureState")


def table_labels(driver, table: str) -> list[str]:
    return driver.execute_script(
        f"return [...document.querySelectorAll('#{table} tbody tr')]"
        ".map((row) => row.cells[0].textContent)"
    )


def test_the_camera_page_draws_the_hand_and_names_the_gestures(page):
    driver, folder = page
    driver.find_element(By.ID, "start").click()
    deadline = time.monotonic() + 120
    while page_state(driver)["processed"] < 100:  # the 43-frame recording twice and more
        assert time.monotonic() < deadline, page_state(driver)
        time.sleep(0.5)
    state = page_state(driver)
    driver.save_screenshot(str(folder / "camera.png"))
    assert not state["errors"], state["errors"]
    assert state["framesWithHands"] >= 0.9 * state["processed"]  # the hand, in every frame
    assert {"thumbs_up", "victory"} <= set(state["labels"])  # as the person alternates them
    shown = table_labels(driver, "events")  # the table the page redraws each frame
    assert shown and set(shown) <= {"victory", "thumbs_up"}


def test_a_video_dropped_on_the_page_gets_the_events_detect_finds(page, hands_run, tmp_path):
    driver, folder = page
    gif = HANDS / "fingers-lq.gif"
    assert main(["detect", str(hands_run / "run"), str(gif), "--out", str(tmp_path)]) == 0
    found = pd.read_csv(tmp_path / "events.csv")
    driver.find_element(By.ID, "tab-file").click()
    driver.find_element(By.ID, "upload").send_keys(str(gif))
    deadline = time.monotonic() + 120
    while not table_labels(driver, "file-events"):
        assert time.monotonic() < deadline, driver.find_element(By.ID, "file-status").text
        time.sleep(0.5)
    driver.save_screenshot(str(folder / "file.png"))
    assert table_labels(driver, "file-events") == found["label"].tolist()
    assert found["label"].tolist() == ["victory", "thumbs_up"] * 2  # as the person did
    assert "43 frames" in driver.find_element(By.ID, "file-status").text
