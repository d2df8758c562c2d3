"""Tables and plots for people: extraction summaries, cache descriptions, metrics."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gesture_cache.extract import ExtractSummary


def extract_summary(summary: ExtractSummary, out: str | Path) -> str:
    clips_per_s = summary.clips / summary.seconds if summary.seconds else 0.0
    lines = [
        f"cache {out}: {summary.videos_in_cache} videos",
        f"  this run: {summary.cached} cached, {summary.skipped} skipped (already done or "
        f"recorded as failed), {sum(summary.failed.values())} failed, "
        f"{summary.duplicate_rows} duplicate rows",
        f"  {summary.seconds:.1f} s, {clips_per_s:.2f} clips/s",
    ]
    for reason, count in sorted(summary.failed.items()):
        lines.append(f"  failed {reason}: {count}")
    if summary.failures_recorded:
        lines.append(f"  {summary.failures_recorded} failures listed in failures.jsonl")
    return "\n".join(lines)


def cache_info(manifest: dict, failures: dict[str, dict]) -> str:
    extractor = manifest["extractor"]
    weights = extractor["weights"]
    weights_text = (
        f"RANDOM (seed {weights['random_seed']}): not for real results"
        if "random_seed" in weights
        else f"{weights['file']} (sha256 {weights['sha256'][:16]}...)"
    )
    prep = extractor["preprocessing"]
    mean = prep["mean_file"] or prep["mean_bgr"]
    lines = [
        f"fingerprint  {manifest['fingerprint']}",
        f"created by   {manifest['created_by']}",
        f"extractor    {extractor['model']}, layer {extractor['layer']}, "
        f"precision {extractor['precision']}",
        f"weights      {weights_text}",
        f"preprocess   {prep['name']}: resize {prep['resize']} {prep['interpolation']}, "
        f"crop {prep['crop']}, mean {mean}, scale {prep['scale']:g}",
        f"layout       {extractor['frames']} frames, clips of {extractor['clip_len']} every "
        f"{extractor['clip_stride']}, sampling {extractor['sampling']}, pad {extractor['pad']}",
        f"features     {manifest['feature_shape']} {manifest['dtype']} per video",
        f"videos       {manifest['videos']} in {len(manifest['shards'])} shards",
        "classes      " + ", ".join(f"{c} ({n})" for c, n in manifest["class_counts"].items()),
        f"failures     {len(failures)}",
    ]
    for reason, count in sorted(Counter(r["reason"] for r in failures.values()).items()):
        lines.append(f"  {reason}: {count}")
    return "\n".join(lines)
