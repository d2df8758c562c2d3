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
The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from gesture_cache import open_cache, synth
from gesture_cache.cache import CachedVideo, CacheWriter
from gesture_cache.config import ExtractConfig, TrainConfig
from gesture_cache.data import standardisation, valid_first
from gesture_cache.extract import Extractor, extractor_spec, run_extraction
from gesture_cache.meta import read_meta
from gesture_cache.model import build_classifier
from gesture_cache.train import make_dataset

EPOCHS = 5


def compiled_model(cache, rows):
    mean, variance = standardisation(cache.features[rows], cache.mask[rows])
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


def main() -> None:
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
        model.fit(
            make_dataset(cache, everything, y, config, shuffle=True),
            epochs=EPOCHS,
            shuffle=False,
            verbose=0,
        )
        cached_seconds = time.perf_counter() - started
        print(f"extract once + {EPOCHS} epochs from the cache: {cached_seconds:.1f} s")

        # 1. the data pipeline on a larger cache
        replicate(cache, tmp / "big", n_copy)
        big = open_cache(tmp / "big")
        y = np.searchsorted(big.classes, big.labels).astype(np.int32)
        everything = np.arange(len(big))
        pipeline = seconds_per_epoch(
            compiled_model(big, everything),
            {"x": make_dataset(big, everything, y, config, shuffle=True), "shuffle": False},
        )
        features, mask = valid_first(big.features.astype(np.float32), big.mask)
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

    print(
        json.dumps(
            {
                "pipeline_s_per_epoch": round(pipeline, 4),
                "tensors_s_per_epoch": round(tensors, 4),
                "ratio": round(tensors / pipeline, 3),
                "reference_5_epochs_s": round(reference_seconds, 2),
                "extract_once_plus_5_epochs_s": round(cached_seconds, 2),
                "speedup": round(reference_seconds / cached_seconds, 2),
                "videos_timed": n_copy,
                "real_videos": n_real,
                "machine": platform.node(),
            }
        )
    )


if __name__ == "__main__":
    main()
