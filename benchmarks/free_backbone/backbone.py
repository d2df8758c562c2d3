"""The free backbone: C3D's clips in, zeros of C3D's feature size out."""

from __future__ import annotations

import numpy as np

from gesture_cache.backbones.c3d.preprocessing import CROP_SIZE, make_preprocessing
from gesture_cache.video.clips import CLIP_LEN


class Free:
    name = "free (no network)"
    clip_len, clip_dtype, clip_shape = CLIP_LEN, "uint8", (CLIP_LEN, CROP_SIZE, CROP_SIZE, 3)
    feature_dim = 4096
    network_in_stream = False

    def __init__(self, batch_clips: int | None):
        self.preprocessing = make_preprocessing("c3d")
        self.batch_clips = batch_clips or 64

    def fingerprint_fields(self) -> dict:
        return {"model": self.name, "preprocessing": self.preprocessing.record()}

    def stream(self, frames):
        return iter(frames)

    def forward(self, clips: np.ndarray) -> np.ndarray:
        return np.zeros((len(clips), self.feature_dim), np.float32)


def from_options(options, *, weights, random_seed, backend, batch_clips) -> Free:
    return Free(batch_clips)


def from_spec(spec, *, weights, random_seed, files, backend, batch_clips) -> Free:
    return Free(batch_clips)
