"""C3D's pixel preprocessing: `c3d` as in the Caffe original and the Keras ports (BGR 0-255,
171x128 bilinear, the Sports-1M mean, the centre 112x112), `reference` as in the blog the
old pipeline followed (112x112 INTER_AREA / 255), and the c3d-keras mean cube."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gesture_cache.common.errors import ConfigError
from gesture_cache.common.files import file_sha256
from gesture_cache.video.clips import CLIP_LEN
from gesture_cache.video.decode import Preprocessing

CROP_SIZE = 112  # C3D's input height and width


C3D_BGR_MEAN = (90.25, 97.66, 101.41)


def make_preprocessing(name: str = "c3d", mean_file: str | Path | None = None) -> Preprocessing:
    """`c3d` as in the Caffe original and the Keras ports, `reference`
    as in the blog the old pipeline followed."""
    if name == "c3d":
        return Preprocessing(
            name="c3d",
            resize=(171, 128),
            interpolation="bilinear",
            crop=(8, 120, 29, 141),
            scale=1.0,
            mean_bgr=None if mean_file else C3D_BGR_MEAN,
            mean_sha256=file_sha256(mean_file) if mean_file else None,
        )
    if name == "reference":
        if mean_file:
            raise ConfigError("--mean-file only applies to --preprocess c3d")
        return Preprocessing(
            name="reference",
            resize=(112, 112),
            interpolation="area",
            crop=(0, 112, 0, 112),
            scale=1 / 255,
            mean_bgr=None,
        )
    raise ConfigError(f"unknown preprocessing {name!r}: use 'c3d' or 'reference'")


def load_mean_cube(mean_file: str | Path, preprocessing: Preprocessing) -> np.ndarray:
    """A C3D mean cube, BGR, cropped to the model's input as (16, 112, 112, 3).

    Accepted layouts: channels first (3, 16, 128, 171), as c3d-keras stores `c3d_mean.npy`,
    or channels last (16, 128, 171, 3); either with a leading batch axis of 1.
    """
    try:
        cube = np.load(mean_file, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ConfigError(f"--mean-file {mean_file} is not a .npy array: {error}") from None
    width, height = preprocessing.resize
    channels_first, channels_last = (3, CLIP_LEN, height, width), (CLIP_LEN, height, width, 3)
    shape = cube.shape[1:] if cube.ndim == 5 and cube.shape[0] == 1 else cube.shape
    cube = cube.reshape(shape).astype(np.float32)
    if shape == channels_first:
        cube = np.moveaxis(cube, 0, -1)
    elif shape != channels_last:
        raise ConfigError(
            f"--mean-file {mean_file}: shape {tuple(cube.shape)}; expected {channels_first} "
            f"(channels first, as c3d-keras ships it) or {channels_last}, optionally with a "
            "leading axis of 1"
        )
    if not np.isfinite(cube).all():
        raise ConfigError(f"--mean-file {mean_file} holds inf or NaN")
    r0, r1, c0, c1 = preprocessing.crop
    return cube[:, r0:r1, c0:c1, :]
