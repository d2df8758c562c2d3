"""Backbones written directly in PyTorch (C3D's and I3D's `torch_network`), as the torch
backend runs them: the batch call, on the GPU when there is one.

Keras 3 on PyTorch hands each convolution a channels-first view of its channels-last
tensor and takes the result back, layer after layer. A backbone's PyTorch module takes the
clip permuted once and holds it `channels_last_3d`, the layout cuDNN's 3D kernels prefer;
on a GPU it is compiled for each batch shape, which is what `torch.compile` and bf16
autocast are made for (issue #37). Each module is made from the backbone's Keras network,
its weights copied, so the network keeps one definition and one set of loaded weights.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from gesture_cache.backbones.keras_backends import exact_float32, padded_batch

log = logging.getLogger(__name__)

AUTOCAST = {"float32": None, "mixed_bfloat16": torch.bfloat16, "mixed_float16": torch.float16}


def torch_forward(
    module: nn.Module,
    precision: str,
    batch_clips: int,
    compiled: Callable[[float], None],
) -> Callable[[np.ndarray], np.ndarray]:
    """The module as a batch call, uint8 in, float32 out, at `precision` (bf16 or fp16
    autocast for the mixed ones). On a CUDA GPU: cuDNN picks its fastest kernels for each
    batch shape, and the module is compiled for it (`torch.compile`, one graph a shape, a
    short batch padded as on JAX: `padded_batch`); the first call of each shape, compiling
    included, goes to `compiled`; where compiling fails, it runs eagerly, said once."""
    if precision == "float32":
        exact_float32("torch")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    module = module.to(device).to(memory_format=torch.channels_last_3d)
    autocast = AUTOCAST[precision]
    run: Callable[[torch.Tensor], torch.Tensor] = module
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
        run = torch.compile(module, dynamic=False)
    shapes: set[int] = set()

    def call(clips: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast(device, autocast, enabled=bool(autocast)):
            return run(clips)

    def forward(clips: np.ndarray) -> np.ndarray:
        nonlocal run
        count = len(clips)
        x = torch.from_numpy(np.ascontiguousarray(clips)).to(device)
        if device == "cuda":
            missing = padded_batch(count, batch_clips) - count
            x = torch.cat([x, x[-1:].expand(missing, *x.shape[1:])])
        started, first = time.perf_counter(), device == "cuda" and len(x) not in shapes
        try:
            features = call(x)
        except Exception as error:  # noqa: BLE001 - compiling is an optimisation
            if run is module:
                raise
            log.warning("torch.compile failed (%s): the backbone runs eagerly", error)
            run = module
            features = call(x)
        features = features[:count].cpu().numpy()
        if first:
            shapes.add(len(x))
            compiled(time.perf_counter() - started)
        return features

    return forward
