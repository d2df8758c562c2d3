"""Labels for new videos with a trained run: the cache's own decoding, layout and
preprocessing (read from the run's fingerprinted extractor settings), then the classifier."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gesture_cache.common.errors import ConfigError
from gesture_cache.data.windows import Window, windows
from gesture_cache.deploy.trained import load_trained
from gesture_cache.video.decode import VideoError


def predict_videos(
    run_dir: str | Path,
    videos: list[str | Path],
    *,
    weights: str | None = None,
    random_weights: int | None = None,
    files: dict | None = None,
    top_k: int = 3,
    allow_other_weights: bool = False,
    fps: float | None = None,
    runtime: str | None = None,
    backend: str | None = None,
) -> list[dict]:
    """One result per video: the top-k classes with probabilities, or the error. `run_dir`
    may be an exported bundle (run with `runtime`, onnxruntime by default); a run folder's
    C3D runs on the Keras `backend`."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ConfigError(f"--top-k {top_k}: give a whole number of at least 1")
    trained = load_trained(
        run_dir,
        weights=weights,
        random_weights=random_weights,
        files=files,
        runtime=runtime,
        allow_other_weights=allow_other_weights,
        overridable=True,
        backend=backend,
    )
    extractor, classes = trained.extractor, trained.classes
    results = []
    for video in videos:
        try:
            clips = extractor.features(video, fps)
        except VideoError as error:
            results.append({"video": str(video), "error": f"{error.reason}: {error}"})
            continue
        # the classifier learned from features stored at the cache's precision
        features = clips.features.astype(trained.dtype).astype(np.float32)
        positions, mask = windows(
            np.zeros(1, np.int64),
            np.array([len(features)]),
            clips.clip_valid,
            trained.window or Window(len(features)),  # schema-1 runs: the fixed clips
            not extractor.layout.streams,
        )
        probabilities = trained.classify(features[positions], mask)[0]
        best = np.argsort(probabilities)[::-1][:top_k]
        results.append(
            {
                "video": str(video),
                "label": classes[best[0]],
                "top_k": [
                    {"label": classes[i], "probability": float(probabilities[i])} for i in best
                ],
            }
        )
    return results
