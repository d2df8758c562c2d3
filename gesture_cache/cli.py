"""The `gesture-cache` command: parses arguments and calls the modules; no logic of its own."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from collections.abc import Sequence
from dataclasses import fields

from gesture_cache.config import (
    RECIPES,
    ExtractConfig,
    TrainConfig,
    load_config_file,
    make_train_config,
)
from gesture_cache.errors import GestureCacheError

# TensorFlow, pandas, OpenCV and matplotlib load in seconds, so each command imports the
# modules it needs when it runs: `--help`, `info` and `verify` start at once.

EXIT_FAILED, EXIT_SETUP = 1, 2


def cmd_synth(args: argparse.Namespace) -> int:
    from gesture_cache import synth

    csv_path = synth.make_dataset(args.out, args.per_class, args.seed)
    print(f"wrote {args.per_class * len(synth.GESTURES)} videos and {csv_path}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from gesture_cache import meta

    rows = meta.read_meta(args.meta, args.video_root, args.path_column, args.label_column)
    table = meta.check_rows(rows)
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
    from gesture_cache import cache, report

    manifest = cache.read_manifest(args.cache)
    failures = cache.read_failures(args.cache)
    shortfalls = cache.frame_shortfalls(args.cache, manifest)
    if args.json:
        short = [{"video_id": v, "claimed": c, "decoded": d} for v, c, d in shortfalls]
        extra = {"failures": list(failures.values()), "frame_shortfalls": short}
        print(json.dumps({**manifest, **extra}, indent=2))
    else:
        print(report.cache_info(manifest, failures, shortfalls))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from gesture_cache import cache

    result = cache.verify_cache(args.cache)
    for warning in result.warnings:
        print(f"WARN {warning}")
    for problem in result.problems:
        print(f"FAIL {problem}")
    if result.problems:
        return EXIT_FAILED
    print(f"OK {args.cache}: {result.videos} videos verified")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from gesture_cache import cache

    manifest = cache.merge_caches(args.caches, args.out)
    print(f"merged {len(args.caches)} caches into {args.out}: {manifest['videos']} videos")
    return 0


def cmd_repair(args: argparse.Namespace) -> int:
    from gesture_cache import cache

    result = cache.repair_cache(args.cache)
    for dropped in result.dropped:
        print(f"dropped {dropped}")
    print(f"repaired {args.cache}: {result.kept} videos kept, {len(result.dropped)} dropped")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
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
    from gesture_cache import report, tune

    file_values = load_config_file(args.config) if args.config else {}
    base = make_train_config(file_values, {"epochs": args.epochs, "seed": args.seed})
    study = tune.tune(args.cache, args.out, args.trials, base, args.storage, args.study)
    print(report.study_table(study))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
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
    )
    print(json.dumps(results, indent=2) if args.json else report.predictions_table(results))
    return EXIT_FAILED if any("error" in r for r in results) else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from gesture_cache import demo, report

    result = demo.run_demo(args.out)
    print(report.demo_summary(result))
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
    p.add_argument("--frames", type=int, default=d.frames, help="frames per video, F")
    p.add_argument(
        "--clip-stride",
        type=int,
        default=d.clip_stride,
        help="frames between clip starts; T = (F - 16) / stride + 1 clips",
    )
    p.add_argument(
        "--sampling",
        choices=["pad", "uniform"],
        default=d.sampling,
        help="pad short videos to F (long ones are subsampled), or resample all to F",
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
        "--batch-clips",
        type=int,
        default=d.batch_clips,
        help="clips per model call, drawn from several videos",
    )
    p.add_argument(
        "--decode-workers",
        type=int,
        default=d.decode_workers,
        help="threads decoding videos while the model runs",
    )


def add_meta_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("meta", help="meta CSV with file_path and action columns")
    p.add_argument("--video-root", help="folder the CSV's paths are relative to")
    p.add_argument("--path-column", default="file_path", help="column holding video paths")
    p.add_argument("--label-column", default="action", help="column holding labels")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gesture-cache",
        description="Extract C3D features from gesture videos once, then train fast.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("synth", help="write synthetic gesture videos and meta.csv")
    p.add_argument("--out", required=True)
    p.add_argument("--per-class", type=int, default=12, help="videos per gesture")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=cmd_synth)

    p = commands.add_parser("check", help="probe every row of a meta CSV without C3D")
    add_meta_arguments(p)
    p.set_defaults(handler=cmd_check)

    p = commands.add_parser("extract", help="build (or resume) a feature cache")
    add_meta_arguments(p)
    p.add_argument("--out", required=True, help="cache folder")
    add_extract_arguments(p)
    d = ExtractConfig()
    p.add_argument("--shard-size", type=int, default=d.shard_size, help="videos per shard")
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
    p.add_argument("--preset", choices=["compact", "reference"])
    p.add_argument("--units", help="recurrent layer sizes, e.g. 1024,256,64")
    p.add_argument("--cell", choices=["lstm", "gru"])
    p.add_argument("--dense", type=int, help="size of the dense layer (0: none)")
    p.add_argument("--dropout", type=float)
    p.add_argument("--lr", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--patience", type=int, help="epochs without val-loss progress before stopping")
    p.add_argument("--test-size", type=float, help="fraction held out for testing (0.25)")
    p.add_argument("--val-size", type=float, help="fraction for validation (0.15)")
    p.add_argument(
        "--class-weight",
        action="store_true",
        default=None,
        help="weight classes inversely to their frequency",
    )
    p.add_argument("--seed", type=int)
    p.add_argument("--no-normalize", dest="normalize", action="store_false", default=None)
    p.add_argument(
        "--memory-limit",
        dest="memory_limit_mb",
        type=float,
        metavar="MB",
        help="stream the cache from disk when it is larger (4096)",
    )
    p.set_defaults(handler=cmd_train)

    p = commands.add_parser("tune", help="search hyperparameters with Optuna")
    p.add_argument("cache")
    p.add_argument("--out", required=True, help="folder of the trials' run folders")
    p.add_argument("--trials", type=int, default=20, help="trials this process runs")
    p.add_argument("--storage", help="Optuna storage URL shared by workers (sqlite in --out)")
    p.add_argument("--study", default="gesture-cache", help="study name in the storage")
    p.add_argument("--config", help="TOML or YAML of the settings not searched")
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int, help="the split's seed, the same for every trial")
    p.set_defaults(handler=cmd_tune)

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
    p.add_argument("--top-k", type=int, default=3, help="classes shown per video (at least 1)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_predict)

    p = commands.add_parser("demo", help="synth -> extract -> train -> evaluate in minutes")
    p.add_argument("--out", default="data/demo")
    p.set_defaults(handler=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("interrupted; finished work is kept", file=sys.stderr)
        return 130
    except GestureCacheError as error:
        if args.verbose:
            traceback.print_exc()
        print(f"gesture-cache {args.command}: error: {error}", file=sys.stderr)
        return EXIT_SETUP


if __name__ == "__main__":
    sys.exit(main())
