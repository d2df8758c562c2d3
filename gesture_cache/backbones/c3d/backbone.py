"""`C3D`, the backbone the extractor uses: the network cut at fc7 (or fc6) on whichever Keras
3 backend `keras_backends.use_backend` chose before Keras was imported, one compiled batch
call a backend."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np

from gesture_cache.backbones.base import check_weights_file, weights_record
from gesture_cache.backbones.c3d.network import (
    POOL5_PADDING,
    build_c3d,
    feature_extractor,
    load_keras2_weights,
    randomize_weights,
)
from gesture_cache.backbones.c3d.options import Options
from gesture_cache.backbones.c3d.preprocessing import CROP_SIZE, load_mean_cube, make_preprocessing
from gesture_cache.backbones.keras_backends import compiled_call, device_batch_clips, loaded_backend
from gesture_cache.common.errors import ConfigError
from gesture_cache.common.files import file_sha256
from gesture_cache.video.clips import CLIP_LEN
from gesture_cache.video.decode import Preprocessing

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)


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

    BYTES_PER_CLIP = 200 * 2**20  # its live activations for one clip at float32, rounded up

    def __init__(
        self,
        options: Options,
        *,
        weights: str | Path | None = None,
        random_seed: int | None = None,
        backend: str = "tensorflow",
        batch_clips: int | None = None,
        preprocessing: Preprocessing | None = None,
    ):
        """`preprocessing`: a cache's recorded one (a version-1 record), else the options'."""
        if (weights is None) == (random_seed is None):
            raise ConfigError("give exactly one of --weights FILE.h5 or --random-weights SEED")
        if weights is not None:
            check_weights_file(weights)
        self.options = options
        self.preprocessing = preprocessing or make_preprocessing(
            options.preprocess, options.mean_file
        )
        if options.mean_file is not None:
            load_mean_cube(options.mean_file, self.preprocessing)  # its shape, checked up front
        self.weights, self.random_seed, self.backend = weights, random_seed, backend
        self.batch_clips = batch_clips or device_batch_clips(
            backend, options.precision, self.BYTES_PER_CLIP
        )
        self._weights_sha256 = file_sha256(weights) if weights is not None else None
        self._forward: Callable | None = None
        self.build_seconds = 0.0  # building the network and loading its weights, once

    @property
    def precision(self) -> str:
        return self.options.precision

    @property
    def layer(self) -> str:
        return self.options.layer

    @property
    def pool5_pad(self) -> str:
        return self.options.pool5_pad

    @property
    def mean_file(self) -> str | None:
        return self.options.mean_file

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
            if self.backend == "tensorflow":  # JAX and PyTorch time each shape's compiling
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
        from gesture_cache.backbones.c3d.onnx_graph import c3d_graph

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
        if self.backend == "torch":  # written directly: Keras' layout changes cost 1.5x here
            from gesture_cache.backbones.c3d.torch_network import torch_c3d
            from gesture_cache.backbones.torch_direct import torch_forward

            module = torch_c3d(network, self.layer, self.preprocessing, self.mean_cube())
            return torch_forward(module, self.precision, self.batch_clips, self._compiled)
        model = feature_extractor(network, self.layer, self.preprocessing, self.mean_cube())
        return compiled_call(model, self.backend, self.batch_clips, self._compiled, self.precision)


def from_options(
    options: Options, *, weights: str | None, random_seed: int | None, backend: str,
    batch_clips: int | None,
) -> C3D:  # fmt: skip
    """The C3D of `extract`'s settings, on `backend` (chosen already)."""
    return C3D(
        options, weights=weights, random_seed=random_seed, backend=backend, batch_clips=batch_clips
    )


def from_spec(
    spec: dict, *, weights: str | None, random_seed: int | None, files: dict, backend: str,
    batch_clips: int | None,
) -> C3D:  # fmt: skip
    """The C3D a cache recorded, with the user's weights and mean cube (`files`), which must
    be the cache's: the cube by its sha256."""
    recorded = Preprocessing.from_record(spec["preprocessing"])
    mean_file = files.get("mean_file")
    check_mean_file(recorded, mean_file)
    options = Options(
        precision=spec["precision"],
        preprocess=recorded.name,
        mean_file=mean_file,
        pool5_pad=spec["pool5_pad"],
        layer=spec["layer"],
    )
    return C3D(
        options, weights=weights, random_seed=random_seed, backend=backend,
        batch_clips=batch_clips, preprocessing=recorded,
    )  # fmt: skip


def check_mean_file(recorded: Preprocessing, mean_file: str | None) -> None:
    """The mean cube must be the one the cache subtracted, by sha256, or none at all."""
    expected = recorded.mean_sha256
    if expected is None:
        if mean_file:
            raise ConfigError(
                f"--mean-file {mean_file}: the cache subtracted the per-channel mean, not a "
                "mean cube; drop --mean-file"
            )
        return
    if not mean_file:
        raise ConfigError(
            f"the cache subtracted a mean cube (sha256 {expected[:12]}...); give --mean-file"
        )
    if not Path(mean_file).is_file():
        raise ConfigError(f"--mean-file {mean_file} does not exist")
    actual = file_sha256(mean_file)
    if actual != expected:
        raise ConfigError(
            f"--mean-file {mean_file} (sha256 {actual[:12]}) is not the cube the cache was "
            f"built with (sha256 {expected[:12]})"
        )
