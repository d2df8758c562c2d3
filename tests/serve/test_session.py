"""What `serve` checks before any run is loaded: the frames a browser sends, the run it is
given, and the page a socket comes from (no server, no model: the fast loop's serve tests)."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

pytest.importorskip("starlette")

from gesture_cache.common.errors import ConfigError, RunError  # noqa: E402
from gesture_cache.deploy.settings import DetectSettings  # noqa: E402
from gesture_cache.serve.app import make_app, same_origin  # noqa: E402
from gesture_cache.serve.session import MAX_FRAME_BYTES, MAX_FRAME_SIDE, decode_frame  # noqa: E402


def encoded(frame: np.ndarray, suffix: str = ".png") -> bytes:
    return cv2.imencode(suffix, frame)[1].tobytes()


def test_a_frame_comes_back_as_the_bgr_image_the_page_sent():
    frame = np.zeros((24, 32, 3), np.uint8)
    frame[..., 2] = 200  # red, which is last in BGR
    decoded = decode_frame(encoded(frame))
    assert decoded.shape == (24, 32, 3) and (decoded == frame).all()


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (b"not an image at all", "not an image"),
        (b"\xff" * (MAX_FRAME_BYTES + 1), f"bytes: at most {MAX_FRAME_BYTES}"),
        (encoded(np.zeros((2, MAX_FRAME_SIDE + 1, 3), np.uint8)), f"at most {MAX_FRAME_SIDE}"),
    ],
)
def test_a_bad_frame_is_refused_saying_why(data, said):
    with pytest.raises(ConfigError, match=said):
        decode_frame(data)


def test_a_folder_that_is_no_run_is_refused_before_serving(tmp_path):
    with pytest.raises(RunError, match="not a run folder"):
        make_app(tmp_path, DetectSettings())


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        ("http://127.0.0.1:8000", "127.0.0.1:8000", True),
        ("http://127.0.0.1:8001", "127.0.0.1:8000", False),
        ("http://evil.example", "127.0.0.1:8000", False),
        (None, "127.0.0.1:8000", False),  # a client that does not say where it comes from
    ],
)
def test_only_the_pages_own_origin_may_open_the_socket(origin, host, allowed):
    headers = {"host": host, **({"origin": origin} if origin else {})}
    assert same_origin(SimpleNamespace(headers=headers)) is allowed
