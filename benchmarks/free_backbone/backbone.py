"""The free backbone: C3D's clips in, C3D-like features out at no cost (rows of one block
made once: non-negative, half of them zero, as fc7 after its ReLU, so the shards' gzip
works as hard as on real features). `Free.seconds_per_clip` makes it a stand-in for a GPU:
each batch then waits that long a clip with the GIL released, as a thread waiting for a
device does."""

from __future__ import annotations

import time

import numpy as np

from gesture_cache.backbones.c3d.preprocessing import CROP_SIZE, make_preprocessing
from gesture_cache.video.clips import CLIP_LEN


class Free:
    name = "free (no network)"
    clip_len, clip_dtype, clip_shape = CLIP_LEN, "uint8", (CLIP_LEN, CROP_SIZE, CROP_SIZE, 3)
    feature_dim = 4096
    network_in_stream = False
    seconds_per_clip = 0.0

    def __init__(self, batch_clips: int | None):
        self.preprocessing = make_preprocessing("c3d")
        self.batch_clips = batch_clips or 64
        rng = np.random.default_rng(0)
        block = rng.exponential(1.0, (self.batch_clips, self.feature_dim)).astype(np.float32)
        self.features = np.where(rng.random(block.shape) < 0.5, 0.0, block).astype(np.float32)

    def fingerprint_fields(self) -> dict:
        return {"model": self.name, "preprocessing": self.preprocessing.record()}

    def stream(self, frames):
        return iter(frames)

    def forward(self, clips: np.ndarray) -> np.ndarray:
        if self.seconds_per_clip:
            time.sleep(self.seconds_per_clip * len(clips))
        return self.features[: len(clips)]


def from_options(options, *, weights, random_seed, backend, batch_clips) -> Free:
    return Free(batch_clips)


def from_spec(spec, *, weights, random_seed, files, backend, batch_clips) -> Free:
    return Free(batch_clips)
