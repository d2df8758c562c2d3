"""Decoding on the GPU's video engine (NVDEC) with NVIDIA's PyNvVideoCodec.

On a GPU box OpenCV's decoding on the CPU, not the model, sets the pace (issue #37: 16
threads gave about 1,000 C3D clips/s of small videos, less than the model alone). NVDEC
decodes H.264, HEVC and AV1 in fixed-function hardware beside the GPU's cores.
PyNvVideoCodec (`pip install PyNvVideoCodec`, or the `nvdec` extra) carries its own FFmpeg
demuxer and needs only the NVIDIA driver with its video libraries (in a container:
NVIDIA_DRIVER_CAPABILITIES including `video`).

Frames come back to host memory as RGB, become BGR as OpenCV's are, and go through the same
preprocessing. The two decoders agree on the decoded picture (H.264 decoding is exact) up
to their colour conversion from YUV (rounding, and the matrix when a file does not name
one), which tests/video/test_nvdec.py bounds. A recording NVDEC cannot open (MJPEG, Cinepak,
MPEG-4 part 2 on some cards, a folder of images) is decoded by OpenCV, and counted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from gesture_cache.common.errors import ConfigError, first_line

log = logging.getLogger(__name__)

DECODERS = ("auto", "opencv", "nvdec")
CPU_DECODING = "OpenCV on the CPU"
PREFETCHED_FRAMES = 32  # a ThreadedDecoder's buffer, and the frames asked for at a time


@cache
def nvdec_unavailable() -> str | None:
    """Why NVDEC cannot decode on this machine, or None when it can. Importing
    PyNvVideoCodec loads the driver's video libraries, and fails without them."""
    try:
        import PyNvVideoCodec  # noqa: F401
    except ImportError:
        return "PyNvVideoCodec is not installed (pip install 'gesture_cache[nvdec]')"
    except Exception as error:  # noqa: BLE001 - its import raises RuntimeError without a driver
        return f"PyNvVideoCodec finds no NVIDIA driver with video decoding: {first_line(error)}"
    return None


@dataclass
class Opened:
    """A recording NVDEC opened: what its container claims, and its frames (BGR)."""

    claimed_frames: int
    fps: float
    frames: Iterator[np.ndarray]


class Nvdec:
    """NVDEC decoders, one a decode worker (thread), each reused from recording to recording:
    making one costs more than decoding a short clip."""

    def __init__(self, gpu: int = 0):
        self.gpu = gpu
        self.local = threading.local()
        self.lock = threading.Lock()
        self.refused: dict[str, int] = {}  # why NVDEC could not open a recording -> how many

    def describe(self) -> str:
        return (
            f"NVDEC on GPU {self.gpu} (PyNvVideoCodec {package_version()}); OpenCV decodes "
            "what NVDEC cannot"
        )

    def open(self, path: Path) -> Opened | None:
        """The recording's frames from NVDEC, or None when NVDEC cannot decode it (its
        reason is counted in `refused`, and OpenCV decodes it). The first frames are
        decoded here: a recording NVDEC opens but cannot turn into frames goes to OpenCV
        too, before anything of it was used."""
        import PyNvVideoCodec as nvc

        decoder = getattr(self.local, "decoder", None)
        try:
            if decoder is None:
                decoder = nvc.ThreadedDecoder(
                    str(path),
                    buffer_size=PREFETCHED_FRAMES,
                    gpu_id=self.gpu,
                    use_device_memory=False,
                    output_color_type=nvc.OutputColorType.RGB,
                )
            else:
                decoder.reconfigure_decoder(str(path))
            metadata = decoder.get_stream_metadata()
            first = [bgr(frame) for frame in decoder.get_batch_frames(PREFETCHED_FRAMES)]
            if not first:
                raise ValueError("no frame decodes on NVDEC")
        except Exception as error:  # noqa: BLE001 - any refusal means: OpenCV decodes it
            self.local.decoder = None  # a decoder that failed to switch is not reused
            self._refused(path, error)
            return None
        self.local.decoder = decoder
        fps = float(getattr(metadata, "average_fps", 0.0) or 0.0)
        claimed = int(getattr(metadata, "num_frames", 0) or 0)
        return Opened(claimed, fps, self._frames(decoder, path, first))

    def _frames(self, decoder: Any, path: Path, first: list[np.ndarray]) -> Iterator[np.ndarray]:
        """BGR frames until the stream ends; a frame that does not decode ends it, as it
        does for OpenCV (the probe then records fewer frames than claimed)."""
        yield from first
        while True:
            try:
                frames = [bgr(frame) for frame in decoder.get_batch_frames(PREFETCHED_FRAMES)]
            except Exception as error:  # noqa: BLE001 - the decodable frames end here
                log.warning("%s: NVDEC stops decoding here: %s", path, error)
                self.local.decoder = None
                return
            if not frames:
                return
            yield from frames

    def _refused(self, path: Path, error: Exception) -> None:
        reason = first_line(error)
        with self.lock:
            first = reason not in self.refused
            self.refused[reason] = self.refused.get(reason, 0) + 1
        if first:
            log.warning("NVDEC cannot decode %s (%s): OpenCV decodes it and its like", path, reason)


def bgr(frame: Any) -> np.ndarray:
    """A decoded RGB frame in host memory (which the decoder reuses) as a BGR copy."""
    import cv2  # not at the top: the CLI's light commands import this module's names

    return cv2.cvtColor(np.from_dlpack(frame), cv2.COLOR_RGB2BGR)


def package_version() -> str:
    try:
        return version("PyNvVideoCodec")
    except PackageNotFoundError:
        return "unknown"


def chosen_decoder(choice: str) -> tuple[Nvdec | None, str]:
    """The decoder `--decoder` asks for (None: OpenCV), and a line saying which and why.
    `auto` takes NVDEC where it can run; `nvdec` where it cannot is refused, saying why."""
    if choice == "opencv":
        return None, f"{CPU_DECODING} (--decoder opencv)"
    why_not = nvdec_unavailable()
    if why_not is None:
        nvdec = Nvdec()
        return nvdec, nvdec.describe()
    if choice == "nvdec":
        raise ConfigError(f"--decoder nvdec: {why_not}; use --decoder opencv or auto")
    return None, f"{CPU_DECODING}; NVDEC unused: {why_not}"
