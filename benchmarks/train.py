"""Training throughput: the real cache pipeline vs. tensors in memory, and extract-once vs.
the reference way (C3D re-run on every batch of every epoch).

    python benchmarks/train.py [--quick]

1. `ratio`: seconds per epoch with the arrays already in memory as tensors, divided by
   seconds per epoch fed from the cache through `gesture_cache`'s tf.data pipeline (1.0 means
   the pipeline costs nothing). The cache for this part holds --videos videos, written in
   the real format from features of the extracted ones (the data pipeline, not C3D, is
   what is measured here).
2. `speedup`: 5 epochs done the reference way (decode and C3D inside the training loop, every
   batch of every epoch) vs. extracting once into a cache and then training 5 epochs from it.
3. `memory_copies`: peak resident memory added by loading the larger cache and training one
   epoch from it (in a fresh process), divided by the size of its features. `train` keeps
   a cache in memory while MEMORY_COPIES times its feature size fits in --memory-limit.
The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from gesture_cache import open_cache, synth
from gesture_cache.cache import CachedVideo, CacheWriter
from gesture_cache.config import ExtractConfig, TrainConfig
from gesture_cache.data import cache_tensors, standardisation, valid_first
from gesture_cache.extract import Extractor, extractor_spec, run_extraction
from gesture_cache.meta import read_meta
from gesture_cache.model import build_classifier
from gesture_cache.train import (
    MEMORY_COPIES,
    compiled_classifier,
    load_verified_cache,
    make_dataset,
)

EPOCHS = 5


def compiled_model(cache, rows):
    mean, variance = standardisation(cache.features, cache.mask, rows)
    model = build_classifier(
        "compact",
        len(cache.classes),
        tuple(cache.manifest["feature_shape"]),
        mean=mean,
        variance=variance,
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def seconds_per_epoch(model, fit_kwargs, epochs: int = 3) -> float:
    model.fit(epochs=1, verbose=0, **fit_kwargs)  # trace and warm up
    started = time.perf_counter()
    model.fit(epochs=epochs, verbose=0, **fit_kwargs)
    return (time.perf_counter() - started) / epochs


def replicate(source, out: Path, videos: int) -> None:
    """A larger cache in the real format, from the extracted features plus a little noise."""
    rng = np.random.default_rng(0)
    manifest = source.manifest
    with CacheWriter(
        out,
        manifest["extractor"],
        tuple(manifest["feature_shape"]),
        manifest["dtype"],
        shard_size=256,
    ) as writer:
        for i in range(videos):
            j = i % len(source)
            features = source.features[j].astype(np.float32)
            features = features + rng.normal(0, 0.01, features.shape) * (features > 0)
            writer.add(
                CachedVideo(
                    f"copy{i:06d}/{source.video_ids[j]}",
                    source.labels[j],
                    "",
                    f"{i:064x}",
                    features,
                    source.mask[j],
                    32,
                    25.0,
                    120,
                    160,
                )
            )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def measure_memory(path: str) -> None:
    """In a fresh process: what `train` holds for an in-memory cache, at its peak."""
    config = TrainConfig(epochs=1)
    warm_up = build_classifier("compact", 2, (2, 4096))  # TensorFlow's own start-up memory
    warm_up.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    warm_up.fit([np.zeros((32, 2, 4096)), np.ones((32, 2), bool)], np.zeros(32), verbose=0)
    before = peak_rss_mb()
    cache = load_verified_cache(path, memory_limit_mb=1e9)
    y = np.searchsorted(cache.classes, cache.labels).astype(np.int32)
    rows = np.arange(len(cache))
    tensors = cache_tensors(cache)
    model = compiled_classifier(cache, rows, config)
    model.fit(make_dataset(cache, tensors, rows, y, config, shuffle=True), epochs=1, verbose=0)
    features_mb = cache.features.nbytes / 2**20
    print(json.dumps({"features_mb": features_mb, "peak_added_mb": peak_rss_mb() - before}))


def main() -> None:
    if sys.argv[1:2] == ["--measure-memory"]:
        return measure_memory(sys.argv[2])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 videos, 2048-video copy")
    parser.add_argument("--real-videos", type=int, default=32)
    parser.add_argument("--videos", type=int, default=8192, help="size of the copied cache")
    args = parser.parse_args()
    n_real, n_copy = (16, 2048) if args.quick else (args.real_videos, args.videos)
    keras.utils.set_random_seed(0)
    config = TrainConfig()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        csv = synth.make_dataset(tmp / "videos", per_class=n_real // 4, seed=0)
        extract_config = ExtractConfig(random_weights=0, frames=32)

        # 2. the reference way: decode and C3D inside the loop, every batch of every epoch
        extractor = Extractor(extractor_spec(extract_config), None)
        rows = read_meta(csv)
        classes = sorted({r.label for r in rows})
        y_all = np.array([classes.index(r.label) for r in rows], np.int32)
        model = build_classifier("compact", len(classes), (2, 4096))
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        started = time.perf_counter()
        for _ in range(EPOCHS):
            for start in range(0, len(rows), config.batch_size):
                batch = rows[start : start + config.batch_size]
                loaded = [extractor.load(r.path) for r in batch]
                features = np.stack([extractor.clip_features(clips) for clips, _, _ in loaded])
                mask = np.stack([m for _, m, _ in loaded])
                features, mask = valid_first(features, mask)
                model.train_on_batch([features, mask], y_all[start : start + len(batch)])
        reference_seconds = time.perf_counter() - started
        print(f"reference way, {EPOCHS} epochs: {reference_seconds:.1f} s")

        started = time.perf_counter()
        run_extraction(csv, tmp / "cache", extract_config)
        cache = open_cache(tmp / "cache")
        y = np.searchsorted(cache.classes, cache.labels).astype(np.int32)
        everything = np.arange(len(cache))
        model = compiled_model(cache, everything)
        cache.features, cache.mask = valid_first(cache.features, cache.mask)
        model.fit(
            make_dataset(cache, cache_tensors(cache), everything, y, config, shuffle=True),
            epochs=EPOCHS,
            shuffle=False,
            verbose=0,
        )
        cached_seconds = time.perf_counter() - started
        print(f"extract once + {EPOCHS} epochs from the cache: {cached_seconds:.1f} s")

        # 1. the data pipeline on a larger cache
        replicate(cache, tmp / "big", n_copy)
        big = open_cache(tmp / "big")
        big.features, big.mask = valid_first(big.features, big.mask)
        y = np.searchsorted(big.classes, big.labels).astype(np.int32)
        everything = np.arange(len(big))
        dataset = make_dataset(big, cache_tensors(big), everything, y, config, shuffle=True)
        pipeline = seconds_per_epoch(
            compiled_model(big, everything), {"x": dataset, "shuffle": False}
        )
        features, mask = big.features.astype(np.float32), big.mask
        tensors = seconds_per_epoch(
            compiled_model(big, everything),
            {
                "x": [tf.constant(features), tf.constant(mask)],
                "y": tf.constant(y),
                "batch_size": config.batch_size,
                "shuffle": True,
            },
        )
        print(f"{n_copy} videos, s/epoch: pipeline {pipeline:.3f}, tensors {tensors:.3f}")
        measured = subprocess.run(
            [sys.executable, __file__, "--measure-memory", str(tmp / "big")],
            capture_output=True,
            text=True,
            check=True,
        )
        memory = json.loads(measured.stdout.strip().splitlines()[-1])
        copies = memory["peak_added_mb"] / memory["features_mb"]
        print(
            f"memory: features {memory['features_mb']:.0f} MB, peak added "
            f"{memory['peak_added_mb']:.0f} MB = {copies:.2f} copies (limit assumes "
            f"{MEMORY_COPIES})"
        )

    print(
        json.dumps(
            {
                "pipeline_s_per_epoch": round(pipeline, 4),
                "tensors_s_per_epoch": round(tensors, 4),
                "ratio": round(tensors / pipeline, 3),
                "reference_5_epochs_s": round(reference_seconds, 2),
                "extract_once_plus_5_epochs_s": round(cached_seconds, 2),
                "speedup": round(reference_seconds / cached_seconds, 2),
                "memory_copies": round(copies, 2),
                "videos_timed": n_copy,
                "real_videos": n_real,
                "machine": platform.node(),
            }
        )
    )


if __name__ == "__main__":
    main()
