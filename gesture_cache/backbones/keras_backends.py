"""Which Keras 3 backend runs a backbone (TensorFlow, JAX or PyTorch), and a Keras model as
one compiled batch call on each.

Keras reads `KERAS_BACKEND` once, when it is first imported, so the choice is made here,
before anything imports Keras. Extraction (and predict/detect from video) runs on any of
the three; training keeps tf.data and runs on TensorFlow.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from gesture_cache import __version__
from gesture_cache.backbones.base import BackboneOptions, option
from gesture_cache.common.errors import ConfigError
from gesture_cache.common.versions import installed_version

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)


BACKENDS = ("tensorflow", "jax", "torch")


INSTALL = {
    "tensorflow": "pip install 'gesture_cache[cpu]' (or [gpu])",
    "jax": "pip install 'gesture_cache[jax]'",
    "torch": "pip install 'gesture_cache[torch]'",
}


# the distributions whose version is the backend's (TensorFlow ships under several names)
DISTRIBUTIONS = {
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tf-nightly"),
    "jax": ("jax",),
    "torch": ("torch",),
}


# Besides the backend, what a shard records the version of (a library that decodes, resizes
# or stores what the network sees), and the distributions that carry it.
RECORDED = {
    "keras": ("keras",),
    "opencv": ("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless"),
    "h5py": ("h5py",),
    "numpy": ("numpy",),
}


CPU_BATCH_CLIPS = 16


MAX_BATCH_CLIPS = 256


PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


@dataclass(frozen=True)
class KerasOptions(BackboneOptions):
    """The options of every backbone that runs on Keras."""

    precision: str = option(
        "float32",
        "compute precision, part of the fingerprint: float32 keeps caches comparable across "
        "backends and devices; mixed_bfloat16 is about 2x faster on CPUs with AVX-512 bf16 "
        "and on recent GPUs; mixed_float16 for GPUs",
        choices=PRECISIONS,
    )

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision {self.precision!r}: use one of {', '.join(PRECISIONS)}")


def installed(backend: str) -> bool:
    if backend in sys.modules:  # imported, or blocked (None)
        return sys.modules[backend] is not None
    try:
        return importlib.util.find_spec(backend) is not None
    except (ImportError, ValueError):  # a finder that refuses it
        return False


def default_backend() -> str:
    """`KERAS_BACKEND` when set, else TensorFlow when installed, else JAX, else PyTorch."""
    named = os.environ.get("KERAS_BACKEND")
    if named:
        return named
    for backend in BACKENDS:
        if installed(backend):
            return backend
    raise ConfigError(
        "no Keras backend is installed: " + "; or ".join(INSTALL[b] for b in BACKENDS)
    )


def use_backend(backend: str | None = None) -> str:
    """Set the backend Keras will load (before its first import) and return its name.
    Refuses an unknown or missing backend, or one other than the backend Keras has already
    loaded in this process."""
    given = backend
    backend = backend or default_backend()
    if backend not in BACKENDS:
        where = f"--backend {backend!r}" if given else f"KERAS_BACKEND={backend}"
        raise ConfigError(
            f"{where} is not a backend this tool runs on: use one of {', '.join(BACKENDS)}"
            + ("" if given else " (or unset KERAS_BACKEND)")
        )
    if not installed(backend):
        raise ConfigError(f"--backend {backend} is not installed: {INSTALL[backend]}")
    loaded = loaded_backend()
    if loaded is not None and loaded != backend:
        raise ConfigError(
            f"Keras is already running on {loaded} in this process; --backend {backend} "
            "needs a new process (or KERAS_BACKEND set before it starts)"
        )
    os.environ["KERAS_BACKEND"] = backend
    return backend


def loaded_backend() -> str | None:
    """The backend of the Keras already imported in this process, or None."""
    keras = sys.modules.get("keras")
    return keras.backend.backend() if keras is not None else None


def use_training_backend(command: str) -> None:
    """`train`, `tune`, `evaluate` and `export` feed Keras through tf.data: TensorFlow."""
    if not installed("tensorflow"):
        raise ConfigError(
            f"{command} needs TensorFlow (its input pipeline is tf.data): "
            f"{INSTALL['tensorflow']}. Extraction, info, verify, check, predict and detect "
            "run without it on JAX or PyTorch"
        )
    use_backend("tensorflow")


def backend_version(backend: str) -> str:
    return installed_version(*DISTRIBUTIONS[backend]) or "unknown"


def software_versions(backend: str) -> dict[str, str]:
    """The libraries that decide what a shard holds, as the shard records them. Read from
    the installed packages, nothing imported: recording a version must not load TensorFlow."""
    versions = {"gesture_cache": __version__, "backend": backend, backend: backend_version(backend)}
    for name, distributions in RECORDED.items():
        versions[name] = installed_version(*distributions) or "unknown"
    return versions


def accelerator_memory(backend: str) -> int | None:
    """Bytes of memory of the backend's first GPU, or None when it runs on the CPU. Asking
    for a GPU build without a GPU is not an error: it warns and runs on the CPU."""
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.mem_get_info()[1])
        if torch.version.cuda:
            log.warning("torch is a CUDA build but finds no GPU: C3D runs on the CPU")
        return None
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform != "gpu":
            return None
        stats = device.memory_stats() or {}
        return int(stats.get("bytes_limit", 16 * 2**30))
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        return None
    return 16 * 2**30  # TensorFlow does not report a GPU's size before it allocates


def device_batch_clips(backend: str, precision: str, bytes_per_clip: int) -> int:
    """Clips per model call, the one place it is decided: 16 on a CPU; on a GPU the largest
    power of two whose activations (`bytes_per_clip` at float32) fill about half its memory,
    at most 256."""
    memory = accelerator_memory(backend)
    if memory is None:
        return CPU_BATCH_CLIPS
    per_clip = bytes_per_clip // (1 if precision == "float32" else 2)
    fits = max(1, memory // 2 // per_clip)
    return int(min(MAX_BATCH_CLIPS, 2 ** (fits.bit_length() - 1)))


def tensorflow_call(model: keras.Model) -> Callable[[np.ndarray], np.ndarray]:
    """One tf.function traced once for any batch size."""
    import tensorflow as tf

    signature = [tf.TensorSpec((None, *model.input_shape[1:]), tf.uint8)]
    call = tf.function(lambda clips: model(clips, training=False), input_signature=signature)
    # a copy: a view would pin TensorFlow's output buffer, and with it the allocator's
    # memory around it, for as long as the features are kept (measured: ~0.5 MB a clip)
    return lambda clips: call(clips).numpy().copy()


def padded_batch(count: int, batch_clips: int) -> int:
    """The batch a compiled call runs `count` clips in: `batch_clips` when they are at least
    half of it, else the next power of two (3 clips in `predict` cost 4, not 256), so at most
    log2(batch_clips)+1 shapes are ever compiled."""
    return max(count, batch_clips if 2 * count >= batch_clips else 1 << (count - 1).bit_length())


def jax_call(
    model: keras.Model, batch_clips: int, compiled: Callable[[float], None]
) -> Callable[[np.ndarray], np.ndarray]:
    """A jitted stateless call. XLA compiles once per batch shape (each compilation's
    seconds go to `compiled`), so a partial batch is padded (`padded_batch`)."""
    import jax

    trainable = [v.value for v in model.trainable_variables]
    fixed = [v.value for v in model.non_trainable_variables]

    def stateless(trainable, fixed, clips):  # weights as arguments: constants would be folded
        features, _ = model.stateless_call(trainable, fixed, clips, training=False)
        return features

    jitted, by_shape = jax.jit(stateless), {}

    def call(clips: np.ndarray):
        if clips.shape not in by_shape:
            started = time.perf_counter()
            by_shape[clips.shape] = jitted.lower(trainable, fixed, clips).compile()
            compiled(time.perf_counter() - started)
        return by_shape[clips.shape](trainable, fixed, clips)

    def forward(clips: np.ndarray) -> np.ndarray:
        count = len(clips)
        padded = padded_batch(count, batch_clips)
        if padded > count:
            clips = np.concatenate(
                [clips, np.zeros((padded - count, *clips.shape[1:]), clips.dtype)]
            )
        return np.array(call(clips)[:count])  # a copy, as on TensorFlow

    return forward


def compiled_call(
    model: keras.Model,
    backend: str,
    batch_clips: int,
    compiled: Callable[[float], None],
    precision: str = "float32",
) -> Callable[[np.ndarray], np.ndarray]:
    """`model` as a batch call on `backend` (the one Keras runs on: TensorFlow or JAX; on
    PyTorch a backbone runs its own module, `torch_direct`), uint8 in, float32 out. A float32
    model computes in float32 on every device (`exact_float32`)."""
    if precision == "float32":
        exact_float32(backend)
    if backend == "jax":
        return jax_call(model, batch_clips, compiled)
    if backend == "tensorflow":
        return tensorflow_call(model)
    raise ValueError(f"no Keras batch call on {backend}: a backbone runs its own PyTorch module")


def exact_float32(backend: str) -> None:
    """TF32 off: NVIDIA GPUs since Ampere run float32 convolutions and matrix products with
    10-bit mantissas by default in PyTorch, JAX and TensorFlow, which moved an H200's C3D
    and I3D features 7e-4..1.5e-3 (of the largest value) from the CPU's. These are the three
    switches Keras' own test configuration sets; each is set before the model is traced.
    On a CPU they change nothing."""
    if backend == "torch":
        import torch

        if hasattr(torch.backends.cudnn, "conv"):  # PyTorch 2.9+: the global flag misses convs
            torch.backends.cudnn.conv.fp32_precision = "ieee"
            torch.backends.cuda.matmul.fp32_precision = "ieee"
        else:
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
    elif backend == "jax":
        import jax

        jax.config.update("jax_default_matmul_precision", "highest")  # convolutions too
    else:
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(False)
