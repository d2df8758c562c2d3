"""The C3D network (Sports-1M layout), its weights and its pixel preprocessing, and `C3D`,
the backbone the extractor uses.

The network is built whole, to fc8, so that a Keras-2 HDF5 weights file written by
`model.save_weights` loads layer by layer; `feature_extractor` then cuts it at fc7 or fc6
and puts the preprocessing (uint8 -> float, mean subtraction or scaling) inside the model,
so frames travel to it as uint8. It runs on whichever Keras 3 backend `keras_backends.use_backend`
chose before Keras was imported; each backend gets its own compiled batch call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import keras
import numpy as np

from gesture_cache.backbones.base import check_weights_file, weights_record
from gesture_cache.backbones.keras_backends import CPU_BATCH_CLIPS, compiled_call, loaded_backend
from gesture_cache.common.errors import ConfigError, GestureCacheError
from gesture_cache.common.files import file_sha256
from gesture_cache.common.hdf5 import open_plain
from gesture_cache.video.clips import CLIP_LEN
from gesture_cache.video.decode import Preprocessing

if TYPE_CHECKING:
    import onnx

    from gesture_cache.extract.config import ExtractConfig

log = logging.getLogger(__name__)

CROP_SIZE = 112  # C3D's input height and width


C3D_BGR_MEAN = (90.25, 97.66, 101.41)


def make_preprocessing(name: str = "c3d", mean_file: str | Path | None = None) -> Preprocessing:
    """`c3d` as in the Caffe original and the Keras ports, `reference`
    as in the blog the old pipeline followed."""
    if name == "c3d":
        return Preprocessing(
            name="c3d",
            resize=(171, 128),
            interpolation="bilinear",
            crop=(8, 120, 29, 141),
            scale=1.0,
            mean_bgr=None if mean_file else C3D_BGR_MEAN,
            mean_sha256=file_sha256(mean_file) if mean_file else None,
        )
    if name == "reference":
        if mean_file:
            raise ConfigError("--mean-file only applies to --preprocess c3d")
        return Preprocessing(
            name="reference",
            resize=(112, 112),
            interpolation="area",
            crop=(0, 112, 0, 112),
            scale=1 / 255,
            mean_bgr=None,
        )
    raise ConfigError(f"unknown preprocessing {name!r}: use 'c3d' or 'reference'")


NUM_SPORTS1M_CLASSES = 487


POOL5_PADDING = {"caffe": ((0, 0), (0, 1), (0, 1)), "symmetric": (0, 1, 1)}


class WeightsError(GestureCacheError):
    """A weights file that cannot be loaded into C3D."""


def load_mean_cube(mean_file: str | Path, preprocessing: Preprocessing) -> np.ndarray:
    """A C3D mean cube, BGR, cropped to the model's input as (16, 112, 112, 3).

    Accepted layouts: channels first (3, 16, 128, 171), as c3d-keras stores `c3d_mean.npy`,
    or channels last (16, 128, 171, 3); either with a leading batch axis of 1.
    """
    try:
        cube = np.load(mean_file, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ConfigError(f"--mean-file {mean_file} is not a .npy array: {error}") from None
    width, height = preprocessing.resize
    channels_first, channels_last = (3, CLIP_LEN, height, width), (CLIP_LEN, height, width, 3)
    shape = cube.shape[1:] if cube.ndim == 5 and cube.shape[0] == 1 else cube.shape
    cube = cube.reshape(shape).astype(np.float32)
    if shape == channels_first:
        cube = np.moveaxis(cube, 0, -1)
    elif shape != channels_last:
        raise ConfigError(
            f"--mean-file {mean_file}: shape {tuple(cube.shape)}; expected {channels_first} "
            f"(channels first, as c3d-keras ships it) or {channels_last}, optionally with a "
            "leading axis of 1"
        )
    if not np.isfinite(cube).all():
        raise ConfigError(f"--mean-file {mean_file} holds inf or NaN")
    r0, r1, c0, c1 = preprocessing.crop
    return cube[:, r0:r1, c0:c1, :]


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


class C3D:
    """C3D Sports-1M cut at fc7 (or fc6): uint8 clips (n, 16, 112, 112, 3) -> (n, 4096).

    Implements the backbone interface (`backbone.Backbone`). The network is built on the
    first `forward`, so a job whose recordings all fail to decode never pays for it."""

    name = "C3D Sports-1M (Keras)"
    clip_len = CLIP_LEN
    clip_dtype = "uint8"
    clip_shape = (CLIP_LEN, CROP_SIZE, CROP_SIZE, 3)
    feature_dim = 4096
    network_in_stream = False

    def __init__(
        self,
        preprocessing: Preprocessing,
        weights: str | Path | None = None,
        random_seed: int | None = None,
        mean_file: str | Path | None = None,
        layer: str = "fc7",
        pool5_pad: str = "caffe",
        precision: str = "float32",
        backend: str = "tensorflow",
        batch_clips: int = 16,
    ):
        if (weights is None) == (random_seed is None):
            raise ConfigError("give exactly one of --weights FILE.h5 or --random-weights SEED")
        if weights is not None:
            check_weights_file(weights)
        if layer not in ("fc7", "fc6"):
            raise ConfigError(f"unknown --layer {layer!r}: use fc7 or fc6")
        if pool5_pad not in POOL5_PADDING:
            raise ConfigError(f"unknown --pool5-pad {pool5_pad!r}: use 'caffe' or 'symmetric'")
        if precision not in ("float32", "mixed_float16", "mixed_bfloat16"):
            raise ConfigError(f"unknown --precision {precision!r}")
        if mean_file is not None:
            load_mean_cube(mean_file, preprocessing)  # its shape, checked up front
        self.preprocessing = preprocessing
        self.weights, self.random_seed, self.mean_file = weights, random_seed, mean_file
        self.layer, self.pool5_pad, self.precision = layer, pool5_pad, precision
        self.backend, self.batch_clips = backend, batch_clips
        self._weights_sha256 = file_sha256(weights) if weights is not None else None
        self._forward: Callable | None = None
        self.build_seconds = 0.0  # building the network and loading its weights, once

    def fingerprint_fields(self) -> dict:
        """Everything that decides the features: content and numbers, no file names."""
        return {
            "model": self.name,
            "layer": self.layer,
            "weights": weights_record(self._weights_sha256, self.random_seed),
            "preprocessing": self.preprocessing.record(),
            "pool5_pad": self.pool5_pad,
            "precision": self.precision,
            # float32 features agree across backends to 1e-5 (tested); reduced-precision ones
            # do not (0.3 apart in bf16), so only those caches are tied to their backend
            **({} if self.precision == "float32" else {"backend": self.backend}),
        }

    def stream(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        return iter(frames)

    def forward(self, clips: np.ndarray) -> np.ndarray:
        if self._forward is None:
            started = time.perf_counter()
            self._forward = self._build()
            if self.backend != "jax":  # JAX compiles per batch shape, timed as it does
                self._forward(clips[:1])  # trace it
            self.build_seconds += time.perf_counter() - started
        return self._forward(clips)

    def _compiled(self, seconds: float) -> None:
        self.build_seconds += seconds

    def network(self, precision: str | None = None) -> keras.Model:
        """The whole network with its weights, at `precision` (default: the backbone's)."""
        precision = precision or self.precision
        network = build_c3d(self.pool5_pad, dtype=None if precision == "float32" else precision)
        if self.weights is not None:
            load_keras2_weights(network, self.weights)
        else:
            randomize_weights(network, self.random_seed)
        return network

    def mean_cube(self) -> np.ndarray | None:
        """The mean cube cropped to the model's input, or None (the per-channel mean)."""
        return load_mean_cube(self.mean_file, self.preprocessing) if self.mean_file else None

    def onnx_export(self, frames: np.ndarray) -> tuple[onnx.ModelProto, np.ndarray]:
        from gesture_cache.backbones.c3d_onnx import c3d_graph

        if self.precision != "float32":
            log.warning(
                "the cache's C3D ran in %s; the bundle's backbone computes in float32",
                self.precision,
            )
        network = self.network("float32")
        cube = self.mean_cube()
        pre = self.preprocessing
        mean = cube if cube is not None else np.asarray(pre.mean_bgr or (0, 0, 0), np.float32)
        graph = c3d_graph(
            network, self.layer, pre.resize, pre.crop, mean, pre.scale,
            POOL5_PADDING[self.pool5_pad], self.clip_len,
        )  # fmt: skip
        r0, r1, c0, c1 = pre.crop
        keras_model = feature_extractor(network, self.layer, pre, cube)
        return graph, keras_model.predict(frames[:, :, r0:r1, c0:c1], verbose=0)

    def _build(self) -> Callable[[np.ndarray], np.ndarray]:
        loaded = loaded_backend()
        if loaded is not None and loaded != self.backend:
            raise ConfigError(
                f"Keras runs on {loaded} in this process, C3D was set up for {self.backend}"
            )
        network = self.network()
        model = feature_extractor(network, self.layer, self.preprocessing, self.mean_cube())
        return compiled_call(model, self.backend, self.batch_clips, self._compiled)


def from_config(config: ExtractConfig, backend: str) -> C3D:
    """The C3D of `extract`'s settings, on `backend` (chosen already)."""
    return C3D(
        make_preprocessing(config.preprocess, config.mean_file),
        weights=config.weights,
        random_seed=config.random_weights,
        mean_file=config.mean_file,
        layer=config.layer,
        pool5_pad=config.pool5_pad,
        precision=config.precision,
        backend=backend,
        batch_clips=config.batch_clips or CPU_BATCH_CLIPS,
    )


def from_spec(
    spec: dict,
    preprocessing: Preprocessing,
    *,
    weights: str | None,
    random_seed: int | None,
    mean_file: str | None,
    backend: str,
) -> C3D:
    """The C3D a cache recorded, with the user's weights and mean files."""
    return C3D(
        preprocessing,
        weights=weights,
        random_seed=random_seed,
        mean_file=mean_file,
        layer=spec["layer"],
        pool5_pad=spec["pool5_pad"],
        precision=spec["precision"],
        backend=backend,
    )
