"""The C3D network (Sports-1M layout) and its weights.

The network is built whole, to fc8, so that a Keras-2 HDF5 weights file written by
`model.save_weights` loads layer by layer; `feature_extractor` then cuts it at fc7 or fc6
and puts the preprocessing (uint8 -> float, mean subtraction or scaling) inside the model,
so frames travel to it as uint8.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import keras
import numpy as np

from gesture_cache.backbones.c3d.preprocessing import CROP_SIZE
from gesture_cache.common.errors import ConfigError, GestureCacheError
from gesture_cache.common.hdf5 import open_plain
from gesture_cache.video.clips import CLIP_LEN
from gesture_cache.video.decode import Preprocessing

NUM_SPORTS1M_CLASSES = 487


POOL5_PADDING = {"caffe": ((0, 0), (0, 1), (0, 1)), "symmetric": (0, 1, 1)}  # options.POOL5_PADS


class WeightsError(GestureCacheError):
    """A weights file that cannot be loaded into C3D."""


def build_c3d(pool5_pad: str = "caffe", dtype: str | None = None) -> keras.Model:
    """The whole C3D network to fc8 (487 Sports-1M classes), with the reference layer names."""
    if pool5_pad not in POOL5_PADDING:
        raise ConfigError(f"unknown --pool5-pad {pool5_pad!r}: use 'caffe' or 'symmetric'")
    L = keras.layers

    def conv(filters: int, name: str) -> keras.layers.Layer:
        return L.Conv3D(filters, 3, activation="relu", padding="same", name=name, dtype=dtype)

    def pool(size: tuple[int, int, int], name: str) -> keras.layers.Layer:
        return L.MaxPooling3D(size, strides=size, padding="valid", name=name, dtype=dtype)

    layers = [
        conv(64, "conv1"),
        pool((1, 2, 2), "pool1"),
        conv(128, "conv2"),
        pool((2, 2, 2), "pool2"),
        conv(256, "conv3a"),
        conv(256, "conv3b"),
        pool((2, 2, 2), "pool3"),
        conv(512, "conv4a"),
        conv(512, "conv4b"),
        pool((2, 2, 2), "pool4"),
        conv(512, "conv5a"),
        conv(512, "conv5b"),
        L.ZeroPadding3D(POOL5_PADDING[pool5_pad], name="zeropad5", dtype=dtype),
        pool((2, 2, 2), "pool5"),
        L.Flatten(name="flatten", dtype=dtype),
        L.Dense(4096, activation="relu", name="fc6", dtype=dtype),
        L.Dropout(0.5, name="dropout_1", dtype=dtype),
        L.Dense(4096, activation="relu", name="fc7", dtype=dtype),
        L.Dropout(0.5, name="dropout_2", dtype=dtype),
        L.Dense(NUM_SPORTS1M_CLASSES, activation="softmax", name="fc8", dtype=dtype),
    ]
    return keras.Sequential([keras.Input((CLIP_LEN, CROP_SIZE, CROP_SIZE, 3))] + layers, name="c3d")


def randomize_weights(model: keras.Model, seed: int) -> None:
    """Glorot-uniform kernels and zero biases from numpy, so a seed gives the same weights
    on every machine and TensorFlow version."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for variable in layer.weights:
            shape = tuple(variable.shape)
            if len(shape) == 1:
                variable.assign(np.zeros(shape, np.float32))
                continue
            receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
            fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            variable.assign(rng.uniform(-limit, limit, shape).astype(np.float32))


def load_keras2_weights(model: keras.Model, path: str | Path) -> None:
    """Load a Keras-2 HDF5 weights file (`save_weights` layout, or a whole-model file with a
    `model_weights` group) by layer name, checking every shape."""
    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"weights file {path} is a folder: give the .h5 file in it")
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    if not h5py.is_hdf5(path):
        raise WeightsError(f"weights file {path} is not an HDF5 file")
    with open_plain(path, f"weights file {path}") as f:
        root = f["model_weights"] if "model_weights" in f else f
        for layer in model.layers:
            if not layer.weights:
                continue
            if layer.name not in root:
                raise WeightsError(f"weights file {path} has no layer {layer.name!r}")
            arrays = _layer_arrays(root[layer.name])
            if len(arrays) != len(layer.weights):
                raise WeightsError(
                    f"weights file {path}, layer {layer.name!r}: {len(arrays)} arrays, "
                    f"the model expects {len(layer.weights)}"
                )
            for variable, array in zip(layer.weights, arrays):
                if tuple(array.shape) != tuple(variable.shape):
                    raise WeightsError(
                        f"weights file {path}, layer {layer.name!r}: {variable.name} has shape "
                        f"{tuple(array.shape)} in the file, the model expects "
                        f"{tuple(variable.shape)}"
                    )
                variable.assign(array)


def _layer_arrays(group: h5py.Group) -> list[np.ndarray]:
    names = group.attrs.get("weight_names")
    if names is None:  # no attribute: take the datasets in file order
        found: list[np.ndarray] = []
        group.visititems(
            lambda _, obj: found.append(obj[()]) if isinstance(obj, h5py.Dataset) else None
        )
        return found
    return [group[n.decode() if isinstance(n, bytes) else n][()] for n in names]


def feature_extractor(
    c3d: keras.Model, layer: str, preprocessing: Preprocessing, mean_cube: np.ndarray | None = None
) -> keras.Model:
    """uint8 clips (batch, 16, 112, 112, 3) -> float32 features of `layer`, with the
    preprocessing's mean subtraction and scaling inside the model."""
    if layer not in ("fc6", "fc7"):
        raise ConfigError(f"unknown --layer {layer!r}: use 'fc7' or 'fc6'")
    clips = keras.Input((CLIP_LEN, CROP_SIZE, CROP_SIZE, 3), dtype="uint8", name="clips")
    x = keras.ops.cast(clips, "float32")
    if mean_cube is not None:
        x = x - mean_cube
    elif preprocessing.mean_bgr is not None:
        x = x - np.asarray(preprocessing.mean_bgr, np.float32)
    if preprocessing.scale != 1.0:
        x = x * preprocessing.scale
    for net_layer in c3d.layers:
        x = net_layer(x, training=False) if "dropout" in net_layer.name else net_layer(x)
        if net_layer.name == layer:
            break
    features = keras.ops.cast(x, "float32")
    return keras.Model(clips, features, name=f"c3d_{layer}")
