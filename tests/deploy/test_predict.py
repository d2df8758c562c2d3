"""`predict` and `evaluate`: labels for new videos decoded as the cache's were, weights and
mean cubes checked, a run's test metrics reproduced."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from gesture_cache.cli.main import main
from gesture_cache.common.errors import ConfigError
from gesture_cache.deploy.predict import predict_videos
from gesture_cache.extract.extraction import build_cache
from gesture_cache.sources import synth
from gesture_cache.train.config import TrainConfig
from gesture_cache.train.metrics import evaluate_run, predict_proba
from gesture_cache.train.prepare import training_data
from gesture_cache.train.run_folder import load_best_model
from tests.toy_backbone import extract_config


@pytest.fixture(scope="module")
def new_videos(tmp_path_factory):
    """Eight videos the run has never seen, cached with the toy demo's extractor settings."""
    root = tmp_path_factory.mktemp("new")
    csv = synth.make_dataset(root / "videos", per_class=2, seed=99)
    build_cache(csv, root / "cache", extract_config())
    return csv, root / "cache"


@pytest.mark.slow
def test_evaluate_reproduces_the_runs_test_metrics(toy_demo, capsys):
    metrics = evaluate_run(toy_demo.run)
    saved = json.loads((toy_demo.run / "metrics.json").read_text())
    assert metrics == saved
    assert main(["evaluate", str(toy_demo.run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == saved["accuracy"]
    assert main(["evaluate", str(toy_demo.run)]) == 0
    assert "macro-F1" in capsys.readouterr().out


def test_evaluate_on_another_cache_with_the_same_extractor(
    toy_demo, new_videos, small_cache, capsys
):
    _, cache = new_videos
    metrics = evaluate_run(toy_demo.run, cache)
    assert metrics["samples"] == 8 and np.sum(metrics["confusion_matrix"]) == 8
    assert metrics["accuracy"] >= 0.5  # chance is 0.25
    assert main(["evaluate", str(toy_demo.run), "--cache", str(small_cache)]) == 2
    assert "another extractor" in capsys.readouterr().err


@pytest.mark.slow
def test_predict_matches_the_cached_features(toy_demo, new_videos):
    """Each video's probabilities from the file equal the classifier's on its cached features."""
    csv, cache_path = new_videos
    prepared = training_data(cache_path, TrainConfig())
    table = pd.read_csv(csv)
    videos = [csv.parent / p for p in table["file_path"]]
    results = predict_videos(toy_demo.run, videos, random_weights=0, top_k=4)
    model = load_best_model(toy_demo.run)
    rows = np.array([list(prepared.samples.ids).index(p) for p in table["file_path"]])
    expected = predict_proba(model, prepared, rows)
    classes = json.loads((toy_demo.run / "config.json").read_text())["cache"]["classes"]
    for result, probabilities in zip(results, expected):
        got = np.zeros(len(classes))
        for entry in result["top_k"]:
            got[classes.index(entry["label"])] = entry["probability"]
        np.testing.assert_allclose(got, probabilities, atol=1e-4)
        assert result["label"] == classes[int(np.argmax(probabilities))]
    assert main(["predict", str(toy_demo.run), str(videos[0]), "--random-weights", "0",
                 "--top-k", "0"]) == 2  # fmt: skip


def test_predict_refuses_a_mean_cube_the_cache_did_not_use(detector, new_videos, tmp_path):
    csv, _ = new_videos  # (a C3D run: `detector`'s cache holds C3D's spec)
    video = str(next(csv.parent.glob("*/*.avi")))
    np.save(tmp_path / "mean.npy", np.zeros((3, 16, 128, 171), np.float32))
    with pytest.raises(ConfigError, match="per-channel mean, not a mean cube"):
        predict_videos(
            detector.run, [video], random_weights=0, files={"mean_file": str(tmp_path / "mean.npy")}
        )


@pytest.mark.slow
def test_predict_refuses_other_weights_unless_allowed(toy_demo, new_videos, weights_file, capsys):
    csv, _ = new_videos
    video = str(next(csv.parent.glob("*/*.avi")))
    with pytest.raises(ConfigError, match="random weights with seed 0, not 3"):
        predict_videos(toy_demo.run, [video], random_weights=3)
    assert main(["predict", str(toy_demo.run), video, "--weights", str(weights_file)]) == 2
    assert "--allow-other-weights" in capsys.readouterr().err
    assert (
        main(
            [
                "predict",
                str(toy_demo.run),
                video,
                "--random-weights",
                "3",
                "--allow-other-weights",
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)[0]["video"] == video


@pytest.mark.slow
def test_predict_reports_a_bad_video_and_goes_on(toy_demo, new_videos, tmp_path, capsys):
    csv, _ = new_videos
    good = str(next(csv.parent.glob("*/*.avi")))
    assert (
        main(
            [
                "predict",
                str(toy_demo.run),
                str(tmp_path / "gone.mp4"),
                good,
                "--random-weights",
                "0",
            ]
        )
        == 1
    )
    out = capsys.readouterr().out
    assert "gone.mp4: ERROR missing" in out and f"{good}: " in out
