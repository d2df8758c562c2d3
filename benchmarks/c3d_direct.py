"""C3D written directly in PyTorch, as the reference `gpu.py` measures ours against.

The layers are not written again: `direct_c3d` walks our Keras network (one source for the
layer layout) and copies each layer's weights into its PyTorch twin, so both compute the
same features (checked by `python benchmarks/c3d_direct.py`, on the CPU too). What makes it
fast is what PyTorch users do by hand: `channels_last_3d` memory, bf16 autocast, and
`torch.compile` for the fixed batch shape (`clips_per_second`).

    python benchmarks/c3d_direct.py [--clips 4]   # parity with our C3D; the last line is JSON
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gesture_cache.backbones.c3d.preprocessing import C3D_BGR_MEAN  # noqa: E402

if TYPE_CHECKING:
    import keras


class ChannelsLastFlatten(nn.Module):
    """Keras flattens (n, d, h, w, c); PyTorch holds (n, c, d, h, w)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 4, 1).flatten(1)


class DirectC3D(nn.Module):
    """uint8 clips (n, 16, 112, 112, 3), BGR -> features of the layer the network was cut at."""

    def __init__(self, layers: list[nn.Module], mean_bgr: tuple[float, float, float]):
        super().__init__()
        self.layers = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(mean_bgr).view(1, 3, 1, 1, 1))

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        x = clips.permute(0, 4, 1, 2, 3).float() - self.mean
        return self.layers(x.contiguous(memory_format=torch.channels_last_3d))


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


def direct_c3d(network: keras.Model, layer: str = "fc7") -> DirectC3D:
    """Our Keras C3D (`C3D.network()`), cut at `layer`, as one PyTorch module."""
    modules = []
    for keras_layer in network.layers:
        modules += torch_layers(keras_layer)
        if keras_layer.name == layer:
            break
    return DirectC3D(modules, C3D_BGR_MEAN).eval()


def clips_per_second(
    model: DirectC3D, batch: int, device: str, bf16: bool, compiled: bool, rounds: int = 30
) -> dict:
    """Steady-state clips/s on one batch shape (compilation and warm-up timed apart)."""
    model = model.to(device).to(memory_format=torch.channels_last_3d)
    run = torch.compile(model) if compiled else model
    clips = torch.randint(0, 256, (batch, 16, 112, 112, 3), dtype=torch.uint8, device=device)
    autocast = torch.autocast(device.split(":")[0], torch.bfloat16, enabled=bf16)
    with torch.inference_mode(), autocast:
        started = time.perf_counter()
        for _ in range(3):
            run(clips)
        synchronize(device)
        warm_up = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(rounds):
            run(clips)
        synchronize(device)
    seconds = time.perf_counter() - started
    return {"clips_per_s": round(rounds * batch / seconds, 1), "warm_up_seconds": round(warm_up, 1)}


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    from gesture_cache.backbones.keras_backends import use_backend

    use_backend("torch")
    from gesture_cache.backbones.c3d.backbone import C3D
    from gesture_cache.backbones.c3d.options import Options

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=4)
    args = parser.parse_args()
    ours = C3D(Options(), random_seed=0, backend="torch", batch_clips=args.clips)
    direct = direct_c3d(ours.network())
    clips = np.random.default_rng(0).integers(0, 256, (args.clips, 16, 112, 112, 3), np.uint8)
    expected = ours.forward(clips)
    with torch.inference_mode():
        got = direct(torch.from_numpy(clips)).numpy()
    relative = float(np.abs(got - expected).max() / np.abs(expected).max())
    print(f"direct PyTorch C3D vs ours (fc7, float32, {args.clips} clips): {relative:.1e}")
    print(json.dumps({"direct_vs_ours_float32": relative}))


if __name__ == "__main__":
    main()
