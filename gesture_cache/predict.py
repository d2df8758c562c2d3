"""Labels for new videos with a trained run: the cache's own decoding, layout and
preprocessing (read from the run's fingerprinted extractor settings), then the classifier."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from gesture_cache.data import valid_first
from gesture_cache.extract import Extractor
from gesture_cache.train import read_run_config
from gesture_cache.video import VideoError, file_sha256


def check_weights(
    extractor: dict, weights: str | None, random_weights: int | None, allow_other: bool
) -> None:
    """The features must come from the weights the cache was built with."""
    if (weights is None) == (random_weights is None):
        raise ValueError("give exactly one of --weights FILE.h5 or --random-weights SEED")
    expected = extractor["weights"]
    if allow_other:
        return
    if "sha256" in expected:
        if weights is None:
            raise ValueError(f"the run's cache used weights {expected['file']}; give --weights")
        actual = file_sha256(weights)
        if actual != expected["sha256"]:
            raise ValueError(
                f"--weights {weights} (sha256 {actual[:12]}) is not the file the cache was built "
                f"with ({expected['file']}, sha256 {expected['sha256'][:12]}); "
                "--allow-other-weights overrides"
            )
    elif random_weights != expected["random_seed"]:
        raise ValueError(
            f"the run's cache used random weights with seed {expected['random_seed']}"
            f", not {weights or random_weights}; --allow-other-weights overrides"
        )


def predict_videos(
    run_dir: str | Path,
    videos: list[str | Path],
    weights: str | None = None,
    random_weights: int | None = None,
    mean_file: str | None = None,
    top_k: int = 3,
    allow_other_weights: bool = False,
) -> list[dict]:
    """One result per video: the top-k classes with probabilities, or the error."""
    run_dir = Path(run_dir)
    saved = read_run_config(run_dir)
    spec = saved["extractor"]
    check_weights(spec, weights, random_weights, allow_other_weights)
    if random_weights is not None:
        spec = {**spec, "weights": {"random_seed": random_weights}}
    preprocessing = spec["preprocessing"]
    if preprocessing["mean_file"] and not mean_file:
        raise ValueError(
            f"the run's cache subtracted the mean cube {preprocessing['mean_file']};"
            " give it with --mean-file"
        )
    extractor = Extractor(spec, weights, mean_file)
    classifier = keras.models.load_model(run_dir / "model.keras")
    classes = saved["cache"]["classes"]
    results = []
    for video in videos:
        try:
            clips, mask, _ = extractor.load(video)
        except VideoError as error:
            results.append({"video": str(video), "error": f"{error.reason}: {error}"})
            continue
        features = extractor.clip_features(clips)
        # the classifier learned from features stored at the cache's precision
        features = features.astype(saved["cache"]["dtype"]).astype(np.float32)
        features, mask = valid_first(features[None], mask[None])
        probabilities = classifier.predict([features, mask], verbose=0)[0]
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
