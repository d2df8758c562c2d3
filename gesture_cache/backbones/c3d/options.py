"""C3D's own settings (flags of `extract`) and the recipe that reproduces the seed pipeline.
Nothing heavy is imported here: `--help` reads it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gesture_cache.backbones.base import option
from gesture_cache.backbones.keras_backends import KerasOptions
from gesture_cache.common.errors import ConfigError

PREPROCESSINGS = ("c3d", "reference")
POOL5_PADS = ("caffe", "symmetric")
LAYERS = ("fc7", "fc6")


@dataclass(frozen=True)
class Options(KerasOptions):
    preprocess: str = option(
        "c3d",
        "c3d: BGR 0-255, resize to 171x128 bilinear, subtract the BGR mean [90.25, 97.66, "
        "101.41], crop rows 8:120, columns 29:141; reference: resize to 112x112 INTER_AREA, "
        "divide by 255 (the seed pipeline)",
        choices=PREPROCESSINGS,
    )
    mean_file: str | None = option(
        None,
        "a C3D mean cube .npy, BGR, subtracted instead of the per-channel mean: (3, 16, 128, "
        "171) as c3d-keras ships it, or (16, 128, 171, 3), with or without a leading axis of 1",
        metavar="FILE.npy",
        given_again=True,
    )
    pool5_pad: str = option(
        "caffe",
        "padding before pool5: caffe ((0,0),(0,1),(0,1)), as the weights were trained, or "
        "symmetric (0,1,1), as the seed pipeline padded",
        choices=POOL5_PADS,
    )
    layer: str = option(
        "fc7", "the C3D layer whose activations are cached (4096 values a clip)", choices=LAYERS
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, allowed in (("preprocess", PREPROCESSINGS), ("pool5_pad", POOL5_PADS),
                              ("layer", LAYERS)):  # fmt: skip
            if getattr(self, name) not in allowed:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(
                    f"unknown {flag} {getattr(self, name)!r}: use one of {', '.join(allowed)}"
                )
        if self.mean_file is not None:
            if self.preprocess != "c3d":
                raise ConfigError("--mean-file only applies to --preprocess c3d")
            if not Path(self.mean_file).is_file():
                raise ConfigError(f"--mean-file {self.mean_file} does not exist")


# The input of the pipeline this project replaces (fc7 within 1.7e-6 of its own code): 128
# frames per video (short ones centred and padded with black frames), 8 clips 16 apart,
# 112x112 INTER_AREA / 255, symmetric pool5 padding. Each: (layout, options).
RECIPES = {
    "seed": (
        {"sampling": "pad", "frames": 128, "clip_stride": 16, "pad": "zero"},
        {"preprocess": "reference", "pool5_pad": "symmetric"},
    ),
}
