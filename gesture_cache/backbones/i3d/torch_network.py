"""I3D as one PyTorch module, what the torch backend runs (backbones/torch_direct.py says
why): made from the Keras network's weights and following the same layout as
`network.build_i3d`, as the ONNX graph does (`onnx_graph.i3d_graph`): each Unit3D one
convolution with its batch norm folded in and a ReLU, TensorFlow's SAME padding (the odd
pixel after), max pools padded with -inf, the channel swap and scaling inside, uint8 BGR
frames (n, 16, 224, 224, 3) in, Mixed_5c averaged over time, height and width out (n, 1024).
Its features agree with the Keras model's within 1e-5 in float32
(tests/backbones/test_i3d_torch.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gesture_cache.backbones.i3d.layout import BLOCKS, layer_name

if TYPE_CHECKING:
    import keras


class SamePad(nn.Module):
    """TensorFlow's SAME padding for a window and strides: the total a dimension needs to
    give ceil(size / stride) outputs, half before and the odd one after."""

    def __init__(self, window: tuple, strides: tuple, value: float = 0.0):
        super().__init__()
        self.window, self.strides, self.value = window, strides, value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, window, stride in reversed(list(zip(x.shape[2:], self.window, self.strides))):
            total = max((-(-size // stride) - 1) * stride + window - size, 0)
            pads += [total // 2, total - total // 2]
        return F.pad(x, pads, value=self.value) if any(pads) else x


def unit(network: keras.Model, path: str) -> nn.Sequential:
    """Conv3D + BatchNormalization (no scale) + ReLU as one convolution and a ReLU."""
    conv = network.get_layer(layer_name(path, "conv"))
    bn = network.get_layer(layer_name(path, "bn"))
    kernel = np.asarray(conv.weights[0], np.float32)  # (kd, kh, kw, in, out)
    beta, mean, var = (np.asarray(w, np.float32) for w in bn.weights)
    factor = 1 / np.sqrt(var + bn.epsilon)
    folded = nn.Conv3d(kernel.shape[3], kernel.shape[4], conv.kernel_size, conv.strides)
    folded.weight.data = torch.from_numpy((kernel * factor).transpose(4, 3, 0, 1, 2).copy())
    folded.bias.data = torch.from_numpy(beta - mean * factor)
    return nn.Sequential(SamePad(conv.kernel_size, conv.strides), folded, nn.ReLU())


def max_pool(window: tuple, strides: tuple) -> nn.Sequential:
    return nn.Sequential(SamePad(window, strides, float("-inf")), nn.MaxPool3d(window, strides))


class Inception(nn.Module):
    def __init__(self, network: keras.Model, name: str):
        super().__init__()
        self.branches = nn.ModuleList([
            unit(network, f"{name}/Branch_0/Conv3d_0a_1x1"),
            nn.Sequential(unit(network, f"{name}/Branch_1/Conv3d_0a_1x1"),
                          unit(network, f"{name}/Branch_1/Conv3d_0b_3x3")),
            nn.Sequential(unit(network, f"{name}/Branch_2/Conv3d_0a_1x1"),
                          unit(network, f"{name}/Branch_2/Conv3d_0b_3x3")),
            nn.Sequential(max_pool((3, 3, 3), (1, 1, 1)),
                          unit(network, f"{name}/Branch_3/Conv3d_0b_1x1")),
        ])  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


class TorchI3D(nn.Module):
    def __init__(self, network: keras.Model):
        super().__init__()
        layers = [
            unit(network, "Conv3d_1a_7x7"),
            max_pool((1, 3, 3), (1, 2, 2)),
            unit(network, "Conv3d_2b_1x1"),
            unit(network, "Conv3d_2c_3x3"),
        ]
        for block in BLOCKS:
            layers.append(max_pool(*block[1:]) if len(block) == 3 else Inception(network, block[0]))
        self.layers = nn.Sequential(*layers)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        rgb = clips.permute(0, 4, 1, 2, 3).flip(1).float() / 127.5 - 1.0
        mixed_5c = self.layers(rgb.contiguous(memory_format=torch.channels_last_3d))
        return mixed_5c.float().mean(dim=(2, 3, 4))


def torch_i3d(network: keras.Model) -> TorchI3D:
    """`network` is `build_i3d`'s model with its weights, as one PyTorch module."""
    return TorchI3D(network).eval()
