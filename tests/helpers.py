"""Small builders shared by the tests: videos of every awkward kind and Keras-2 weights files."""

from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import keras
import numpy as np


def write_video(
    path: Path,
    n_frames: int,
    width: int = 64,
    height: int = 48,
    fps: float = 25,
    grey: bool = False,
    seed: int = 0,
) -> Path:
    """An MJPG video of a bright square moving over noise."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height), isColor=not grey
    )
    for i in range(n_frames):
        frame = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
        x = int((width - 1) * i / max(n_frames - 1, 1))
        frame[:, max(0, x - 2) : x + 3] = 230
        writer.write(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if grey else frame)
    writer.release()
    assert path.stat().st_size > 0, f"OpenCV wrote nothing to {path}"
    return path


def save_keras2_weights(model: keras.Model, path: Path) -> Path:
    """Write `model`'s weights in the layout Keras 2.2.4's `save_weights` used: root attributes
    layer_names/backend/keras_version, one group per layer with weight_names."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [layer.name.encode() for layer in model.layers]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for layer in model.layers:
            group = f.create_group(layer.name)
            names = [f"{layer.name}/{w.name}:0" for w in layer.weights]
            group.attrs["weight_names"] = [n.encode() for n in names]
            for name, weight in zip(names, layer.weights):
                group.create_dataset(name, data=np.asarray(weight.numpy()))
    return path
