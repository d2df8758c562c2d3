"""float32 on a GPU is float32: C3D and I3D features of the same seeded clips (random
weights from numpy, the same on every machine) computed on the GPU and on the CPU of one
machine, each backend and device in a process of its own; printed as the largest
difference over the largest value. The project promises 1e-5 across backends for float32.

    python benchmarks/gpu_parity.py [--backends torch,jax]

Runs from the checkout without installing it; the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FEATURES = """
import sys, numpy as np
from gesture_cache.backbones.c3d.backbone import C3D
from gesture_cache.backbones.c3d.options import Options as C3DOptions
from gesture_cache.backbones.i3d.backbone import I3D
from gesture_cache.backbones.i3d.options import Options as I3DOptions
rng = np.random.default_rng(0)
c3d = C3D(C3DOptions(), random_seed=0, backend=sys.argv[1], batch_clips=8)
i3d = I3D(I3DOptions(), random_seed=0, backend=sys.argv[1], batch_clips=4)
np.savez(
    sys.argv[2],
    c3d=c3d.forward(rng.integers(0, 256, (8, *C3D.clip_shape), dtype=np.uint8)),
    i3d=i3d.forward(rng.integers(0, 256, (4, *I3D.clip_shape), dtype=np.uint8)),
)
"""
CPU_ONLY = {"torch": {"CUDA_VISIBLE_DEVICES": ""}, "jax": {"JAX_PLATFORMS": "cpu"},
            "tensorflow": {"CUDA_VISIBLE_DEVICES": ""}}  # fmt: skip


def features(backend: str, device: str, out: Path) -> dict:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": path}
    if device == "cpu":
        env.update(CPU_ONLY[backend])
    subprocess.run([sys.executable, "-c", FEATURES, backend, str(out)], env=env, check=True)
    return dict(np.load(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="torch,jax")
    args = parser.parse_args()
    result = {}
    with tempfile.TemporaryDirectory() as scratch:
        for backend in args.backends.split(","):
            gpu = features(backend, "gpu", Path(scratch) / f"{backend}-gpu.npz")
            cpu = features(backend, "cpu", Path(scratch) / f"{backend}-cpu.npz")
            for network in ("c3d", "i3d"):
                difference = np.abs(gpu[network] - cpu[network]).max()
                relative = float(difference / np.abs(cpu[network]).max())
                result[f"{backend}_{network}_float32_gpu_vs_cpu"] = relative
                print(f"{backend:6s} {network}: {relative:.2e} of the largest value", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
