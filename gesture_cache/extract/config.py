"""The settings of `gesture-cache extract`, as a dataclass: what every backbone shares (the
CSV, the temporal layout, the engine, the cache's storage) and, in `options`, the chosen
backbone's own settings, which its `Options` dataclass checks. Every setting is checked here,
once, with a ConfigError that names its flag."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from gesture_cache.backbones.base import BackboneOptions, flag, registered
from gesture_cache.cache.shard import COMPRESSIONS
from gesture_cache.common.errors import ConfigError
from gesture_cache.video.nvdec import DECODERS

# The layout every backbone gets unless a recipe says otherwise: dense clips of consecutive
# frames over the whole recording, short recordings padded with their edge frames.
DEFAULT_LAYOUT = {"sampling": "dense", "pad": "edge"}
SAMPLINGS = ("dense", "pad", "uniform")
PADS = ("edge", "zero")
ENGINES = ("local", "ray")
DTYPES = ("float16", "float32")


@dataclass
class ExtractConfig:
    """Every setting of `gesture-cache extract`; the defaults are the README's. Layout fields
    left None take the recipe's value (the backbone's default layout without one)."""

    backbone: str = "c3d"  # a name in backbones.base.BACKBONES
    options: dict = field(default_factory=dict)  # the backbone's own settings that are given
    weights: str | None = None
    random_weights: int | None = None
    video_root: str | None = None
    path_column: str = "file_path"
    label_column: str = "action"
    recipe: str = "default"
    sampling: str | None = None
    clip_stride: int | None = None
    frames: int | None = None  # only for --sampling pad|uniform
    pad: str | None = None
    fps: float | None = None  # frame rate of folders of frames without an `fps` column
    backend: str | None = None  # None: KERAS_BACKEND, else TensorFlow, JAX, PyTorch (installed)
    batch_clips: int | None = None  # None: decided for the device (keras_backends)
    decode_workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    decoder: str = "auto"  # opencv, nvdec (the GPU's video engine), auto: nvdec where it runs
    shard_size: int = 256  # recordings per shard file
    dtype: str = "float16"
    compression: str = "gzip"  # or "none": larger shards, read about 10x faster
    num_parts: int = 1  # the CSV cut into this many parts (one machine's share)
    part_index: int = 0
    retry_failed: bool = False
    strict: bool = False
    engine: str = "local"  # local | ray
    ray_address: str | None = None  # None: start a Ray instance on this machine
    actors: int | None = None  # backbone actors on Ray (None: one per GPU, else one)
    backbone_options: BackboneOptions = field(init=False, repr=False)

    def __post_init__(self) -> None:
        """Fill what the recipe sets, build the backbone's options, check every setting."""
        chosen = registered(self.backbone)
        recipes = {"default": ({"clip_stride": chosen.clip_stride}, {}), **chosen.recipes}
        if self.recipe not in recipes:
            raise ConfigError(
                f"unknown --recipe {self.recipe!r} for --backbone {self.backbone}: use one of "
                f"{', '.join(recipes)}"
            )
        layout, recipe_options = recipes[self.recipe]
        for name, value in {**DEFAULT_LAYOUT, **layout}.items():
            setattr(self, name, self._with_recipe(name, getattr(self, name), value))
        given = dict(self.options)
        for name, value in recipe_options.items():
            given[name] = self._with_recipe(name, given.get(name), value)
        self.backbone_options = chosen.make_options(given)
        self._check()

    def _with_recipe(self, name: str, given: object, value: object) -> object:
        """A setting left unset takes the recipe's value; one that contradicts it is refused."""
        if given is None:
            return value
        if self.recipe != "default" and given != value:
            raise ConfigError(
                f"--recipe {self.recipe} sets {flag(name)} {value}; drop {flag(name)} {given} "
                "or the recipe"
            )
        return given

    def _check(self) -> None:
        choices = {
            "sampling": SAMPLINGS, "pad": PADS, "engine": ENGINES, "dtype": DTYPES,
            "compression": COMPRESSIONS, "decoder": DECODERS,
        }  # fmt: skip
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"unknown {flag(name)} {getattr(self, name)!r}: use one of {', '.join(allowed)}"
                )
        for name in ("batch_clips", "decode_workers", "shard_size", "clip_stride", "frames"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or value < 1):
                raise ConfigError(f"{flag(name)} {value}: give a whole number of at least 1")
        if self.sampling != "dense" and self.frames is None:
            raise ConfigError(f"--sampling {self.sampling} needs --frames F")
        if not 0 <= self.part_index < self.num_parts:
            raise ConfigError(f"--part-index {self.part_index} is not in 0..{self.num_parts - 1}")
        if self.engine == "local" and (self.ray_address or self.actors is not None):
            raise ConfigError("--address and --actors go with --engine ray")
        if self.engine == "ray" and self.decoder == "nvdec":
            raise ConfigError(
                "--decoder nvdec goes with --engine local: Ray's decode tasks use OpenCV"
            )
        if self.actors is not None and self.actors < 1:
            raise ConfigError(f"--actors {self.actors}: give at least 1")
        if self.fps is not None and not self.fps > 0:
            raise ConfigError(f"--fps {self.fps} must be above 0")

    def files(self) -> dict[str, str]:
        """The files the extractor reads, by the names of their settings (weights, and the
        backbone's file options): metadata for the cache, never part of the fingerprint."""
        named = {"weights": self.weights}
        for declared in fields(self.backbone_options):
            if declared.metadata.get("given_again"):
                named[declared.name] = getattr(self.backbone_options, declared.name)
        return {name: Path(path).name for name, path in named.items() if path}
