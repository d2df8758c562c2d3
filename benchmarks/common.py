"""What the benchmarks share: the extractor a default extraction records (their caches hold
synthetic features under it) and the peak memory of a real `gesture-cache train` process."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

EXTRACTOR = {  # what a default extraction records; the features here are synthetic
    "model": "C3D Sports-1M (Keras)",
    "layer": "fc7",
    "weights": {"random_seed": 0},
    "preprocessing": {"name": "c3d", "resize": [171, 128], "interpolation": "bilinear",
                      "crop": [8, 120, 29, 141], "scale": 1.0,
                      "mean_bgr": [90.25, 97.66, 101.41], "mean_sha256": None},
    "features_version": 4, "clip_len": 16, "sampling": "dense", "clip_stride": 8,
    "pad": "edge", "pool5_pad": "caffe", "precision": "float32",
}  # fmt: skip

WRAPPER = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
)


def resident_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def train_peak(
    cache: Path, run: Path, batch_size: int, *flags: str
) -> tuple[float, list[tuple[float, float]]]:
    """(peak MB of a whole `train` process, one epoch, its resident MB sampled over time)."""
    command = [sys.executable, "-c", WRAPPER, sys.executable, "-m", "gesture_cache.cli"]
    command += ["train", str(cache), "--out", str(run), "--epochs", "1"]
    command += ["--batch-size", str(batch_size), "--units", "16", "--dense", "0", *flags]
    wrapper = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    started, samples, child = time.perf_counter(), [], None
    while wrapper.poll() is None:
        if child is None:
            found = Path(f"/proc/{wrapper.pid}/task/{wrapper.pid}/children")
            children = found.read_text().split() if found.exists() else []
            child = int(children[0]) if children else None
        if child is not None and (rss := resident_mb(child)) is not None:
            samples.append((round(time.perf_counter() - started, 1), round(rss)))
        time.sleep(0.2)
    output = wrapper.stdout.read().split()
    if wrapper.returncode != 0 or not output:
        raise SystemExit(f"train failed on {cache} (exit {wrapper.returncode})")
    return int(output[-1]) / 1024, samples
