"""Settings of the extraction job and of training, as dataclasses with DESIGN.md's defaults."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ExtractConfig:
    """Every setting of `gesture-cache extract` (DESIGN.md's defaults)."""

    weights: str | None = None
    random_weights: int | None = None
    video_root: str | None = None
    path_column: str = "file_path"
    label_column: str = "action"
    frames: int = 128
    clip_stride: int = 16
    sampling: str = "pad"
    pad: str = "edge"
    preprocess: str = "c3d"
    mean_file: str | None = None
    pool5_pad: str = "caffe"
    layer: str = "fc7"
    batch_clips: int = 16
    decode_workers: int = 2
    shard_size: int = 256
    dtype: str = "float16"
    precision: str = "float32"
    num_shards: int = 1
    shard_index: int = 0
    retry_failed: bool = False
    strict: bool = False
