"""The toy backbone: where the bright shape of a frame is and how large it is, frame by frame
through a clip, and the clip's colour; no network. Enough to tell the synthetic gestures
apart (they move a bright hand over a dim background), in microseconds a clip."""

from __future__ import annotations

import time

import numpy as np

from gesture_cache.video.decode import Preprocessing
from tests.toy_backbone.options import Options


class Toy:
    name = "toy colour statistics"
    clip_len = 8
    clip_dtype = "uint8"
    network_in_stream = False
    batch_clips = 16

    def __init__(self, options: Options, random_seed: int):
        self.options, self.random_seed = options, random_seed
        size = options.size
        self.preprocessing = Preprocessing(
            name="toy", resize=(size, size), interpolation="area", crop=(0, size, 0, size),
            scale=1.0, mean_bgr=None,
        )  # fmt: skip
        self.clip_shape = (self.clip_len, size, size, 3)
        self.feature_dim = 6 * self.clip_len + (6 if options.spread else 3)

    def fingerprint_fields(self) -> dict:
        return {
            "model": self.name,
            "weights": {"random_seed": self.random_seed},
            "preprocessing": self.preprocessing.record(),
            "precision": "float32",
            "spread": self.options.spread,
        }

    def stream(self, frames):
        return iter(frames)

    def forward(self, clips: np.ndarray) -> np.ndarray:
        """Per frame: the bright pixels' centre (x, y), their share of the frame and their
        horizontal spread; then the clip's mean colour (and its spread)."""
        if self.options.seconds_per_clip:
            time.sleep(self.options.seconds_per_clip * len(clips))  # a network this slow
        pixels = clips.astype(np.float32) / 255
        grey = pixels.mean(-1)  # (n, frames, h, w)
        bright = grey > grey.mean(axis=(2, 3), keepdims=True) + grey.std(axis=(2, 3), keepdims=True)
        size = grey.shape[-1]
        ys, xs = np.mgrid[0:size, 0:size] / (size - 1)
        count = bright.sum(axis=(2, 3)).clip(min=1)
        cx = (bright * xs).sum(axis=(2, 3)) / count
        cy = (bright * ys).sum(axis=(2, 3)) / count
        spread = np.sqrt((bright * (xs - cx[..., None, None]) ** 2).sum(axis=(2, 3)) / count)
        share = bright.mean(axis=(2, 3))
        motion = np.concatenate([cx - cx[:, :1], cy - cy[:, :1]], axis=1)  # since the clip began
        shape = np.concatenate([cx, cy, share, spread, motion], axis=1)
        colour = pixels.reshape(len(clips), -1, 3)
        parts = [colour.mean(1), colour.std(1)] if self.options.spread else [colour.mean(1)]
        return np.concatenate([shape, *parts], axis=1).astype(np.float32)

    def onnx_export(self, frames: np.ndarray):
        raise NotImplementedError("the toy backbone has no ONNX graph")


def from_options(options: Options, *, weights, random_seed, backend, batch_clips) -> Toy:
    return Toy(options, random_seed)


def from_spec(spec, *, weights, random_seed, files, backend, batch_clips) -> Toy:
    size = spec["preprocessing"]["resize"][0]
    return Toy(Options(spread=spec["spread"], size=size), random_seed)
