"""Argument groups that several commands share, each written once."""

from __future__ import annotations

import argparse
import math

from gesture_cache import __version__
from gesture_cache.backbones.base import BACKBONES
from gesture_cache.backbones.keras_backends import BACKENDS
from gesture_cache.cache.shard import COMPRESSIONS
from gesture_cache.extract.config import RECIPES, ExtractConfig


def finite_float(text: str) -> float:
    """A number flag: NaN and infinity are refused here, for every flag alike."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r}: give a finite number")
    return value


def add_weights(p: argparse.ArgumentParser, weights_help: str, random_help: str = "") -> None:
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--weights", help=weights_help)
    weights.add_argument(
        "--random-weights", type=int, metavar="SEED", help=f"random weights from SEED {random_help}"
    )


def add_recorded_weights(p: argparse.ArgumentParser) -> None:
    """The files a run's cache was extracted with, to run its backbone again."""
    add_weights(p, "the weights file the cache was built with", "(if the cache was)")
    p.add_argument("--mean-file", help="the mean cube, if the cache was built with one")


def add_hands_arguments(p: argparse.ArgumentParser) -> None:
    d = ExtractConfig()
    p.add_argument(
        "--hands-model",
        default=d.hands_model,
        metavar="MODEL",
        help="hands: full (default) or lite (installed by `gesture-cache models install "
        "hands`), a hand_landmarker.task file, or a folder of the two .tflite models",
    )
    p.add_argument(
        "--max-hands", type=int, default=d.max_hands, help="hands: hands a frame (default 2)"
    )
    p.add_argument(
        "--mirrored",
        action="store_true",
        help="hands: the frames are mirrored (a selfie camera), so MediaPipe's handedness "
        "is the person's; otherwise it is swapped",
    )


def add_extract_arguments(p: argparse.ArgumentParser) -> None:
    d = ExtractConfig()
    p.add_argument(
        "--backbone",
        choices=list(BACKBONES),
        default=d.backbone,
        help="the frozen network whose features are cached: c3d (default; 4096 values a "
        "16-frame clip) or hands (MediaPipe hand landmarks; 128 values a hand a frame)",
    )
    add_weights(p, "Keras-2 HDF5 C3D Sports-1M weights file", "(for tests and demos only)")
    add_hands_arguments(p)
    p.add_argument(
        "--clip-stride",
        type=int,
        help="frames between clip starts (default 8 for c3d, 1 for hands): every clip of "
        "16 consecutive frames (1 for hands) starting every S frames, plus one aligned to "
        "the last frame",
    )
    p.add_argument(
        "--sampling",
        choices=["dense", "pad", "uniform"],
        help="dense (default): clips over the whole recording; pad: short recordings "
        "centred and padded to --frames F, long ones subsampled; uniform: resampled to F "
        "(pad and uniform reproduce the seed pipeline)",
    )
    p.add_argument("--frames", type=int, help="F, with --sampling pad or uniform")
    p.add_argument(
        "--fps",
        type=finite_float,
        help="frame rate of folders of frames without an fps column (default 30)",
    )
    p.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        default=d.recipe,
        help="default: --preprocess c3d --pad edge --pool5-pad caffe; seed: the pipeline this "
        "replaces (--preprocess reference --pad zero --pool5-pad symmetric)",
    )
    p.add_argument(
        "--pad",
        choices=["edge", "zero"],
        help="repeat edge frames (default), or black frames (only to reproduce the seed)",
    )
    p.add_argument(
        "--preprocess",
        choices=["c3d", "reference"],
        help="c3d (default): 171x128, mean subtraction, centre crop; reference: 112x112 / 255",
    )
    p.add_argument(
        "--mean-file",
        help="C3D mean cube .npy, BGR: (3, 16, 128, 171) as c3d-keras ships it, or "
        "(16, 128, 171, 3); a leading axis of 1 is accepted",
    )
    p.add_argument(
        "--pool5-pad",
        choices=["caffe", "symmetric"],
        help="padding before pool5: Caffe's (0,1) (default) or the seed's symmetric",
    )
    p.add_argument(
        "--layer",
        choices=["fc7", "fc6"],
        default=d.layer,
        help="which C3D layer's activations to cache",
    )
    p.add_argument(
        "--precision",
        choices=["float32", "mixed_float16", "mixed_bfloat16"],
        default=d.precision,
        help="C3D compute precision. float32 (default) keeps caches comparable; "
        "mixed_bfloat16 is about 2x faster on CPUs with AVX-512 bf16 (6e-3 relative error "
        "in fc7) and on recent GPUs; mixed_float16 for GPUs",
    )
    p.add_argument(
        "--hands-static",
        action="store_true",
        help="hands: palm detection on every frame instead of tracking the hands",
    )
    add_backend_argument(p)
    p.add_argument(
        "--batch-clips",
        type=int,
        default=d.batch_clips,
        help="clips per model call, drawn from several videos (default: 16 on a CPU, from "
        "the GPU's memory on a GPU, at most 256)",
    )
    p.add_argument(
        "--decode-workers",
        type=int,
        default=d.decode_workers,
        help=f"threads decoding recordings while the model runs (default: the {d.decode_workers} "
        "cores here)",
    )


def add_backend_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        help="the Keras 3 backend that runs C3D (default: KERAS_BACKEND, else tensorflow, "
        "jax or torch, the first installed)",
    )


def add_runtime_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--runtime",
        choices=["keras", "onnxruntime", "openvino", "litert"],
        help="keras for a run folder (default); for an exported bundle onnxruntime (default), "
        "openvino or litert: no TensorFlow needed",
    )


def add_meta_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("meta", help="meta CSV with file_path and action columns")
    p.add_argument("--video-root", help="folder the CSV's paths are relative to")
    p.add_argument("--path-column", default="file_path", help="column holding video paths")
    p.add_argument("--label-column", default="action", help="column holding labels")


def add_compression(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--compression",
        choices=COMPRESSIONS,
        default=ExtractConfig.compression,
        help="how shards store features: gzip (smaller) or none (read about 10x faster: "
        "for a cache trained from disk, larger than --memory-limit)",
    )


class PrintVersions(argparse.Action):
    """`--version`: the package and the libraries that decide features, as provenance
    records them, one per line (on the backend Keras would use here)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, help=kwargs.get("help"))

    def __call__(self, parser, namespace, values, option_string=None):
        from gesture_cache.backbones.keras_backends import default_backend, software_versions
        from gesture_cache.common.errors import ConfigError

        try:
            backend = default_backend()
            if backend not in BACKENDS:
                raise ConfigError(f"KERAS_BACKEND={backend} is not one of {', '.join(BACKENDS)}")
            versions = software_versions(backend)
        except ConfigError as error:  # no Keras backend installed: say so, not a traceback
            parser.exit(0, f"gesture-cache {__version__}\nbackend none ({error})\n")
        print(f"gesture-cache {versions.pop('gesture_cache')}")
        for name, version in versions.items():
            print(f"{name} {version}")
        parser.exit()


def add_storage_arguments(p: argparse.ArgumentParser) -> None:
    """A cache may be a URL (s3://bucket/prefix, gs://..., file:///...): how to reach it."""
    p.add_argument(
        "--storage-options",
        metavar="JSON",
        help="options for the URL's filesystem (fsspec), e.g. '{\"anon\": true}'; "
        "credentials come from the storage's own environment and files",
    )
    p.add_argument(
        "--cache-dir",
        help="where a cache at a URL is copied to be read (default ~/.cache/gesture_cache/remote)",
    )


def add_tracking_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--mlflow",
        action="store_true",
        help="log to MLflow (also on when MLFLOW_TRACKING_URI is set; default store: MLflow's "
        "own, which `mlflow ui` opens)",
    )
    p.add_argument(
        "--no-tensorboard",
        action="store_true",
        help="write no TensorBoard events (default: RUN/tensorboard; tensorboard --logdir DIR)",
    )
