"""`gesture-cache serve`'s server on a real uvicorn, spoken to as a browser would (the
`websockets` client, an Origin header), with the toy backbone's detector (random weights 0,
as the demo extracted it): the socket refuses other pages, bad frames get an answer and the
session goes on, two clients keep their own state, a client that leaves frees its session,
and uploaded files are detected. Slow: the toy detection demo is built for them (~30 s)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
from websockets.exceptions import InvalidStatus  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from gesture_cache.common.errors import RunError  # noqa: E402
from gesture_cache.deploy.settings import DetectSettings  # noqa: E402
from gesture_cache.serve.app import make_app  # noqa: E402
from gesture_cache.serve.session import MAX_FRAME_BYTES  # noqa: E402
from tests.helpers import WITH_TOY  # noqa: E402
from tests.postgres import free_port  # noqa: E402

pytestmark = pytest.mark.slow


class Server:
    """The app on uvicorn in a thread, on a free loopback port."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        self.page = f"http://127.0.0.1:{self.port}"

    def socket(self, origin: str | None = None):
        return connect(f"ws://127.0.0.1:{self.port}/live", origin=origin or self.page,
                       open_timeout=60)  # fmt: skip

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(detect_demo):
    running = Server(make_app(detect_demo.run, DetectSettings(), random_weights=0))
    yield running
    running.stop()


def jpeg(seed: int = 0) -> bytes:
    frame = np.random.default_rng(seed).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", frame)[1].tobytes()


def answer(socket) -> dict:
    return json.loads(socket.recv(timeout=60))


def test_a_page_elsewhere_cannot_open_the_socket(server):
    for origin in ("http://evil.example", f"http://127.0.0.1:{server.port + 1}"):
        with pytest.raises(InvalidStatus, match="403"):
            server.socket(origin).close()
    with server.socket() as socket:  # the page's own origin
        socket.send(jpeg())
        assert answer(socket)["type"] == "frame"


def test_bad_frames_are_answered_and_the_session_goes_on(server):
    with server.socket() as socket:
        for bad, said in (
            (b"not an image at all", "not an image"),
            (b"\xff" * (MAX_FRAME_BYTES + 1), "bytes: at most"),
            ("a text message", "binary messages"),
        ):
            socket.send(bad)
            message = answer(socket)
            assert message["type"] == "error" and said in message["error"], message
        socket.send(jpeg())
        message = answer(socket)
        assert message["type"] == "frame" and message["frame"] == 0, message
        assert set(message) >= {"label", "probability", "events", "hands", "dropped"}


def test_two_clients_each_have_their_own_detector_state(server):
    with server.socket() as first, server.socket() as second:
        for i in range(5):
            first.send(jpeg(i))
            assert answer(first)["frame"] == i
        second.send(jpeg(9))
        assert answer(second)["frame"] == 0  # not the sixth frame of one shared stream
        first.send(jpeg(5))
        assert answer(first)["frame"] == 5


def sessions() -> int:
    return sum(t.name.startswith("session-") for t in threading.enumerate())


def wait_for_sessions(count: int) -> None:
    deadline = time.monotonic() + 30
    while sessions() != count:
        assert time.monotonic() < deadline, f"{sessions()} sessions, not {count}"
        time.sleep(0.1)


def test_a_client_that_leaves_frees_its_session(server):
    wait_for_sessions(0)  # the other tests' clients have left too
    with server.socket() as socket:
        socket.send(jpeg())
        answer(socket)
        assert sessions() == 1
    wait_for_sessions(0)
    with server.socket() as again:  # and the server still serves
        again.send(jpeg())
        assert answer(again)["type"] == "frame"


def post(server, name: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(f"{server.page}/detect?name={name}", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=300) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_an_uploaded_video_is_detected_as_detect_would(server, detect_demo):
    recording = sorted(Path(detect_demo.run).parent.glob("unseen/*.avi"))[0]
    status, reply = post(server, recording.name, recording.read_bytes())
    assert status == 200, reply
    assert reply["recording"] == recording.name and reply["frames"] > 0
    assert reply["events"], reply  # the unseen recordings have gestures the demo scores
    assert list(reply["events"][0]) == [
        "recording", "label", "start_frame", "end_frame", "start_time", "end_time",
        "fired_frame", "score",
    ]  # fmt: skip
    status, reply = post(server, "notes.txt", b"hello")
    assert status == 400 and "not a video file name" in reply["error"]
    status, reply = post(server, "broken.mp4", b"not a video")
    assert status == 400 and reply["error"].startswith("broken.mp4: ")


def test_a_run_that_cannot_detect_is_refused_before_serving(toy_demo):
    with pytest.raises(RunError, match="without a background class"):
        make_app(toy_demo.run, DetectSettings(), random_weights=0)


def test_ctrl_c_stops_the_server_cleanly(detect_demo):
    """`gesture-cache serve` as a user runs it: it says where it serves (loopback), serves
    the page, and Ctrl-C ends it with status 0."""
    port = free_port()
    command = [sys.executable, "-c", WITH_TOY, "serve", str(detect_demo.run),
               "--random-weights", "0", "--port", str(port)]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # a shell's background job inherits Ctrl-C ignored: start from what a terminal gives
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        said = process.stdout.readline()
        assert f"on http://127.0.0.1:{port} (this machine only" in said, process.stderr.read()
        assert b"/static/app.js" in fetched(f"http://127.0.0.1:{port}/")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0, process.stderr.read()[-2000:]
    finally:
        process.kill()


def fetched(url: str, seconds: float = 60) -> bytes:
    """The page, once the server that announced it listens."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=30) as page:
                return page.read()
        except urllib.error.URLError:
            assert time.monotonic() < deadline, f"{url} never answered"
            time.sleep(0.2)
