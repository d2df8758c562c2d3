"""The settings of `gesture-cache train` (and of every `tune` trial), as a dataclass, and
the config files both commands read."""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from gesture_cache.common.errors import ConfigError

MAX_UNITS = 8192


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
    features: tuple[str, ...] | None = None  # the feature groups trained on (None: all)
    mirror: dict[str, str] | None = None  # left <-> right augmentation: label -> its mirror
    group_dropout: float = 0.0  # chance a training window has one feature group dropped
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
        if self.features is not None:
            self.features = check_features(self.features)
        if self.mirror is not None:
            self.mirror = check_mirror(self.mirror)
        if not isinstance(self.group_dropout, int | float) or not 0 <= self.group_dropout < 1:
            raise ConfigError(
                f"setting group_dropout = {self.group_dropout!r}: a probability in [0, 1)"
            )
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
    """Hyperparameters from a TOML or YAML file (a flat table of TrainConfig's names), or
    from a run's config.json (its `hparams`: the settings that run used, every one)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    if path.suffix not in (".toml", ".yaml", ".yml", ".json"):
        raise ConfigError(
            f"config file {path}: use a .toml, .yaml or .yml file, or a run's config.json"
        )
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            values = json.loads(text)
            if not isinstance(values, dict) or not isinstance(values.get("hparams"), dict):
                raise ConfigError(
                    f"config file {path} is not a run's config.json (it has no hparams "
                    "table); give a run's config.json, or a .toml or .yaml file of settings"
                )
            values = values["hparams"]
        else:
            values = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (
        tomllib.TOMLDecodeError,
        yaml.YAMLError,
        json.JSONDecodeError,
        UnicodeDecodeError,
    ) as error:
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


def config_run(path: str | Path | None) -> Path | None:
    """The run folder whose config.json `path` is (its split is repeated with it), or None."""
    if path is None or Path(path).suffix != ".json":
        return None
    return Path(path).parent if (Path(path).parent / "split.csv").is_file() else None


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
    if isinstance(values.get("features"), str):
        values["features"] = tuple(g.strip() for g in values["features"].split(","))
    if isinstance(values.get("mirror"), str):
        values["mirror"] = mirror_table(values["mirror"])
    return TrainConfig(**values)


def check_features(features: object) -> tuple[str, ...]:
    """Feature group names (which ones a cache has is checked against it)."""
    if isinstance(features, str):
        features = (features,)
    if (
        not isinstance(features, list | tuple)
        or not features
        or not all(isinstance(g, str) and g for g in features)
    ):
        raise ConfigError(
            f"setting features = {features!r}: give group names, e.g. pose,trajectory"
        )
    if len(set(features)) < len(features):
        raise ConfigError(f"setting features = {list(features)!r}: a group named twice")
    return tuple(features)


def mirror_table(text: str) -> dict[str, str]:
    """`--mirror`: pairs `swipe_left=swipe_right,thumbs_up=thumbs_up` (each pair both ways),
    or a file of them (.csv: two columns a row; .json/.toml/.yaml: a table)."""
    path = Path(text)
    if path.suffix.lower() in (".csv", ".json", ".toml", ".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"--mirror {text}: the file does not exist")
        body = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".csv":
            pairs = [line.split(",") for line in body.splitlines() if line.strip()]
            if any(len(p) != 2 for p in pairs):
                raise ConfigError(f"--mirror {text}: each line holds two labels, a,b")
            return {a.strip(): b.strip() for a, b in pairs}
        loaded = (
            json.loads(body) if path.suffix == ".json"
            else tomllib.loads(body) if path.suffix == ".toml"
            else yaml.safe_load(body)
        )  # fmt: skip
        if not isinstance(loaded, dict):
            raise ConfigError(f"--mirror {text}: expected a table of label = mirrored label")
        return loaded
    pairs = [item.split("=") for item in text.split(",") if item.strip()]
    if not pairs or any(len(p) != 2 for p in pairs):
        raise ConfigError(
            f"--mirror {text!r}: give label=mirrored_label pairs, e.g. "
            "swipe_left=swipe_right,thumbs_up=thumbs_up, or a file of them"
        )
    return {a.strip(): b.strip() for a, b in pairs}


def check_mirror(table: object) -> dict[str, str]:
    """A label -> mirrored label table, made symmetric (a=b says b=a); a contradiction is
    refused. Which labels it must cover is checked against the cache."""
    if not isinstance(table, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and k and v for k, v in table.items()
    ):
        raise ConfigError(f"setting mirror = {table!r}: a table of label = mirrored label")
    both = dict(table)
    for label, mirrored in table.items():
        if both.setdefault(mirrored, label) != label:
            raise ConfigError(
                f"setting mirror: {label} mirrors to {mirrored}, but {mirrored} to {both[mirrored]}"
            )
    return dict(sorted(both.items()))


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
