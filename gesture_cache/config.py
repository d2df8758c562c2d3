"""Settings of the extraction job and of training, as dataclasses with DESIGN.md's defaults."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

import yaml


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
    memory_limit_mb: float = 4096.0

    def __post_init__(self) -> None:
        """Settings from files arrive untyped: check them here, naming the setting."""
        numbers = (
            "lr",
            "batch_size",
            "epochs",
            "patience",
            "test_size",
            "val_size",
            "seed",
            "memory_limit_mb",
        )
        for name in numbers:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"setting {name} = {value!r}: expected a number")
        for name in ("lr", "batch_size", "epochs", "patience"):
            if getattr(self, name) <= 0:
                raise ValueError(f"setting {name} = {getattr(self, name)!r}: must be above 0")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ValueError(f"setting dropout = {self.dropout!r}: must be in [0, 1)")


def load_config_file(path: str | Path) -> dict:
    """Hyperparameters from a TOML or YAML file (a flat table of TrainConfig's names)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist")
    text = path.read_text()
    if path.suffix == ".toml":
        values = tomllib.loads(text)
    elif path.suffix in (".yaml", ".yml"):
        values = yaml.safe_load(text) or {}
    else:
        raise ValueError(f"config file {path}: use a .toml, .yaml or .yml file")
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"config file {path}: unknown setting(s) {unknown}; known: {sorted(known)}"
        )
    return values


def make_train_config(file_values: dict, overrides: dict) -> TrainConfig:
    """File values, then command-line overrides (those not None)."""
    values = {**file_values, **{k: v for k, v in overrides.items() if v is not None}}
    if isinstance(values.get("units"), str):
        values["units"] = parse_units(values["units"])
    if values.get("units") is not None:
        values["units"] = tuple(int(u) for u in values["units"])
    return TrainConfig(**values)


def parse_units(text: str) -> tuple[int, ...]:
    try:
        units = tuple(int(u) for u in text.split(",") if u.strip())
    except ValueError:
        raise ValueError(
            f"--units {text!r}: give sizes separated by commas, e.g. 1024,256,64"
        ) from None
    if not units or min(units) < 1:
        raise ValueError(f"--units {text!r}: give at least one positive size")
    return units
