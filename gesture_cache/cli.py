"""The `gesture-cache` command: parses arguments and calls the modules; no logic of its own."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import fields

from gesture_cache import cache, meta, report, synth
from gesture_cache.config import ExtractConfig, TrainConfig, load_config_file, make_train_config

# TensorFlow loads in seconds, so the commands that need it import their module when run.

EXIT_FAILED, EXIT_SETUP = 1, 2


def cmd_synth(args: argparse.Namespace) -> int:
    csv_path = synth.make_dataset(args.out, args.per_class, args.seed)
    print(f"wrote {args.per_class * len(synth.GESTURES)} videos and {csv_path}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    rows = meta.read_meta(args.meta, args.video_root, args.path_column, args.label_column)
    table = meta.check_rows(rows)
    print(table.to_string(index=False))
    bad = int((~table["usable"]).sum())
    print(f"\n{len(table) - bad} of {len(table)} rows usable" + (f", {bad} not" if bad else ""))
    return EXIT_FAILED if bad else 0


def cmd_extract(args: argparse.Namespace) -> int:
    from gesture_cache import extract

    names = {f.name for f in fields(ExtractConfig)}
    config = ExtractConfig(**{k: v for k, v in vars(args).items() if k in names})
    summary = extract.run_extraction(args.meta, args.out, config)
    print(report.extract_summary(summary, args.out))
    if not summary.ok:
        print("error: nothing could be cached", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_FAILED if config.strict and summary.failures_recorded else 0


def cmd_info(args: argparse.Namespace) -> int:
    manifest = cache.read_manifest(args.cache)
    failures = cache.read_failures(args.cache)
    if args.json:
        print(json.dumps({**manifest, "failures": list(failures.values())}, indent=2))
    else:
        print(report.cache_info(manifest, failures))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    problems = cache.verify_cache(args.cache)
    for problem in problems:
        print(f"FAIL {problem}")
    if problems:
        return EXIT_FAILED
    print(f"OK {args.cache}: {cache.read_manifest(args.cache)['videos']} videos verified")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    manifest = cache.merge_caches(args.out, args.caches)
    print(f"merged {len(args.caches)} caches into {args.out}: {manifest['videos']} videos")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from gesture_cache import train

    file_values = load_config_file(args.config) if args.config else {}
    names = {f.name for f in fields(TrainConfig)}
    overrides = {k: v for k, v in vars(args).items() if k in names}
    config = make_train_config(file_values, overrides)
    result = train.train(args.cache, args.out, config, resume=args.resume)
    print(report.metrics_table(result.metrics))
    state = "interrupted (--resume continues it)" if result.interrupted else "finished"
    print(f"\nrun {state} after {result.epochs} epochs: {args.out}")
    return 130 if result.interrupted else 0


def cmd_tune(args: argparse.Namespace) -> int:
    from gesture_cache import tune

    file_values = load_config_file(args.config) if args.config else {}
    base = make_train_config(file_values, {"epochs": args.epochs, "seed": args.seed})
    study = tune.tune(args.cache, args.out, args.trials, base, args.storage, args.study)
    print(report.study_table(study))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from gesture_cache import train

    metrics = train.evaluate_run(args.run, args.cache)
    print(json.dumps(metrics, indent=2) if args.json else report.metrics_table(metrics))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from gesture_cache import predict

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
    from gesture_cache import demo

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
        "--pad",
        choices=["edge", "zero"],
        default=d.pad,
        help="repeat edge frames, or black frames (only to reproduce the reference)",
    )
    p.add_argument(
        "--preprocess",
        choices=["c3d", "reference"],
        default=d.preprocess,
        help="c3d: 171x128, mean subtraction, centre crop; reference: 112x112 / 255",
    )
    p.add_argument("--mean-file", help="C3D mean cube .npy (16, 128, 171, 3), BGR")
    p.add_argument(
        "--pool5-pad",
        choices=["caffe", "symmetric"],
        default=d.pool5_pad,
        help="padding before pool5: Caffe's (0,1) or the reference's symmetric",
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
        help="C3D compute precision (mixed: for GPUs)",
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
    p.add_argument("--strict", action="store_true", help="exit 1 if any video failed")
    p.set_defaults(handler=cmd_extract)

    p = commands.add_parser("info", help="describe a cache")
    p.add_argument("cache")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_info)

    p = commands.add_parser("verify", help="check a cache's hashes, shapes and values")
    p.add_argument("cache")
    p.set_defaults(handler=cmd_verify)

    p = commands.add_parser("merge", help="combine caches with the same fingerprint")
    p.add_argument("out")
    p.add_argument("caches", nargs="+")
    p.set_defaults(handler=cmd_merge)

    p = commands.add_parser("train", help="train a classifier on a cache")
    p.add_argument("cache")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--config", help="TOML or YAML file of hyperparameters (flags override it)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
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
    p.add_argument("--top-k", type=int, default=3)
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
    except (ValueError, OSError) as error:  # every error class of ours is a ValueError
        print(f"gesture-cache {args.command}: error: {error}", file=sys.stderr)
        return EXIT_SETUP


if __name__ == "__main__":
    sys.exit(main())
