"""A trained run folder, read: its settings, classes, window, best model and split, and the
checks that the weights, mean cube and cache it is used with are those it was trained on.

Everything that uses a trained run (evaluate, predict, detect, runs, export) reads it through
this module, which neither trains nor plots. A run folder may come from someone else: none
of its files is read or written through a link that leaves it.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from gesture_cache.backbones.base import finds_own_weights
from gesture_cache.common.errors import CacheError, ConfigError, GestureCacheError, RunError
from gesture_cache.common.files import atomic_write, file_sha256, inside, read_json, write_json
from gesture_cache.common.hdf5 import open_plain
from gesture_cache.data.windows import SPLITS, Window
from gesture_cache.train.config import TrainConfig

if TYPE_CHECKING:
    import keras

    from gesture_cache.cache.reader import Cache

RUN_FILES = (
    "config.json",
    "split.csv",
    "model.keras",
    "history.csv",
    "metrics.json",
    "learning_curves.png",
    "confusion_matrix.png",
    "backup",
    ".lock",
    ".next.model.keras",
)


def check_run_folder(run_dir: Path) -> None:
    """Refuse links planted in a received run folder (Keras would write through them)."""
    for name in RUN_FILES:
        run_file(run_dir, name)


def run_file(run_dir: Path, name: str) -> Path:
    try:
        return inside(run_dir, name)
    except GestureCacheError as error:
        raise RunError(str(error)) from None


def save_json(run_dir: Path, name: str, value: dict) -> None:
    write_json(run_file(run_dir, name), value)


def save_bytes(run_dir: Path, name: str, value: bytes) -> None:
    atomic_write(run_file(run_dir, name), value)


def check_same_cache(cache: Cache, cache_path: str | Path, saved: dict) -> None:
    """The cache a run continues or is evaluated on must hold the videos it began with."""
    if cache.fingerprint != saved["cache"]["fingerprint"]:
        raise CacheError(
            f"cache {cache_path} was built with another extractor than the run's "
            f"(fingerprint {cache.fingerprint[:12]} vs {saved['cache']['fingerprint'][:12]})"
        )
    digest = saved["cache"].get("content_digest")
    if digest is not None and cache.content_digest != digest:
        raise RunError(
            f"cache {cache_path} does not hold the data the run was trained on "
            f"({len(cache.recordings['recording_id'])} recordings now, "
            f"{saved['cache'].get('recordings', '?')} then: grown, merged or another dataset); "
            "evaluate it with --cache, or train a new run with --split-from to keep the old split"
        )


def read_split(run_dir: Path, samples) -> np.ndarray:
    """The run's split.csv, aligned to the samples (which must all be in it)."""
    split_of = read_split_table(run_file(run_dir, "split.csv"))
    missing = [v for v in samples.ids if v not in split_of]
    if missing:
        raise RunError(
            f"{run_dir / 'split.csv'} lacks {len(missing)} samples of the cache, e.g. {missing[0]}"
        )
    return np.array([split_of[v] for v in samples.ids])


def read_split_table(path: Path) -> dict[str, str]:
    """sample id -> split (runs of schema-1 caches named the column video_id)."""
    if not path.is_file():
        raise RunError(f"{path} does not exist")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        ids = table["sample_id"] if "sample_id" in table else table["video_id"]
        split_of = dict(zip(ids, table["split"]))
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, KeyError) as error:
        raise RunError(f"{path} cannot be read as a split: {error}") from None
    if not set(split_of.values()) <= set(SPLITS):
        raise RunError(f"{path}: split names must be {SPLITS}")
    return split_of


def load_best_model(run_dir: Path) -> keras.Model:
    import keras

    path = run_file(Path(run_dir), "model.keras")
    if not path.is_file():
        raise RunError(f"{run_dir} has no model.keras (stopped before its first epoch ended?)")
    refuse_indirect_weights(path)
    try:
        return keras.models.load_model(path)
    except Exception as error:  # noqa: BLE001 - Keras raises many kinds for a bad file
        raise RunError(
            f"{path} cannot be loaded ({type(error).__name__}: {str(error)[:200]}); "
            "is it truncated or corrupt?"
        ) from None


def refuse_indirect_weights(path: Path) -> None:
    """A .keras file's weights (an HDF5 file inside the zip) checked before Keras reads
    them: weights kept in another file (`common.hdf5`) are refused."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith(".h5")]
            for name in names:
                with open_plain(io.BytesIO(archive.read(name)), f"{path} ({name})"):
                    pass
    except (zipfile.BadZipFile, OSError) as error:
        raise RunError(f"{path} cannot be loaded ({error}); is it truncated or corrupt?") from None


def read_run_config(run_dir: Path) -> dict:
    """A run's config.json, with every field the commands use checked."""
    path = run_file(Path(run_dir), "config.json")
    if not path.exists():
        what = "a cache" if (Path(run_dir) / "manifest.json").is_file() else "not a run folder"
        raise RunError(f"{run_dir} is {what}: no config.json (give a run folder or a bundle)")
    try:
        saved = read_json(path, "run config")
    except GestureCacheError as error:
        raise RunError(str(error)) from None
    known = {f.name for f in fields(TrainConfig)}
    try:
        hparams, cache = saved["hparams"], saved["cache"]
        ok = (
            isinstance(hparams, dict)
            and set(hparams) <= known
            and isinstance(cache, dict)
            and isinstance(cache["classes"], list)
            and isinstance(cache["fingerprint"], str)
            and isinstance(cache["path"], str)
            and isinstance(saved["extractor"], dict)
        )
    except (KeyError, TypeError):
        ok = False
    if not ok:
        raise RunError(f"{path} is not a gesture-cache run config (fields missing or mistyped)")
    try:
        TrainConfig(**hparams)
    except GestureCacheError as error:
        raise RunError(f"{path}: {error}") from None
    if "window" in saved:
        try:
            Window(**saved["window"])
        except (GestureCacheError, TypeError) as error:
            raise RunError(f"{path}: field 'window' cannot be used: {error}") from None
    return saved


def check_weights(
    extractor: dict,
    files: dict,
    weights: str | None,
    random_weights: int | None,
    allow_other: bool = False,
    overridable: bool = False,
) -> None:
    """The features must come from the weights the cache was built with (by sha256);
    `overridable`: the command has --allow-other-weights, and the message says so. A
    backbone with installed weights (hands, I3D) finds and checks them itself."""
    if finds_own_weights(extractor):
        return
    if (weights is None) == (random_weights is None):
        raise ConfigError("give exactly one of --weights FILE.h5 or --random-weights SEED")
    if weights is not None and not Path(weights).is_file():
        raise ConfigError(f"--weights {weights} does not exist")
    expected = extractor["weights"]
    if allow_other:
        return
    name = files.get("weights", "a weights file")
    hint = "; --allow-other-weights overrides" if overridable else ""
    if "sha256" in expected:
        if weights is None:
            raise ConfigError(f"the run's cache used weights {name}; give --weights")
        actual = file_sha256(weights)
        if actual != expected["sha256"]:
            raise ConfigError(
                f"--weights {weights} (sha256 {actual[:12]}) is not the file the cache was built "
                f"with ({name}, sha256 {expected['sha256'][:12]}){hint}"
            )
    elif random_weights != expected["random_seed"]:
        raise ConfigError(
            f"the run's cache used random weights with seed {expected['random_seed']}"
            f", not {weights or random_weights}{hint}"
        )
