"""The toy backbone: per-channel means (and spreads) of a clip, no network."""

from __future__ import annotations

import numpy as np

from gesture_cache.video.decode import Preprocessing
from tests.toy_backbone.options import Options


class Toy:
    name = "toy colour statistics"
    clip_len = 4
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
        self.feature_dim = 6 if options.spread else 3

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
        pixels = clips.reshape(len(clips), -1, 3).astype(np.float32) / 255
        parts = [pixels.mean(1), pixels.std(1)] if self.options.spread else [pixels.mean(1)]
        return np.concatenate(parts, axis=1)

    def onnx_export(self, frames: np.ndarray):
        raise NotImplementedError("the toy backbone has no ONNX graph")


def from_options(options: Options, *, weights, random_seed, backend, batch_clips) -> Toy:
    return Toy(options, random_seed)


def from_spec(spec, *, weights, random_seed, files, backend, batch_clips) -> Toy:
    size = spec["preprocessing"]["resize"][0]
    return Toy(Options(spread=spec["spread"], size=size), random_seed)
