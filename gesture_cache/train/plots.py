"""A run's plots: learning curves, confusion matrix, and a feature heat map.

matplotlib and scikit-learn load in seconds: imported inside the functions that plot."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    pass


def plot_learning_curves(history: pd.DataFrame, path: Path) -> None:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("loss", "accuracy")):
        axis.plot(history["epoch"] + 1, history[metric], label=f"train {metric}")
        if f"val_{metric}" in history:
            axis.plot(history["epoch"] + 1, history[f"val_{metric}"], label=f"val {metric}")
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_confusion_matrix(metrics: dict, path: Path) -> None:
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    figure, axis = plt.subplots(figsize=(6, 5))
    display = ConfusionMatrixDisplay(
        np.array(metrics["confusion_matrix"]), display_labels=metrics["classes"]
    )
    display.plot(ax=axis, colorbar=False, xticks_rotation=30)
    axis.set_title(f"test accuracy {metrics['accuracy']:.3f}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def feature_heatmap(features: np.ndarray, mask: np.ndarray, title: str, dims: int = 256):
    """One video's clip features (T, D) as an image; padded clips are greyed out."""
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(10, 3))
    shown = np.ma.masked_array(
        features[:, :dims].astype(np.float32),
        np.repeat(~mask[:, None], min(dims, features.shape[1]), axis=1),
    )
    image = axis.imshow(shown, aspect="auto", cmap="viridis", interpolation="nearest")
    axis.set_xlabel(f"feature (first {dims})")
    axis.set_ylabel("clip")
    axis.set_title(title)
    figure.colorbar(image, ax=axis)
    return figure
