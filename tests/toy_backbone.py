"""A backbone for the registry's test: per-channel means and spreads of a clip, no network."""

from __future__ import annotations

import numpy as np

from gesture_cache.video.decode import Preprocessing

PREPROCESSING = Preprocessing(
    name="toy", resize=(16, 16), interpolation="area", crop=(0, 16, 0, 16), scale=1.0,
    mean_bgr=None,
)  # fmt: skip


class Toy:
    name = "toy colour statistics"
    clip_len = 4
    clip_dtype = "uint8"
    clip_shape = (4, 16, 16, 3)
    feature_dim = 6
    network_in_stream = False
    preprocessing = PREPROCESSING

    def __init__(self, random_seed: int):
        self.random_seed = random_seed

    def fingerprint_fields(self) -> dict:
        return {
            "model": self.name,
            "weights": {"random_seed": self.random_seed},
            "preprocessing": self.preprocessing.record(),
            "precision": "float32",
        }

    def stream(self, frames):
        return iter(frames)

    def forward(self, clips: np.ndarray) -> np.ndarray:
        pixels = clips.reshape(len(clips), -1, 3).astype(np.float32) / 255
        return np.concatenate([pixels.mean(1), pixels.std(1)], axis=1)

    def onnx_export(self, frames: np.ndarray):
        raise NotImplementedError("the toy backbone has no ONNX graph")


def from_config(config, backend: str) -> Toy:
    return Toy(config.random_weights)


def from_spec(spec, preprocessing, *, weights, random_seed, mean_file, backend) -> Toy:
    return Toy(random_seed)
