"""Tables for people: extraction summaries, cache descriptions, metrics, studies, detections."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    import optuna

    from gesture_cache.extract.job import ExtractSummary


def extract_summary(summary: ExtractSummary, out: str | Path) -> str:
    clips_per_s = summary.clips / summary.seconds if summary.seconds else 0.0
    lines = [
        f"cache {out}: {summary.recordings_in_cache} recordings",
        f"  this run: {summary.cached} cached, {summary.skipped} skipped (already done or "
        f"recorded as failed), {sum(summary.failed.values())} failed, "
        f"{summary.duplicate_rows} duplicate rows",
        f"  {summary.seconds:.1f} s, {clips_per_s:.2f} clips/s",
        f"  decoding: {summary.decoding}",
    ]
    if summary.decoded_by_opencv:
        lines.append(f"  {summary.decoded_by_opencv} recordings NVDEC cannot decode: OpenCV did")
    if summary.network_in_decoding:
        lines.append(
            f"  the network runs in the {summary.decode_workers} decode workers, one recording "
            "each: more --decode-workers (up to the cores) go faster"
        )
    elif summary.model_seconds and summary.pipeline_seconds:
        busy = min(1.0, summary.model_seconds / summary.pipeline_seconds)
        limit = "the model limits" if busy >= 0.9 else "decoding limits: add --decode-workers"
        lines.append(
            f"  model {summary.clips / summary.model_seconds:.2f} clips/s alone, busy "
            f"{busy:.0%} of the pipeline's {summary.pipeline_seconds:.1f} s: {limit}"
        )
    if summary.changed:
        lines.append(f"  {summary.changed} cached videos have changed on disk since (see warnings)")
    if summary.relabelled:
        lines.append(f"  {summary.relabelled} rows differ from the cached segments (see warnings)")
    if summary.overlaps:
        lines.append(f"  {summary.overlaps} overlapping segments with different labels")
    if summary.short:
        lines.append(f"  {summary.short} recordings decode fewer frames than claimed (cached)")
    for reason, count in sorted(summary.failed.items()):
        lines.append(f"  failed {reason}: {count}")
    if summary.failures_recorded:
        lines.append(f"  {summary.failures_recorded} failures listed in failures.jsonl")
    return "\n".join(lines)


# Fields every extractor spec has (shown on their own lines); the rest are the backbone's own.
SHARED_FIELDS = {
    "model", "weights", "preprocessing", "precision", "backend", "features_version",
    "sampling", "frames", "clip_len", "clip_stride", "pad",
}  # fmt: skip


def weights_text(weights: dict, files: dict) -> str:
    if "random_seed" in weights:
        return f"RANDOM (seed {weights['random_seed']}): not for real results"
    if isinstance(weights["sha256"], dict):  # several model files
        return ", ".join(f"{k} (sha256 {v[:16]}...)" for k, v in weights["sha256"].items())
    name = files.get("weights") or weights.get("file", "")
    return f"{name} (sha256 {weights['sha256'][:16]}...)".strip()


def feature_groups(extractor: dict) -> list[str]:
    """What training may choose of the features (`--features`, `--mirror`), when the
    backbone offers groups: its layout's name and groups."""
    from gesture_cache.backbones.base import feature_layout_of

    layout = feature_layout_of(extractor)
    if layout is None:
        return []
    mirror = "; --mirror" if layout.mirror is not None else ""
    return [f"features     {layout.name} (--features {','.join(layout.groups)}{mirror})"]


def cache_info(
    manifest: dict,
    failures: dict[str, dict],
    shortfalls: list[tuple],
    verified: str | None = None,
) -> str:
    """A cache's description; `shortfalls` are (video id, claimed, decoded) frame counts;
    `verified`: when `verify` last passed it, if unchanged since."""
    extractor = manifest["extractor"]
    files = manifest.get("files", {})
    prep = extractor["preprocessing"]
    mean = prep.get("mean_bgr")
    if prep.get("mean_sha256"):
        mean = f"cube {files.get('mean_file', '')} (sha256 {prep['mean_sha256'][:16]}...)"
    software = [s.get("software") for s in manifest["shards"] if s.get("software")]
    versions = sorted({", ".join(f"{k} {v}" for k, v in sorted(s.items())) for s in software})
    # shards written before backends were recorded ran on TensorFlow
    backends = sorted({s.get("backend", "tensorflow") for s in software}) or ["(not recorded)"]
    if extractor.get("backend"):
        backends.append(f"(the {extractor['precision']} features are tied to it)")
    lines = [
        f"fingerprint  {manifest['fingerprint']}",
        f"schema       version {manifest['schema_version']}",
        f"extractor    {extractor['model']}, "
        + "".join(
            f"{k.replace('_', ' ')} {v}, " for k, v in extractor.items() if k not in SHARED_FIELDS
        )
        + f"precision {extractor['precision']}, features version "
        f"{extractor.get('features_version', 1)}",
        f"backend      {' '.join(backends)}",
        f"weights      {weights_text(extractor['weights'], files)}",
        f"preprocess   {prep['name']}: "
        + (
            f"resize {prep['resize']} {prep['interpolation']}, crop {prep['crop']}, "
            if prep["resize"] is not None
            else "frames whole, "
        )
        + f"mean {mean}, scale {prep['scale']:g}",
        f"layout       sampling {extractor['sampling']}"
        + (f" to {extractor['frames']} frames" if "frames" in extractor else "")
        + f", clips of {extractor['clip_len']} every {extractor['clip_stride']}, "
        f"pad {extractor['pad']}",
        *feature_groups(extractor),
        *contents(manifest),
        "classes      "
        + ", ".join(f"{shown(c)} ({n})" for c, n in manifest["class_counts"].items()),
    ]
    lines += [f"written by   {v}" for v in versions] or ["written by   (not recorded)"]
    lines.append(
        f"verified     {verified} (passed verify; unchanged since)"
        if verified
        else "verified     not since it last changed: gesture-cache verify"
    )
    if shortfalls:
        lines.append(f"short        {len(shortfalls)} videos decode fewer frames than claimed:")
        lines += [f"  {shown(v)}: claims {c}, {d} decode" for v, c, d in shortfalls[:10]]
    lines.append(f"failures     {len(failures)}")
    for reason, count in sorted(Counter(r.get("reason", "?") for r in failures.values()).items()):
        lines.append(f"  {reason}: {count}")
    lines.append("hashes       not checked here (the manifest only): run `gesture-cache verify`")
    return "\n".join(lines)


def shown(text: str) -> str:
    """A label or id as it reads in a list: quoted (JSON) when it holds a separator, a
    control character or surrounding spaces, so `a, b` is never mistaken for two labels."""
    plain = text and text == text.strip() and text.isprintable()
    return text if plain and not any(c in text for c in ',()"') else json.dumps(text)


def contents(manifest: dict) -> list[str]:
    """What a cache holds, in its schema's terms."""
    shards = len(manifest["shards"])
    if manifest["schema_version"] == 1:
        return [
            f"features     {manifest['feature_shape']} {manifest['dtype']} per video",
            f"videos       {manifest['videos']} in {shards} shards",
        ]
    return [
        f"features     {manifest['feature_dim']} {manifest['dtype']} per clip",
        f"contents     {manifest['recordings']} recordings, {manifest['clips']} clips, "
        f"{manifest['segments']} segments in {shards} shards",
    ]


def metrics_table(metrics: dict) -> str:
    """Accuracy, macro-F1, per-class scores and the confusion matrix as text."""
    classes = metrics["classes"]
    per_class = pd.DataFrame(metrics["per_class"]).T[["precision", "recall", "f1", "support"]]
    per_class = per_class.astype({"support": int})
    matrix = pd.DataFrame(metrics["confusion_matrix"], index=classes, columns=classes)
    matrix.index.name, matrix.columns.name = "true", "predicted"
    warning = (
        "\n(features from RANDOM C3D weights: a demo, not a result)"
        if metrics.get("random_weights")
        else ""
    )
    return (
        f"accuracy {metrics['accuracy']:.3f}   macro-F1 {metrics['macro_f1']:.3f}   "
        f"on {metrics['samples']} {metrics.get('split', 'test')} samples{warning}\n\n"
        f"{per_class.to_string(float_format=lambda v: f'{v:.3f}')}\n\n"
        f"confusion matrix (rows: true, columns: predicted)\n{matrix.to_string()}"
    )


def predictions_table(results: list[dict]) -> str:
    lines = []
    for result in results:
        if "error" in result:
            lines.append(f"{result['video']}: ERROR {result['error']}")
            continue
        ranked = ", ".join(f"{r['label']} {r['probability']:.2f}" for r in result["top_k"])
        lines.append(f"{result['video']}: {result['label']}   ({ranked})")
    return "\n".join(lines)


def study_table(study: optuna.Study) -> str:
    """Every finished trial, best first, and the best trial's settings."""
    trials = study.trials_dataframe(attrs=("number", "value", "params", "user_attrs", "state"))
    states = trials["state"].value_counts().to_dict() if len(trials) else {}
    if not states.get("COMPLETE"):
        return f"no trial finished yet ({states or 'none run'})"
    finished = trials[trials["state"] == "COMPLETE"].drop(columns="state")
    finished = finished.sort_values("value").rename(columns={"value": "val_loss"})
    finished.columns = [c.removeprefix("params_").removeprefix("user_attrs_") for c in finished]
    best = study.best_trial
    return (
        f"{finished.to_string(index=False)}\n\n"
        f"best: trial {best.number}, val_loss {best.value:.4f}, {best.user_attrs['run']}\n"
        f"      {best.params}\n"
        f"trials by state: {states}"
    )


def detection_table(result) -> str:
    """Per recording: events and time per frame; with scores, the score table."""
    lines = []
    for d in result.detections:
        summary = d.summary()
        skipped = f", {d.skipped} clips skipped (C3D fell behind)" if d.skipped else ""
        lines.append(
            f"{d.recording}: {len(d.events)} events, {summary['n_frames']} frames, "
            f"{summary['ms_per_frame']:.1f} ms/frame{skipped}"
        )
        for e in d.events:
            lines.append(
                f"  {e.label:<20} frames {e.start_frame}-{e.end_frame}  fired at {e.fired_frame}"
                f"  score {e.score:.2f}"
            )
    if result.scores:
        lines += ["", score_table(result.scores)]
    lines.append(f"\nwrote events.csv, recordings.csv, windows.npz, timelines in {result.out}")
    return "\n".join(lines)


def score_table(scores: dict) -> str:
    o = scores["overall"]

    def number(value, digits=3):
        return "-" if value is None else f"{value:.{digits}f}"

    rows = [
        ("recordings", str(o["recordings"])),
        ("gestures / detections", f"{o['gestures']} / {o['detections']}"),
        ("Levenshtein accuracy", number(o["levenshtein_accuracy"])),
        (f"segment F1 (IoU >= {o['iou_threshold']})", number(o["f1"])),
        ("precision / recall", f"{number(o['precision'])} / {number(o['recall'])}"),
        ("early detection (frames)", number(o["mean_delay_frames"], 1)),
        ("early detection (of gesture)", number(o["mean_delay_fraction"])),
        ("false firings / background min", number(o["false_firings_per_background_minute"], 2)),
    ]
    if "ms_per_frame" in o:
        rows.append(("ms per frame", number(o["ms_per_frame"], 1)))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
