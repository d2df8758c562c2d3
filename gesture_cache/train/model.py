"""Classifier builders: a stack of bidirectional recurrent layers over clip features.

Inputs are the features (T, D) and a clip mask (T,) whose valid clips come first (right
padding, which the cuDNN kernels need); the mask is handed to every recurrent layer, so a
padded clip changes nothing. Standardisation statistics live in a `Normalization` layer, so
the saved `.keras` file needs no custom code to load.
"""

from __future__ import annotations

import keras
import numpy as np

from gesture_cache.common.errors import ConfigError

PRESETS = {
    # The pipeline this project replaces: 46,971,556 trainable parameters for 4 classes.
    "reference": {"units": (1024, 256, 64), "cell": "lstm", "dense": 32, "dropout": 0.0},
    # The default: trains in seconds on a CPU.
    "compact": {"units": (64,), "cell": "lstm", "dense": 32, "dropout": 0.3},
    # Hand landmarks (140 values a hand a frame, windows of frames): the landmarks -> LSTM
    # recipe of public MediaPipe code, 2 x 128 then 2 x 64 cells (0.57 M parameters at 256 values).
    "landmarks": {"units": (128, 64), "cell": "lstm", "dense": 64, "dropout": 0.3},
}


CELLS = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}


def preset_hparams(preset: str) -> dict:
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}: choose one of {sorted(PRESETS)}")
    return dict(PRESETS[preset])


def build_classifier(
    preset: str,
    num_classes: int,
    input_shape: tuple[int, int],
    *,
    units: tuple[int, ...] | None = None,
    cell: str | None = None,
    dense: int | None = None,
    dropout: float | None = None,
    mean: np.ndarray | None = None,
    variance: np.ndarray | None = None,
    projection: tuple[np.ndarray, np.ndarray] | None = None,
) -> keras.Model:
    """A preset, with any hyperparameter overridden; `mean`/`variance` add standardisation.
    `projection` (kernel (D, N), bias (N,)) adds a fixed linear layer after the
    standardisation (`--reduce`)."""
    hparams = preset_hparams(preset)
    overrides = {"units": units, "cell": cell, "dense": dense, "dropout": dropout}
    hparams.update({k: v for k, v in overrides.items() if v is not None})
    if hparams["cell"] not in CELLS:
        raise ConfigError(f"unknown cell {hparams['cell']!r}: use 'lstm' or 'gru'")

    features = keras.Input(input_shape, name="features")
    mask = keras.Input(input_shape[:1], dtype="bool", name="mask")
    x = features
    if mean is not None:
        x = keras.layers.Normalization(mean=mean, variance=variance, name="standardize")(x)
    if projection is not None:
        reduce = keras.layers.Dense(projection[0].shape[1], name="reduce", trainable=False)
        x = reduce(x)
        reduce.set_weights([np.asarray(p, np.float32) for p in projection])
    for i, size in enumerate(hparams["units"]):
        last = i == len(hparams["units"]) - 1
        recurrent = CELLS[hparams["cell"]](size, return_sequences=not last)
        x = keras.layers.Bidirectional(recurrent, name=f"bi{hparams['cell']}_{i + 1}")(x, mask=mask)
        if hparams["dropout"]:
            x = keras.layers.Dropout(hparams["dropout"], name=f"dropout_{i + 1}")(x)
    if hparams["dense"]:
        x = keras.layers.Dense(hparams["dense"], activation="relu", name="dense")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="classes")(x)
    return keras.Model([features, mask], outputs, name=f"gesture_{preset}")


def trainable_parameters(model: keras.Model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def parameter_count(
    units: tuple[int, ...], cell: str, dense: int, input_dim: int, classes: int
) -> int:
    """Trainable parameters of `build_classifier`'s model, without building it."""
    gates, biases = {"lstm": (4, 1), "gru": (3, 2)}[cell]  # Keras' GRU keeps two biases
    count, width = 0, input_dim
    for size in units:
        count += 2 * gates * size * (width + size + biases)  # forward and backward
        width = 2 * size
    if dense:
        count += (width + 1) * dense
        width = dense
    return count + (width + 1) * classes


def training_state_mb(
    units: tuple[int, ...], cell: str, dense: int, input_dim: int, classes: int
) -> float:
    """Memory a model holds while it trains: its weights, their gradients and Adam's two
    moments, float32 each."""
    return 16 * parameter_count(units, cell, dense, input_dim, classes) / 2**20
