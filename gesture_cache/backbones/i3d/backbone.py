"""`I3D`, the backbone the extractor uses: Mixed_5c averaged, on whichever Keras 3 backend
was chosen, one compiled batch call a backend."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np

from gesture_cache.backbones.base import check_weights_file, weights_record
from gesture_cache.backbones.i3d.checkpoint import installed_checkpoint, read_checkpoint
from gesture_cache.backbones.i3d.network import (
    CROP_SIZE,
    PREPROCESSING,
    build_i3d,
    feature_model,
    load_checkpoint,
    randomize,
)
from gesture_cache.backbones.i3d.options import Options
from gesture_cache.backbones.keras_backends import compiled_call, device_batch_clips, loaded_backend
from gesture_cache.common.errors import ConfigError
from gesture_cache.common.files import file_sha256
from gesture_cache.video.clips import CLIP_LEN

if TYPE_CHECKING:
    import onnx


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

    BYTES_PER_CLIP = 200 * 2**20  # its live activations for one clip at float32, rounded up

    def __init__(
        self,
        options: Options,
        *,
        weights: str | Path | None = None,
        random_seed: int | None = None,
        backend: str = "tensorflow",
        batch_clips: int | None = None,
    ):
        if weights is not None and random_seed is not None:
            raise ConfigError("give --weights FILE or --random-weights SEED, not both")
        if random_seed is None:
            weights = check_weights_file(weights) if weights is not None else installed_checkpoint()
            read_checkpoint(weights)  # refused now, before any recording is decoded
        self.options = options
        self.weights, self.random_seed, self.backend = weights, random_seed, backend
        self.batch_clips = batch_clips or device_batch_clips(
            backend, options.precision, self.BYTES_PER_CLIP
        )
        self._weights_sha256 = file_sha256(weights) if weights is not None else None
        self._forward: Callable | None = None
        self.build_seconds = 0.0

    @property
    def precision(self) -> str:
        return self.options.precision

    def fingerprint_fields(self) -> dict:
        return {
            "model": self.name,
            "layer": "Mixed_5c (mean over time, height and width)",
            "weights": weights_record(self._weights_sha256, self.random_seed),
            "preprocessing": self.preprocessing.record(),
            "precision": self.precision,
            # as for C3D: reduced-precision features are tied to the backend that made them
            **({} if self.precision == "float32" else {"backend": self.backend}),
        }

    def network(self, precision: str | None = None) -> keras.Model:
        """The network with its weights, at `precision` (default: the backbone's)."""
        precision = precision or self.precision
        network = build_i3d(dtype=None if precision == "float32" else precision)
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
            if self.backend == "torch":  # written directly (backbones/torch_direct.py)
                from gesture_cache.backbones.i3d.torch_network import torch_i3d
                from gesture_cache.backbones.torch_direct import torch_forward

                self._forward = torch_forward(
                    torch_i3d(self.network()), self.precision, self.batch_clips, self._compiled
                )
            else:
                self._forward = compiled_call(
                    feature_model(self.network()),
                    self.backend,
                    self.batch_clips,
                    self._compiled,
                    self.precision,
                )
            self.build_seconds += time.perf_counter() - started
        return self._forward(clips)

    def _compiled(self, seconds: float) -> None:
        self.build_seconds += seconds

    def onnx_export(self, frames: np.ndarray) -> tuple[onnx.ModelProto, np.ndarray]:
        from gesture_cache.backbones.i3d.onnx_graph import i3d_graph

        network = self.network("float32")
        return i3d_graph(network), feature_model(network).predict(frames, verbose=0)


def from_options(
    options: Options, *, weights: str | None, random_seed: int | None, backend: str,
    batch_clips: int | None,
) -> I3D:  # fmt: skip
    return I3D(
        options, weights=weights, random_seed=random_seed, backend=backend, batch_clips=batch_clips
    )


def from_spec(
    spec: dict, *, weights: str | None, random_seed: int | None, files: dict, backend: str,
    batch_clips: int | None,
) -> I3D:  # fmt: skip
    """The I3D a cache recorded: the installed checkpoint unless --weights names a copy."""
    options = Options(precision=spec["precision"])
    recorded = spec["weights"]
    if "random_seed" in recorded:
        return I3D(
            options, random_seed=recorded["random_seed"], backend=backend, batch_clips=batch_clips
        )
    i3d = I3D(options, weights=weights, backend=backend, batch_clips=batch_clips)
    if i3d.fingerprint_fields()["weights"] != recorded:
        raise ConfigError(
            f"the cache's I3D weights (sha256 {recorded['sha256'][:12]}...) are not "
            f"{i3d.weights}: give the checkpoint it was extracted with (--weights)"
        )
    return i3d
