"""Extraction on one Keras backend at each precision and batch size: the GPU run's figures.

    KERAS_BACKEND=jax python benchmarks/gpu.py [--videos 48] [--batch-sizes 32,64,128,256]
                                               [--precisions float32,mixed_bfloat16]

For every (precision, batch size): C3D alone on clips held in memory, the whole extraction
pipeline from video files (decode workers on every core, batching, shard writes), the peak
accelerator memory and, at the largest batch size on a CUDA GPU with PyTorch, the same C3D
written directly in PyTorch at its best for that precision (benchmarks/c3d_direct.py:
float32 with TF32 off; bf16 with channels_last_3d and torch.compile), so ours over direct is
measured in one run; once per run, decoding alone with every core. Keras picks its
backend once per process, so `gpu.sh` runs this once per backend. Each figure is printed as
it comes; the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from decode import clips_per_second  # beside this script

from gesture_cache.backbones import keras_backends
from gesture_cache.extract.config import ExtractConfig
from gesture_cache.extract.extraction import build_cache
from gesture_cache.extract.extractor import extractor_from_config, resolved
from gesture_cache.extract.job import Job
from gesture_cache.sources import synth
from gesture_cache.sources.meta import read_meta


def reset_peak_memory(backend: str) -> None:
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()


def peak_memory_mb(backend: str) -> float | None:
    """Peak accelerator memory: since the last reset (PyTorch), since the start (JAX)."""
    if backend == "torch":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    if backend == "jax":
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        return stats["peak_bytes_in_use"] / 2**20 if "peak_bytes_in_use" in stats else None
    return None


def direct_rate(network, config: ExtractConfig) -> float | None:
    """Clips/s of C3D written directly in PyTorch at this precision and batch (CUDA only)."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    from c3d_direct import clips_per_second  # beside this script

    from gesture_cache.backbones.c3d.preprocessing import make_preprocessing
    from gesture_cache.backbones.c3d.torch_network import torch_c3d

    bf16 = config.backbone_options.precision != "float32"
    model = torch_c3d(network, "fc7", make_preprocessing("c3d"))
    return clips_per_second(model, config.batch_clips, "cuda", bf16=bf16, compiled=bf16)[
        "clips_per_s"
    ]


def measure(
    csv: Path, clips: np.ndarray, config: ExtractConfig, out: Path, reference: bool
) -> dict:
    extractor = extractor_from_config(config)
    forward, batch = extractor.backbone.forward, config.batch_clips
    reset_peak_memory(config.backend)
    started = time.perf_counter()
    forward(clips[:batch])  # build and compile at this batch size
    compile_seconds = time.perf_counter() - started
    rounds = max(3, -(-len(clips) // batch))
    started = time.perf_counter()
    for i in range(rounds):
        offset = (i * batch) % max(1, len(clips) - batch + 1)
        forward(clips[offset : offset + batch])
    model_rate = rounds * batch / (time.perf_counter() - started)
    summary = build_cache(csv, out, config)
    pipeline_rate = summary.clips / max(summary.seconds - summary.setup_seconds, 1e-9)
    direct = direct_rate(extractor.backbone.network("float32"), config) if reference else None
    return {
        "backend": config.backend,
        "precision": config.backbone_options.precision,
        "batch_clips": batch,
        "model_clips_per_s": round(model_rate, 1),
        "pipeline_clips_per_s": round(pipeline_rate, 1),
        "ratio": round(pipeline_rate / model_rate, 3),
        "direct_pytorch_clips_per_s": direct,
        "model_over_direct": round(model_rate / direct, 3) if direct else None,
        "pipeline_clips": summary.clips,
        "compile_seconds": round(compile_seconds, 1),
        "peak_gpu_memory_mb": peak_memory_mb(config.backend),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=48, help="synthetic videos (~6 clips each)")
    parser.add_argument("--batch-sizes", default="32,64,128,256")
    parser.add_argument("--precisions", default="float32,mixed_bfloat16")
    parser.add_argument("--backend", help="default: as extract's (KERAS_BACKEND, ...)")
    args = parser.parse_args()
    backend = keras_backends.use_backend(args.backend)
    cores = os.cpu_count() or 1
    base = {"random_weights": 0, "decode_workers": cores, "dtype": "float16"}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        csv = synth.make_dataset(Path(tmp) / "videos", per_class=max(1, args.videos // 4), seed=0)
        probe = extractor_from_config(resolved(ExtractConfig(**base)))
        clips = np.stack(
            [clip for row in read_meta(csv) for _, clip, _ in probe.clips(probe.frames(row.path))]
        )
        jobs = [Job(r.recording_id, r.path, [r], None) for r in read_meta(csv)]
        decode = clips_per_second(jobs, probe, cores)
        print(f"{backend}: {len(clips)} clips; decoding alone on {cores} workers: {decode:.0f}/s")
        for precision in args.precisions.split(","):
            for batch in map(int, args.batch_sizes.split(",")):
                config = resolved(
                    ExtractConfig(**base, options={"precision": precision}, batch_clips=batch)
                )
                out = Path(tmp) / f"cache-{precision}-{batch}"
                largest = batch == max(map(int, args.batch_sizes.split(",")))
                result = measure(csv, clips, config, out, reference=largest)
                results.append(result)
                print(json.dumps(result), flush=True)
    accelerator = keras_backends.accelerator_memory(backend)
    print(
        json.dumps(
            {
                "backend": backend,
                "backend_version": keras_backends.backend_version(backend),
                "gpu_memory_gb": round(accelerator / 2**30, 1) if accelerator else None,
                "decode_clips_per_s_all_cores": round(decode, 1),
                "cores": cores,
                "clips": len(clips),
                "results": results,
                "machine": platform.node(),
            }
        )
    )


if __name__ == "__main__":
    main()
