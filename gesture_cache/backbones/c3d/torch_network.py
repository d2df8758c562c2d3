"""C3D as one PyTorch module, what the torch backend runs (backbones/torch_direct.py says
why and runs it): 1.46x the clips/s of the Keras model on Keras' torch backend on this CPU
(benchmarks/c3d_direct.py), and on a GPU what `torch.compile` and bf16 autocast are made
for (issue #37: 3,983 clips/s on an H200, where Keras on PyTorch gave 1,699). The module is
not a second definition of C3D: `torch_c3d` walks the Keras network (network.py: one
source for the layers) and copies each layer's weights, loaded and checked once; float32
features agree with the Keras model's within 1e-5 (tests/backbones/test_c3d_torch.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from gesture_cache.video.decode import Preprocessing

if TYPE_CHECKING:
    import keras


class ChannelsLastFlatten(nn.Module):
    """Keras flattens (n, d, h, w, c); PyTorch holds (n, c, d, h, w)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 4, 1).flatten(1)


class TorchC3D(nn.Module):
    """uint8 clips (n, 16, 112, 112, 3), BGR -> float32 features of the layer the network
    was cut at; the mean (per channel, or a cube) and the scale inside, as in Keras."""

    def __init__(self, layers: list[nn.Module], mean: np.ndarray, scale: float):
        super().__init__()
        self.layers = nn.Sequential(*layers)
        mean = np.asarray(mean, np.float32)
        mean = mean.reshape(1, 1, 1, 1, 3) if mean.ndim == 1 else mean[None]  # or a cube
        self.register_buffer("mean", torch.from_numpy(mean.transpose(0, 4, 1, 2, 3).copy()))
        self.scale = scale

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        x = (clips.permute(0, 4, 1, 2, 3).float() - self.mean) * self.scale
        return self.layers(x.contiguous(memory_format=torch.channels_last_3d)).float()


def torch_layers(layer: keras.layers.Layer) -> list[nn.Module]:
    """A Keras layer of C3D as PyTorch modules, its weights copied."""
    config, weights = layer.get_config(), [np.asarray(w) for w in layer.get_weights()]
    kind = type(layer).__name__
    if kind == "Conv3D":
        kernel, bias = weights  # (kd, kh, kw, in, out)
        conv = nn.Conv3d(kernel.shape[3], kernel.shape[4], kernel.shape[:3], padding="same")
        conv.weight.data = torch.from_numpy(kernel.transpose(4, 3, 0, 1, 2).copy())
        conv.bias.data = torch.from_numpy(bias)
        return [conv, nn.ReLU()]
    if kind == "MaxPooling3D":
        return [nn.MaxPool3d(config["pool_size"], config["strides"])]
    if kind == "ZeroPadding3D":
        (d0, d1), (h0, h1), (w0, w1) = config["padding"]
        return [nn.ConstantPad3d((w0, w1, h0, h1, d0, d1), 0.0)]
    if kind == "Flatten":
        return [ChannelsLastFlatten()]
    if kind == "Dense":
        kernel, bias = weights
        dense = nn.Linear(*kernel.shape)
        dense.weight.data = torch.from_numpy(kernel.T.copy())
        dense.bias.data = torch.from_numpy(bias)
        return [dense, nn.ReLU()] if config["activation"] == "relu" else [dense]
    if kind == "Dropout":
        return []
    raise ValueError(f"C3D has no layer like {layer.name} ({kind})")


def torch_c3d(
    network: keras.Model,
    layer: str,
    preprocessing: Preprocessing,
    mean_cube: np.ndarray | None = None,
) -> TorchC3D:
    """Our Keras C3D (network.py), cut at `layer`, with the preprocessing's mean and scale,
    as one PyTorch module (`feature_extractor`'s twin)."""
    modules = []
    for keras_layer in network.layers:
        modules += torch_layers(keras_layer)
        if keras_layer.name == layer:
            break
    mean = mean_cube if mean_cube is not None else (preprocessing.mean_bgr or (0.0, 0.0, 0.0))
    return TorchC3D(modules, mean, preprocessing.scale).eval()
