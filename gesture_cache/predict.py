"""Labels for new videos with a trained run: the cache's own decoding, layout and
preprocessing (read from the run's fingerprinted extractor settings), then the classifier."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gesture_cache.errors import ConfigError
from gesture_cache.extractor import extractor_from_spec
from gesture_cache.run import check_mean_file, check_weights, load_best_model, read_run_config
from gesture_cache.video import VideoError
from gesture_cache.windows import Window, windows


def predict_videos(
    run_dir: str | Path,
    videos: list[str | Path],
    weights: str | None = None,
    random_weights: int | None = None,
    mean_file: str | None = None,
    top_k: int = 3,
    allow_other_weights: bool = False,
    fps: float | None = None,
) -> list[dict]:
    """One result per video: the top-k classes with probabilities, or the error."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ConfigError(f"--top-k {top_k}: give a whole number of at least 1")
    run_dir = Path(run_dir)
    saved = read_run_config(run_dir)
    spec, files = saved["extractor"], saved.get("files", {})
    check_weights(spec, files, weights, random_weights, allow_other_weights)
    check_mean_file(spec["preprocessing"], files, mean_file)
    extractor = extractor_from_spec(spec, weights, random_weights, mean_file)
    classifier = load_best_model(run_dir)
    classes = saved.get("classes", saved["cache"]["classes"])
    window = Window(**saved["window"]) if "window" in saved else None
    results = []
    for video in videos:
        try:
            clips = extractor.features(video, fps)
        except VideoError as error:
            results.append({"video": str(video), "error": f"{error.reason}: {error}"})
            continue
        # the classifier learned from features stored at the cache's precision
        features = clips.features.astype(saved["cache"]["dtype"]).astype(np.float32)
        fixed = not extractor.layout.streams
        count = np.array([len(features)])
        positions, mask = windows(
            np.zeros(1, np.int64),
            count,
            clips.clip_valid,
            window or Window(len(features)),  # schema-1 runs: the fixed clips
            fixed,
        )
        probabilities = classifier.predict([features[positions], mask], verbose=0)[0]
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
