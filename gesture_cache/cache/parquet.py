"""Export a cache as Parquet, the format teammates' tools read without this one.

    OUT/recordings.parquet  one row per recording: id, sha256, frames, fps, size, clips
    OUT/clips.parquet       one row per clip: recording_id, clip_index, start_frame, valid, features
    OUT/segments.parquet    one row per labelled segment: recording_id, label, frames, group
    OUT/README.md           a dataset card from the manifest (Hugging Face `configs` header)

pandas, pyarrow and `datasets.load_dataset("parquet", ...)` read the files directly; each
file's schema metadata carries the cache's manifest. Features are float32 (float16 caches
widen exactly). The export is built beside OUT and renamed, so OUT is complete or absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from gesture_cache import __version__
from gesture_cache.cache.manifest import (
    ShardContent,
    check_shard_hashes,
    feature_dim,
    read_manifest,
    shard_path,
)
from gesture_cache.cache.shard import read_shard
from gesture_cache.common.errors import ConfigError
from gesture_cache.common.files import built_beside

CLIP_ROWS_PER_GROUP = 4096


def export_parquet(cache_path: str | Path, out: str | Path) -> Path:
    """Write the cache at `cache_path` as Parquet files and a dataset card into `out`."""
    cache_path, out = Path(cache_path), Path(out)
    if out.exists() or out.is_symlink():
        raise ConfigError(f"--out {out} already exists; give a new folder (nothing was written)")
    manifest = read_manifest(cache_path)
    check_shard_hashes(cache_path, manifest)
    with built_beside(out, "export") as building:
        metadata = {b"gesture_cache": json.dumps(manifest).encode()}
        recordings, segments = [], []
        clips_schema = clip_schema(feature_dim(manifest)).with_metadata(metadata)
        with pq.ParquetWriter(building / "clips.parquet", clips_schema) as clips:
            for shard in manifest["shards"]:
                content = read_shard(
                    shard_path(cache_path, shard["file"]), manifest["schema_version"], True
                )
                recordings.append(pd.DataFrame(content.recordings))
                segments.append(pd.DataFrame(content.segments))
                clips.write_table(clip_table(content, clips_schema), CLIP_ROWS_PER_GROUP)
        recordings, segments = recordings_frame(recordings), segments_frame(segments)
        write_frame(recordings, building / "recordings.parquet", metadata)
        write_frame(segments, building / "segments.parquet", metadata)
        (building / "README.md").write_text(dataset_card(manifest, recordings, segments))
    return out


def clip_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            ("recording_id", pa.string()),
            ("clip_index", pa.int32()),
            ("start_frame", pa.int64()),
            ("valid", pa.bool_()),
            ("features", pa.list_(pa.float32(), dim)),
        ]
    )


def clip_table(content: ShardContent, schema: pa.Schema) -> pa.Table:
    """A shard's clips, each tagged with its recording and its index inside it."""
    counts = content.recordings["clip_count"].astype(np.int64)
    offsets = content.recordings["clip_offset"].astype(np.int64)
    ids = np.repeat(content.recordings["recording_id"], counts)
    order = np.concatenate([np.arange(o, o + c) for o, c in zip(offsets, counts)] + [[]])
    order = order.astype(np.int64)
    index = np.concatenate([np.arange(c) for c in counts] + [[]]).astype(np.int32)
    features = content.features[order].astype(np.float32)
    columns = [
        pa.array(ids.tolist(), pa.string()),
        pa.array(index, pa.int32()),
        pa.array(content.clip_start[order].astype(np.int64)),
        pa.array(content.clip_valid[order].astype(bool)),
        pa.FixedSizeListArray.from_arrays(pa.array(features.reshape(-1)), features.shape[1]),
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def recordings_frame(parts: list[pd.DataFrame]) -> pd.DataFrame:
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    frame = frame.drop(columns=["clip_offset", "file_mtime"], errors="ignore")
    return frame.rename(columns={"clip_count": "clips"})


def segments_frame(parts: list[pd.DataFrame]) -> pd.DataFrame:
    frame = pd.concat(parts, ignore_index=True).fillna("") if parts else pd.DataFrame()
    return frame  # the CSV's own columns keep their prefix: `extra/label` never meets `label`


def write_frame(frame: pd.DataFrame, path: Path, metadata: dict[bytes, bytes]) -> None:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, **metadata}), path)


def dataset_card(manifest: dict, recordings: pd.DataFrame, segments: pd.DataFrame) -> str:
    """README.md for the export: what the features are, how they were made, how to load them."""
    extractor = manifest["extractor"]
    weights = extractor["weights"]
    weights_line = (
        f"random weights (seed {weights['random_seed']}): for testing only, not Sports-1M"
        if "random_seed" in weights
        else f"sha256 `{weights.get('sha256', '?')}`"
    )
    counts = segments["label"].value_counts() if len(segments) else pd.Series(dtype=int)
    class_rows = "\n".join(
        f"| {label} | {int(counts.get(label, 0))} |" for label in manifest["classes"]
    )
    layout = (
        f"{extractor.get('clip_len', 16)} frames, {extractor.get('sampling')} sampling, "
        f"stride {extractor.get('clip_stride', '-')}, pad {extractor.get('pad', '-')}"
    )
    pre = extractor["preprocessing"]
    mean = f"mean cube sha256 `{pre['mean_sha256']}`" if pre.get("mean_sha256") else "no mean cube"
    preprocessing = (
        f"resize {pre.get('resize')} ({pre.get('interpolation')}), crop {pre.get('crop')}, "
        f"scale {pre.get('scale')}, mean BGR {pre.get('mean_bgr')}, {mean}"
    )
    clips = int(recordings["clips"].sum()) if len(recordings) else 0
    return f"""---
configs:
- config_name: clips
  data_files: clips.parquet
  default: true
- config_name: segments
  data_files: segments.parquet
- config_name: recordings
  data_files: recordings.parquet
tags:
- video
- gesture-recognition
- {"hand-landmarks" if extractor["model"].startswith("MediaPipe") else "c3d"}
---

# Gesture features ({extractor["model"]}{", " + extractor["layer"] if "layer" in extractor else ""})

Exported by gesture_cache {__version__} from a cache with
fingerprint `{manifest["fingerprint"]}`: the sha256 of the extractor settings below.
Two exports with the same fingerprint hold comparable features.

| | |
|---|---|
| recordings | {len(recordings)} |
| clips | {clips} ({feature_dim(manifest)} float32 features each) |
| segments | {len(segments)} |
| weights | {weights_line} |
| precision | {extractor.get("precision", "float32")}, stored as {manifest["dtype"]} in the cache |
| clip layout | {layout} |
| preprocessing | {preprocessing} |

## Classes (segments per class)

| label | segments |
|---|---|
{class_rows}

## Files

- `clips.parquet`: `recording_id`, `clip_index` (in its recording), `start_frame` (its first
  frame), `valid` (false: a clip padded past the end), `features`.
- `segments.parquet`: `recording_id`, `label`, `start_frame`, `end_frame` (exclusive),
  `group`, `row` (CSV row), and the CSV's other columns as `extra/<column>`. A segment's
  clips are the clips of its recording whose frames lie in it.
- `recordings.parquet`: `recording_id`, `sha256` of the source, `n_frames`, `fps`, `height`,
  `width`, `claimed_frames` (what the container said), `clips`.

Each file's Parquet metadata key `gesture_cache` holds the cache's whole manifest.

## Loading

```python
import pandas as pd
clips = pd.read_parquet("clips.parquet")

import pyarrow.parquet as pq
segments = pq.read_table("segments.parquet")

from datasets import load_dataset
clips = load_dataset("parquet", data_files="clips.parquet", split="train")
```
"""
