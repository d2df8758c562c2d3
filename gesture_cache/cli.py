"""The `gesture-cache` command: parses arguments and calls the modules; no logic of its own."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import traceback
from collections.abc import Sequence
from dataclasses import fields

from gesture_cache.backends import BACKENDS, use_training_backend
from gesture_cache.config import (
    COMPRESSIONS,
    RECIPES,
    DetectSettings,
    ExtractConfig,
    TrainConfig,
    load_config_file,
    make_train_config,
)
from gesture_cache.errors import GestureCacheError
from gesture_cache.interrupts import acted_on, handled, watching

# TensorFlow, pandas, OpenCV and matplotlib load in seconds, so each command imports the
# modules it needs when it runs: `--help`, `info` and `verify` start at once.

EXIT_FAILED, EXIT_SETUP = 1, 2
EXIT_BROKEN_PIPE = 141  # what a shell reports for a command whose reader went away (SIGPIPE)


def finite_float(text: str) -> float:
    """A number flag: NaN and infinity are refused here, for every flag alike."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r}: give a finite number")
    return value


def cmd_synth(args: argparse.Namespace) -> int:
    from gesture_cache import synth

    if args.recordings:
        csv_path = synth.make_recordings(args.out, args.recordings, args.gestures, args.seed)
        print(f"wrote {args.recordings} continuous recordings and {csv_path}")
        return 0
    csv_path = synth.make_dataset(args.out, args.per_class, args.seed)
    print(f"wrote {args.per_class * len(synth.GESTURES)} videos and {csv_path}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from gesture_cache import datasets

    result = datasets.import_dataset(args.format, args.root, args.out)
    for line in result.skipped:
        print(f"skipped {line}")
    for line in result.gaps:
        print(f"gap     {line}")
    print(f"wrote {result.rows} rows to {result.csv}")
    if result.unlabelled:
        print(f"wrote {result.unlabelled_rows} unlabelled ids (for predict) to {result.unlabelled}")
    if result.removed:
        print(f"removed {result.removed}: an earlier import's unlabelled ids, stale now")
    if result.skipped:
        print(f"{len(result.skipped)} rows could not be used (listed above)")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from gesture_cache import meta

    rows = meta.read_meta(args.meta, args.video_root, args.path_column, args.label_column)
    table = meta.check_rows(rows, args.fps)
    print(table.to_string(index=False))
    bad = int((~table["usable"]).sum())
    print(f"\n{len(table) - bad} of {len(table)} rows usable" + (f", {bad} not" if bad else ""))
    return EXIT_FAILED if bad else 0


def cmd_extract(args: argparse.Namespace) -> int:
    from gesture_cache import extract, report

    names = {f.name for f in fields(ExtractConfig)}
    config = ExtractConfig(**{k: v for k, v in vars(args).items() if k in names})
    summary = extract.run_extraction(args.meta, args.out, config)
    print(report.extract_summary(summary, args.out))
    if not summary.ok:
        print("error: nothing could be cached", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_FAILED if config.strict and summary.failures_recorded else 0


def cmd_info(args: argparse.Namespace) -> int:
    from gesture_cache import cache, integrity, report

    manifest = cache.read_manifest(args.cache, check_hashes=False)  # hashes: verify's job
    failures = cache.read_failures(args.cache)
    shortfalls = cache.frame_shortfalls(args.cache, manifest)
    verified = integrity.last_verified(args.cache, manifest)
    if args.json:
        short = [{"video_id": v, "claimed": c, "decoded": d} for v, c, d in shortfalls]
        extra = {"failures": list(failures.values()), "frame_shortfalls": short}
        print(json.dumps({**manifest, **extra, "last_verified": verified}, indent=2))
    else:
        print(report.cache_info(manifest, failures, shortfalls, verified))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from gesture_cache import integrity

    result = integrity.verify_cache(args.cache)
    for warning in result.warnings:
        print(f"WARN {warning}")
    for problem in result.problems:
        print(f"FAIL {problem}")
    if result.problems:
        return EXIT_FAILED
    print(f"OK {args.cache}: {result.recordings} recordings verified")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from gesture_cache import integrity

    manifest = integrity.merge_caches(args.caches, args.out, args.compression)
    count = manifest["recordings"]
    print(f"merged {len(args.caches)} caches into {args.out}: {count} recordings")
    return 0


def cmd_repair(args: argparse.Namespace) -> int:
    from gesture_cache import integrity

    result = integrity.repair_cache(args.cache)
    for dropped in result.dropped:
        print(f"dropped {dropped}")
    print(f"repaired {args.cache}: {result.summary()}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    use_training_backend("train")
    from gesture_cache import report, train

    names = {f.name for f in fields(TrainConfig)}
    overrides = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if args.resume:
        if args.config or args.split_from:
            raise GestureCacheError(
                "--resume uses the run's saved settings and split; drop --config/--split-from"
            )
        if "units" in overrides:
            overrides["units"] = make_train_config({}, {"units": overrides["units"]}).units
        result = train.resume(args.out, args.cache, overrides)
    else:
        if args.cache is None:
            raise GestureCacheError("give the CACHE to train on")
        file_values = load_config_file(args.config) if args.config else {}
        config = make_train_config(file_values, overrides)
        result = train.train(args.cache, args.out, config, split_from=args.split_from)
    print(report.metrics_table(result.metrics))
    state = "interrupted (--resume continues it)" if result.interrupted else "finished"
    print(f"\nrun {state} after {result.epochs} epochs: {args.out}")
    return 130 if result.interrupted else 0


def cmd_tune(args: argparse.Namespace) -> int:
    use_training_backend("tune")
    from gesture_cache import report, runs, tune

    file_values = load_config_file(args.config) if args.config else {}
    base = make_train_config(file_values, {"epochs": args.epochs, "seed": args.seed})
    study = tune.tune(
        args.cache, args.out, args.trials, base, args.storage, args.study, args.heartbeat
    )
    print(report.study_table(study))
    print()
    print(runs.format_table(runs.runs_table(args.out, "test_accuracy"), "table"))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from gesture_cache import runs

    print(runs.format_table(runs.runs_table(args.folder, args.sort), args.format))
    return 0


def cmd_export_features(args: argparse.Namespace) -> int:
    from gesture_cache import export_features

    out = export_features.export_parquet(args.cache, args.out)
    print(f"exported {args.cache} as Parquet: {out} (recordings, clips, segments, README.md)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    use_training_backend("evaluate")
    from gesture_cache import report, train

    metrics = train.evaluate_run(args.run, args.cache)
    print(json.dumps(metrics, indent=2) if args.json else report.metrics_table(metrics))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from gesture_cache import predict, report

    results = predict.predict_videos(
        args.run,
        args.videos,
        args.weights,
        args.random_weights,
        args.mean_file,
        args.top_k,
        args.allow_other_weights,
        args.fps,
        args.runtime,
        args.backend,
    )
    print(json.dumps(results, indent=2) if args.json else report.predictions_table(results))
    return EXIT_FAILED if any("error" in r for r in results) else 0


def cmd_detect(args: argparse.Namespace) -> int:
    from gesture_cache import detect, report

    settings = DetectSettings(args.smoothing, args.on, args.off, args.min_gap)

    def announce(event: detect.Event, latency: float) -> None:
        print(
            f"FIRED {event.label} in {event.recording} at frame {event.fired_frame} "
            f"(latency {1000 * latency:.0f} ms)",
            flush=True,
        )

    result = detect.run_detection(
        args.run,
        args.sources,
        args.out,
        settings,
        weights=args.weights,
        random_weights=args.random_weights,
        mean_file=args.mean_file,
        cache_path=args.cache,
        realtime=args.realtime,
        speed=args.speed,
        fps=args.fps,
        truth=args.truth,
        render=args.render,
        on_event=announce,
        runtime=args.runtime,
        backend=args.backend,
    )
    print(report.detection_table(result))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    use_training_backend("export")
    from gesture_cache import export_bundle

    formats = export_bundle.parse_formats(args.format, args.quantize)
    manifest = export_bundle.export_run(
        args.run,
        args.out,
        formats,
        args.quantize,
        args.weights,
        args.random_weights,
        args.mean_file,
        args.cache,
    )
    print(export_bundle.summary(manifest))
    print(f"\nbundle {args.out}: {len(manifest['artifacts'])} artifacts, parity checked")
    return 0


def cmd_evaluate_detection(args: argparse.Namespace) -> int:
    from gesture_cache import report, scoring

    scores = scoring.evaluate_detection(args.events, args.segments)
    print(json.dumps(scores, indent=2) if args.json else report.score_table(scores))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    use_training_backend("demo")
    from gesture_cache import demo, report

    if args.detect:
        detected = demo.run_detect_demo(args.out)
        print(report.detection_table(detected.detection))
        return 0

    result = demo.run_demo(args.out)
    print(demo.demo_summary(result))
    return 0


def add_extract_arguments(p: argparse.ArgumentParser) -> None:
    d = ExtractConfig()
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--weights", help="Keras-2 HDF5 C3D Sports-1M weights file")
    weights.add_argument(
        "--random-weights",
        type=int,
        metavar="SEED",
        help="random C3D weights from SEED (for tests and demos only)",
    )
    p.add_argument(
        "--clip-stride",
        type=int,
        help="frames between clip starts (default 8): every clip of 16 consecutive frames "
        "starting every S frames, plus one aligned to the last frame",
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
    commands = parser.add_subparsers(dest="command", required=True)

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
    d = ExtractConfig()
    p.add_argument("--shard-size", type=int, default=d.shard_size, help="videos per shard")
    add_compression(p)
    p.add_argument(
        "--dtype",
        choices=["float16", "float32"],
        default=d.dtype,
        help="storage type of the features",
    )
    p.add_argument(
        "--num-shards",
        type=int,
        default=d.num_shards,
        help="split the CSV over N machines by a hash of the video id",
    )
    p.add_argument(
        "--shard-index",
        type=int,
        default=d.shard_index,
        help="which of the --num-shards parts this machine extracts (0-based)",
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
        choices=["local", "ray"],
        default=d.engine,
        help="local: decode threads and the model in this process (default); ray: decode "
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
    p.set_defaults(handler=cmd_extract)

    p = commands.add_parser("info", help="describe a cache")
    p.add_argument("cache")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_info)

    p = commands.add_parser("verify", help="check a cache's hashes, shapes and values")
    p.add_argument("cache")
    p.set_defaults(handler=cmd_verify)

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

    p = commands.add_parser("train", help="train a classifier on a cache")
    p.add_argument("cache", nargs="?", help="the cache (with --resume: default, the run's own)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--config", help="TOML or YAML file of hyperparameters (flags override it)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run in --out with its saved settings and split",
    )
    p.add_argument("--split-from", metavar="RUN", help="reuse RUN's train/val/test split")
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
    p.add_argument("--preset", choices=["compact", "reference"])
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
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--weights", help="the C3D weights file the cache was built with")
    weights.add_argument("--random-weights", type=int, metavar="SEED")
    p.add_argument("--mean-file", help="the mean cube, if the cache was built with one")
    p.add_argument("--cache", help="the run's cache, if it moved (parity uses its test split)")
    p.set_defaults(handler=cmd_export)

    p = commands.add_parser("evaluate", help="metrics of a run on its test split or a cache")
    p.add_argument("run")
    p.add_argument("--cache", help="evaluate on all of this cache (same extractor fingerprint)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_evaluate)

    p = commands.add_parser("predict", help="label new videos with a trained run")
    p.add_argument("run")
    p.add_argument("videos", nargs="+")
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--weights", help="the C3D weights file the cache was built with")
    weights.add_argument("--random-weights", type=int, metavar="SEED")
    p.add_argument("--mean-file", help="the mean cube, if the cache was built with one")
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
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--weights", help="the C3D weights file the cache was built with")
    weights.add_argument("--random-weights", type=int, metavar="SEED")
    p.add_argument("--mean-file", help="the mean cube, if the cache was built with one")
    p.add_argument("--cache", help="read the recordings' clips from this cache (no C3D)")
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
    d = DetectSettings()
    p.add_argument("--smoothing", type=int, default=d.smoothing, help="windows averaged")
    p.add_argument("--on", type=finite_float, default=d.on, help="probability that fires a gesture")
    p.add_argument("--off", type=finite_float, default=d.off, help="probability that ends it")
    p.add_argument("--min-gap", type=int, default=d.min_gap, help="frames between two events")
    p.set_defaults(handler=cmd_detect)

    p = commands.add_parser(
        "evaluate-detection", help="score a detect run's events.csv against a segments CSV"
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
    return parser


def add_compression(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--compression",
        choices=COMPRESSIONS,
        default=ExtractConfig.compression,
        help="how shards store features: gzip (smaller) or none (read about 10x faster: "
        "for a cache trained from disk, larger than --memory-limit)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help, or a flag that cannot be used (already said)
        return stop.code
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # JAX says at INFO that it looked for a TPU
        logging.getLogger("jax").setLevel(logging.WARNING)
    with watching():
        return run_command(args)


def run_command(args: argparse.Namespace) -> int:
    try:
        code = args.handler(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
        return code
    except KeyboardInterrupt:
        handled()
        print("interrupted; finished work is kept", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `gesture-cache info CACHE | head -1`: the reader has gone, so say nothing more;
        # stdout is pointed at /dev/null so that Python's final flush cannot complain either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as error:
        if acted_on(error):  # a library turned the Ctrl-C into its own error
            print("interrupted; finished work is kept", file=sys.stderr)
            return 130
        if not isinstance(error, GestureCacheError):
            raise
        if args.verbose:
            traceback.print_exc()
        print(f"gesture-cache {args.command}: error: {error}", file=sys.stderr)
        return EXIT_SETUP


if __name__ == "__main__":
    sys.exit(main())
