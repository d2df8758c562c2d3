"""Settings of the extraction job and of training, as dataclasses with DESIGN.md's defaults."""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from gesture_cache.errors import ConfigError

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
MAX_UNITS = 8192


COMPRESSIONS = ("gzip", "none")  # how shards store features (`cache.shard_image`)


@dataclass
class ExtractConfig:
    """Every setting of `gesture-cache extract` (DESIGN.md's defaults)."""

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
        for name, value in RECIPES[self.recipe].items():
            given = getattr(self, name)
            if given is None:
                setattr(self, name, value)
            elif self.recipe != "default" and given != value:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(
                    f"--recipe {self.recipe} sets {flag} {value}; drop {flag} {given} or the recipe"
                )


STRATEGIES = ("auto", "mirrored", "none")
SPLIT_CHOICES = ("auto", "official", "random")


@dataclass
class TrainConfig:
    """Every hyperparameter of `gesture-cache train`. `None` means "the preset's value"."""

    preset: str = "compact"
    units: tuple[int, ...] | None = None
    cell: str | None = None
    dense: int | None = None
    dropout: float | None = None
    lr: float = 1e-3
    batch_size: int = 16
    epochs: int = 80
    patience: int = 15
    test_size: float = 0.25
    val_size: float = 0.15
    class_weight: bool = False
    seed: int = 0
    normalize: bool = True
    memory_limit_mb: float | None = None  # None: half this machine's memory
    window_clips: int = 8
    window_step: int | None = None  # None: spread the window over the sample
    window_sampling: str = "uniform"  # uniform | center | random (new placement each epoch)
    background: bool = False  # add the background class (stretches no segment covers)
    background_label: str = "no_gesture"
    strategy: str = "auto"  # auto | mirrored | none: data-parallel over this machine's devices
    split: str = "auto"  # auto: the cache's split column when it has one | official | random
    reduce: str | None = None  # "pca:N": project standardised features onto N components
    allow_duplicates: bool = False  # an official split may put identical files in two parts

    def __post_init__(self) -> None:
        """Settings from files arrive untyped: check them here, naming the setting."""
        whole = ("batch_size", "epochs", "patience", "seed", "dense", "window_clips", "window_step")
        fractions = ("lr", "test_size", "val_size", "memory_limit_mb", "dropout")
        for name in (*whole, *fractions):
            value = getattr(self, name)
            if value is None and name in ("dense", "dropout", "window_step", "memory_limit_mb"):
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"setting {name} = {value!r}: expected a number")
            if not math.isfinite(value):
                raise ConfigError(f"setting {name} = {value!r}: must be a finite number")
            if name in whole and value != int(value):
                raise ConfigError(f"setting {name} = {value!r}: expected a whole number")
        for name in ("lr", "batch_size", "epochs", "patience", "window_clips"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"setting {name} = {getattr(self, name)!r}: must be above 0")
        for name in ("seed", "dense", "memory_limit_mb"):  # memory limit 0: always stream
            if (getattr(self, name) or 0) < 0:
                raise ConfigError(f"setting {name} = {getattr(self, name)!r}: must not be negative")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ConfigError(f"setting dropout = {self.dropout!r}: must be in [0, 1)")
        if self.units is not None:
            self.units = check_units(self.units)
        if self.window_step is not None and self.window_step < 1:
            raise ConfigError(f"setting window_step = {self.window_step!r}: must be above 0")
        for name in ("preset", "cell", "window_sampling", "background_label"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"setting {name} = {value!r}: expected a name")
        if self.reduce is not None:
            reduce_components(self.reduce)  # the setting's form, checked here
        if self.split not in SPLIT_CHOICES:
            raise ConfigError(
                f"setting split = {self.split!r}: choose one of {', '.join(SPLIT_CHOICES)}"
            )
        if self.strategy not in STRATEGIES:
            raise ConfigError(
                f"setting strategy = {self.strategy!r}: choose one of {', '.join(STRATEGIES)}"
            )
        for name in ("class_weight", "normalize", "background", "allow_duplicates"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"setting {name} = {getattr(self, name)!r}: use true or false")
        for name in whole:
            if getattr(self, name) is not None:
                setattr(self, name, int(getattr(self, name)))


def load_config_file(path: str | Path) -> dict:
    """Hyperparameters from a TOML or YAML file (a flat table of TrainConfig's names)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    if path.suffix not in (".toml", ".yaml", ".yml"):
        raise ConfigError(f"config file {path}: use a .toml, .yaml or .yml file")
    try:
        text = path.read_text(encoding="utf-8")
        values = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file {path} cannot be parsed: {error}") from None
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path}: expected a table of settings, not a list or value")
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(map(str, values)) - known)
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown setting(s) {unknown}; known: {sorted(known)}"
        )
    return values


def reduce_components(reduce: str | None) -> int | None:
    """N of `--reduce pca:N` (None: no reduction)."""
    if reduce is None:
        return None
    kind, _, count = str(reduce).partition(":")
    if kind != "pca" or not (count.isascii() and count.isdigit()) or int(count) < 1:
        raise ConfigError(f"setting reduce = {reduce!r}: use pca:N, N a whole number >= 1")
    return int(count)


def make_train_config(file_values: dict, overrides: dict) -> TrainConfig:
    """File values, then command-line overrides (those not None)."""
    values = {**file_values, **{k: v for k, v in overrides.items() if v is not None}}
    if isinstance(values.get("units"), str):
        values["units"] = parse_units(values["units"])
    return TrainConfig(**values)


def parse_units(text: str) -> tuple[int, ...]:
    try:
        units = tuple(int(u) for u in text.split(",") if u.strip())
    except ValueError:
        raise ConfigError(
            f"--units {text!r}: give sizes separated by commas, e.g. 1024,256,64"
        ) from None
    return check_units(units)


def check_units(units: object) -> tuple[int, ...]:
    """Recurrent layer sizes: a non-empty list of whole numbers in 1..MAX_UNITS."""
    if isinstance(units, int) and not isinstance(units, bool):
        units = (units,)
    if not isinstance(units, list | tuple) or not units:
        raise ConfigError(f"setting units = {units!r}: give a list of sizes, e.g. [256, 64]")
    for size in units:
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_UNITS:
            raise ConfigError(
                f"setting units = {list(units)!r}: each size must be a whole number "
                f"in 1..{MAX_UNITS}"
            )
    return tuple(units)


@dataclass(frozen=True)
class DetectSettings:
    """How window probabilities become events (recorded with the output)."""

    smoothing: int = 3  # windows in the causal moving average
    on: float = 0.6  # a gesture fires when its smoothed probability reaches this
    off: float = 0.4  # and ends when it falls below this
    min_gap: int = 8  # frames: closer events of one label are merged

    def __post_init__(self) -> None:
        if self.smoothing < 1:
            raise ConfigError(f"--smoothing {self.smoothing} must be at least 1")
        if not 0 < self.off <= self.on <= 1:
            raise ConfigError(f"thresholds need 0 < --off ({self.off}) <= --on ({self.on}) <= 1")
        if self.min_gap < 0:
            raise ConfigError(f"--min-gap {self.min_gap} must not be negative")
