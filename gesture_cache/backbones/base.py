"""What the extractor needs of a backbone, and the registry that finds one by name.

A backbone is one module of this package with two functions, `from_config(config, backend)`
(for `extract`) and `from_spec(spec, preprocessing, ...)` (for a cache's recorded extractor:
predict, detect, export, resume), returning an object with the members of `Backbone`. Adding
one is that module and one `register` line below; nothing outside `backbones/` names it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
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
class Registered:
    name: str  # the name `--backbone` takes
    model: str  # the `model` its extractor spec records
    module: str  # where its `from_config` and `from_spec` live
    clip_stride: int  # the default --clip-stride
    own_weights: bool  # finds its installed weights and checks them against the cache itself


BACKBONES: dict[str, Registered] = {}


def register(
    name: str, model: str, module: str, clip_stride: int = 8, own_weights: bool = False
) -> None:
    BACKBONES[name] = Registered(name, model, module, clip_stride, own_weights)


register("c3d", "C3D Sports-1M (Keras)", "gesture_cache.backbones.c3d")
register(
    "hands",
    "MediaPipe Hands (LiteRT)",
    "gesture_cache.backbones.hands",
    clip_stride=1,
    own_weights=True,
)
register("i3d", "I3D Kinetics-400 (Keras)", "gesture_cache.backbones.i3d", own_weights=True)


def finds_own_weights(spec: dict) -> bool:
    """Whether the backbone of a cache's extractor spec finds and checks its weights itself
    (no --weights needed to run it again)."""
    return any(b.own_weights for b in BACKBONES.values() if b.model == spec.get("model"))


def backbone_module(name: str) -> ModuleType:
    """The module of the backbone `--backbone name` (imported only now: Keras loads there)."""
    if name not in BACKBONES:
        raise ConfigError(f"unknown --backbone {name!r}: use one of {', '.join(BACKBONES)}")
    return importlib.import_module(BACKBONES[name].module)


def spec_module(spec: dict) -> ModuleType:
    """The module of the backbone a cache's extractor spec names."""
    for registered in BACKBONES.values():
        if registered.model == spec.get("model"):
            return importlib.import_module(registered.module)
    raise ConfigError(
        f"the cache was extracted by {spec.get('model')!r}, a backbone this installation "
        f"does not have (it has {', '.join(b.model for b in BACKBONES.values())})"
    )


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


def refuse_c3d_settings(config, backbone: str) -> None:
    """--mean-file, --layer and --precision are C3D's; given with another backbone they
    would be silently ignored, so they are refused."""
    given = {
        "--mean-file": config.mean_file is not None,
        "--layer": config.layer != "fc7",
        "--precision": config.precision != "float32",
    }
    wrong = [flag for flag, set_ in given.items() if set_]
    if wrong:
        raise ConfigError(f"{', '.join(wrong)}: C3D's settings; --backbone {backbone} has none")
