"""What the extractor needs of a video backbone. C3D (`c3d.C3D`) is the one implementation;
a second backbone is one new module that provides these members."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from gesture_cache.video import Preprocessing


class Backbone(Protocol):
    name: str
    clip_len: int  # frames per clip
    input_size: int  # clip height and width after preprocessing
    feature_dim: int
    preprocessing: Preprocessing  # how decoded frames become its input

    def fingerprint_fields(self) -> dict:
        """Everything that decides its features (weights by content, every number)."""
        ...

    def forward(self, clips: np.ndarray) -> np.ndarray:
        """uint8 clips (n, clip_len, input_size, input_size, 3) -> float32 (n, feature_dim)."""
        ...
