"""The settings of `gesture-cache extract`, as a dataclass, and its recipes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from gesture_cache.backbones.base import BACKBONES
from gesture_cache.cache.shard import COMPRESSIONS
from gesture_cache.common.errors import ConfigError

# Named combinations of extractor settings. `default`: dense clips of consecutive frames,
# the Caffe preprocessing. `seed` reproduces the input of the pipeline this project replaces
# (fc7 within 1.7e-6 of its own code): 128 frames per video (short ones centred and padded
# with black frames), 8 clips 16 apart, 112x112 INTER_AREA / 255, symmetric pool5 padding.
RECIPES = {
    "default": {
        "sampling": "dense",
        "clip_stride": 8,
        "preprocess": "c3d",
        "pad": "edge",
        "pool5_pad": "caffe",
    },
    "seed": {
        "sampling": "pad",
        "frames": 128,
        "clip_stride": 16,
        "preprocess": "reference",
        "pad": "zero",
        "pool5_pad": "symmetric",
    },
}


@dataclass
class ExtractConfig:
    """Every setting of `gesture-cache extract`; the defaults are the original C3D's (README)."""

    backbone: str = "c3d"  # a name in backbones.base.BACKBONES
    hands_model: str = "full"  # hands: full, lite, a .task file or a folder of .tflite files
    max_hands: int = 2
    mirrored: bool = False  # hands: frames come mirrored (a selfie camera)
    hands_static: bool = False  # hands: palm detection on every frame, no tracking
    weights: str | None = None
    random_weights: int | None = None
    video_root: str | None = None
    path_column: str = "file_path"
    label_column: str = "action"
    recipe: str = "default"
    sampling: str | None = None  # None: the recipe's value
    clip_stride: int | None = None
    frames: int | None = None  # only for --sampling pad|uniform
    pad: str | None = None
    preprocess: str | None = None
    mean_file: str | None = None
    pool5_pad: str | None = None
    fps: float | None = None  # frame rate of folders of frames without an `fps` column
    layer: str = "fc7"
    backend: str | None = None  # None: KERAS_BACKEND, else TensorFlow, JAX, PyTorch (installed)
    batch_clips: int | None = None  # None: 16 on a CPU, from the GPU's memory on a GPU
    decode_workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    shard_size: int = 256
    dtype: str = "float16"
    compression: str = "gzip"  # or "none": larger shards, read about 10x faster
    precision: str = "float32"
    num_shards: int = 1
    shard_index: int = 0
    retry_failed: bool = False
    strict: bool = False
    engine: str = "local"  # local | ray
    ray_address: str | None = None  # None: start a Ray instance on this machine
    actors: int | None = None  # backbone actors on Ray (None: one per GPU, else one)

    def __post_init__(self) -> None:
        """Fill what the recipe sets; a flag that contradicts the recipe is an error."""
        if self.recipe not in RECIPES:
            raise ConfigError(f"unknown --recipe {self.recipe!r}: use one of {sorted(RECIPES)}")
        if self.compression not in COMPRESSIONS:
            raise ConfigError(
                f"--compression {self.compression!r}: use one of {', '.join(COMPRESSIONS)}"
            )
        registered = BACKBONES.get(self.backbone)  # an unknown one: refused when it is built
        if self.clip_stride is None and self.recipe == "default" and registered:
            self.clip_stride = registered.clip_stride
        for name, value in RECIPES[self.recipe].items():
            given = getattr(self, name)
            if given is None:
                setattr(self, name, value)
            elif self.recipe != "default" and given != value:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(
                    f"--recipe {self.recipe} sets {flag} {value}; drop {flag} {given} or the recipe"
                )
