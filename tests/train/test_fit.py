"""Training: the demo's accuracy, presets, reproducibility, splits, streaming, Ctrl-C and
resume."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pandas as pd
import pytest

from gesture_cache import CacheError
from gesture_cache.cache.manifest import read_manifest
from gesture_cache.cache.merge import merge_caches
from gesture_cache.cli.main import main
from gesture_cache.common.errors import ConfigError
from gesture_cache.train.config import TrainConfig, load_config_file, make_train_config
from gesture_cache.train.fit import resume, train
from gesture_cache.train.model import parameter_count, trainable_parameters
from gesture_cache.train.prepare import training_data
from gesture_cache.train.run_folder import load_best_model, read_split
from tests.helpers import write_continuous_cache

QUICK = {"epochs": 4, "patience": 4}


@pytest.mark.slow
def test_demo_reaches_090_on_held_out_videos(demo):
    metrics = demo.training.metrics
    assert metrics["accuracy"] >= 0.9, metrics
    assert metrics["samples"] == 16 and np.sum(metrics["confusion_matrix"]) == 16
    assert metrics["random_weights"] is True
    for name in (
        "config.json",
        "split.csv",
        "model.keras",
        "history.csv",
        "metrics.json",
        "learning_curves.png",
        "confusion_matrix.png",
    ):
        assert (demo.run / name).stat().st_size > 0, name
    assert not (demo.run / "backup").exists()  # removed once training ended normally


@pytest.mark.slow
def test_run_folder_records_config_and_a_disjoint_split(toy_demo):
    config = json.loads((toy_demo.run / "config.json").read_text())
    assert config["hparams"]["units"] == [64] and config["hparams"]["preset"] == "compact"
    assert (
        config["cache"]["fingerprint"]
        == json.loads((toy_demo.cache / "manifest.json").read_text())["fingerprint"]
    )
    assert config["extractor"]["sampling"] == "dense" and config["status"] == "finished"
    assert config["window"] == {"clips": 8, "step": None, "sampling": "uniform"}
    split = pd.read_csv(toy_demo.run / "split.csv")
    assert split["sample_id"].is_unique and set(split["split"]) == {"train", "val", "test"}
    assert (split["split"] == "test").sum() == 16
    assert split.groupby("split")["label"].nunique().to_dict() == {"test": 4, "train": 4, "val": 4}


@pytest.mark.slow
def test_same_cache_config_and_seed_give_the_same_run(toy_demo, tmp_path):
    first = train(toy_demo.cache, tmp_path / "a", TrainConfig(seed=5, **QUICK))
    second = train(toy_demo.cache, tmp_path / "b", TrainConfig(seed=5, **QUICK))
    assert (tmp_path / "a" / "split.csv").read_text() == (tmp_path / "b" / "split.csv").read_text()
    assert first.metrics == second.metrics
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "a" / "history.csv"), pd.read_csv(tmp_path / "b" / "history.csv")
    )
    third = train(toy_demo.cache, tmp_path / "c", TrainConfig(seed=6, **QUICK))
    assert (tmp_path / "c" / "split.csv").read_text() != (tmp_path / "a" / "split.csv").read_text()
    assert third.metrics["samples"] == 16


@pytest.mark.slow
def test_the_same_recordings_in_another_cache_order_give_the_same_run(small_cache, tmp_path):
    """Recordings are stored in the order they finish extracting (which the decode threads'
    timing decides) or are merged in: a run must depend on what a cache holds, not on that."""
    extractor = read_manifest(small_cache)["extractor"]
    ids = [f"s{i:02d}/rec.avi" for i in range(8)]
    first = write_continuous_cache(tmp_path / "first", extractor, ids[:4], seed=1)
    second = write_continuous_cache(tmp_path / "second", extractor, ids[4:], seed=2)
    orders = {"one-order": [first, second], "other-order": [second, first]}
    for name, sources in orders.items():
        merge_caches(sources, tmp_path / name)
    config = TrainConfig(background=True, window_clips=2, units=(8,), dense=0, **QUICK)
    runs = [train(tmp_path / name, tmp_path / f"run-{name}", config) for name in orders]
    for file in ("split.csv", "history.csv"):
        one, other = ((tmp_path / f"run-{name}" / file).read_text() for name in orders)
        assert one == other, file
    assert runs[0].metrics == runs[1].metrics


@pytest.mark.slow
def test_reference_preset_learns(toy_demo, tmp_path):
    """The reference preset (its size at C3D's 4096 values: test_model) learns what the
    pipeline it replaces never did (chance, 0.25, on 4 classes)."""
    result = train(
        toy_demo.cache, tmp_path / "ref", TrainConfig(preset="reference", epochs=15, patience=15)
    )
    assert result.metrics["accuracy"] >= 0.6, result.metrics  # chance is 0.25
    model = keras.models.load_model(tmp_path / "ref" / "model.keras")
    width = json.loads((toy_demo.cache / "manifest.json").read_text())["feature_dim"]
    assert trainable_parameters(model) == parameter_count((1024, 256, 64), "lstm", 32, width, 4)


@pytest.mark.slow
def test_streaming_from_disk_trains_too(toy_demo, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    result = train(
        toy_demo.cache, tmp_path / "s", TrainConfig(memory_limit_mb=0, epochs=30, patience=30)
    )
    assert "streaming it shard by shard" in caplog.text
    assert result.epochs == 30 and len(pd.read_csv(tmp_path / "s" / "history.csv")) == 30
    assert result.metrics["accuracy"] >= 0.75


@pytest.mark.slow
def test_a_streamed_run_reads_the_validation_shards_once(toy_demo, tmp_path, monkeypatch):
    """Streamed, validation's windows are kept after the first epoch when they fit in half of
    --memory-limit: later epochs read the shards for training only, and nothing else changes."""
    from gesture_cache.data import read_ahead
    from gesture_cache.train import fit

    reads = []
    read_features = read_ahead.read_features
    monkeypatch.setattr(
        read_ahead, "read_features", lambda path: reads.append(path) or read_features(path)
    )

    class Reads(keras.callbacks.Callback):  # those of fit: not standardisation's or the test's
        def on_train_begin(self, logs=None):
            reads.clear()

        def on_train_end(self, logs=None):
            self.count = len(reads)

    config = TrainConfig(memory_limit_mb=100, epochs=3, patience=3)
    counted = {}
    for held in (True, False):
        if not held:
            monkeypatch.setattr(fit, "holds_validation", lambda *args: False)
        callback = Reads()
        train(toy_demo.cache, tmp_path / str(held), config, callbacks=[callback])
        counted[held] = callback.count
    assert counted[True] < counted[False] and (counted[False] - counted[True]) % 2 == 0
    history = [pd.read_csv(tmp_path / str(held) / "history.csv") for held in (True, False)]
    pd.testing.assert_frame_equal(history[0], history[1])


def test_train_returns_with_the_cache_features_freed(small_cache, tmp_path, monkeypatch):
    """The features live in a reference cycle (Keras' model, the tf.data gather function,
    its tensor over them): without a collection at the end of train(), each run in one
    process (`tune`'s trials, a notebook's loop) kept its cache until the collector ran."""
    import weakref

    from gesture_cache.data import pipeline

    held = []
    shared_tensor = pipeline.shared_tensor
    monkeypatch.setattr(
        pipeline,
        "shared_tensor",
        lambda features: held.append(weakref.ref(features)) or shared_tensor(features),
    )
    train(small_cache, tmp_path / "run", TrainConfig(epochs=1, units=(4,), dense=0))
    assert held and all(ref() is None for ref in held)


def test_a_ctrl_c_just_after_config_json_is_written_marks_the_run(
    small_cache, tmp_path, monkeypatch
):
    """The CI run of a360e1a: the SIGINT landed after config.json said "running" and before
    the guard that marks an interrupted run, which stayed "running" for good."""
    from gesture_cache.train import fit

    start_run_folder = fit.start_run_folder

    def interrupted_as_it_returns(*args):
        start_run_folder(*args)
        raise KeyboardInterrupt

    monkeypatch.setattr(fit, "start_run_folder", interrupted_as_it_returns)
    with pytest.raises(KeyboardInterrupt):
        train(small_cache, tmp_path / "run", TrainConfig(epochs=1, units=(4,), dense=0))
    assert json.loads((tmp_path / "run" / "config.json").read_text())["status"] == "interrupted"


def test_config_file_then_flags(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('preset = "reference"\nunits = [128, 32]\nlr = 0.01\nepochs = 7\n')
    config = make_train_config(load_config_file(toml), {"lr": 0.002, "units": None})
    assert config == TrainConfig(preset="reference", units=(128, 32), lr=0.002, epochs=7)
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("units: 64,16\ncell: gru\n")
    assert make_train_config(load_config_file(yaml_file), {}).units == (64, 16)
    with pytest.raises(ConfigError, match="setting lr = 'fast': expected a number"):
        make_train_config({"lr": "fast"}, {})
    with pytest.raises(ConfigError, match="setting epochs = 0: must be above 0"):
        make_train_config({}, {"epochs": 0})
    bad = tmp_path / "bad.toml"
    bad.write_text("learning_rate = 0.1\n")
    with pytest.raises(ConfigError, match="unknown setting.*learning_rate"):
        load_config_file(bad)


def test_train_cli_uses_config_file_and_flags(small_cache, tmp_path, capsys, caplog):
    config = tmp_path / "c.yaml"
    config.write_text("units: [8]\ndense: 0\nepochs: 2\ntest_size: 0.5\nval_size: 0\n")
    run = tmp_path / "run"
    flags = ["--epochs", "3", "--no-normalize", "--class-weight"]
    assert (
        main(["train", str(small_cache), "--out", str(run), "--config", str(config), *flags]) == 0
    )
    saved = json.loads((run / "config.json").read_text())["hparams"]
    assert saved["units"] == [8] and saved["epochs"] == 3 and saved["normalize"] is False
    assert saved["class_weight"] is True
    assert len(pd.read_csv(run / "history.csv")) == 3
    assert "standardize" not in [
        layer.name for layer in keras.models.load_model(run / "model.keras").layers
    ]
    assert "RANDOM C3D WEIGHTS" in caplog.text
    assert "accuracy" in capsys.readouterr().out
    assert main(["train", str(small_cache), "--out", str(run)]) == 2  # exists: --resume or new


def test_a_corrupt_cache_is_refused(small_cache, tmp_path):
    copy = tmp_path / "cache"
    shutil.copytree(small_cache, copy)
    shard = copy / "part-00000.h5"
    data = bytearray(shard.read_bytes())
    data[-3000] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(CacheError, match="fails verification"):
        train(copy, tmp_path / "run", TrainConfig(**QUICK))


@pytest.mark.slow
def test_ctrl_c_leaves_a_usable_run_that_resume_finishes(toy_demo, tmp_path):
    run = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "gesture_cache.cli",
        "train",
        str(toy_demo.cache),
        "--out",
        str(run),
        "--epochs",
        "25",
        "--patience",
        "25",
        "--batch-size",
        "1",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        history = run / "history.csv"
        if history.exists() and len(history.read_text().splitlines()) >= 3:  # 2 epochs done
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    config = json.loads((run / "config.json").read_text())
    assert config["status"] == "interrupted"
    assert json.loads((run / "metrics.json").read_text())["samples"] == 16
    done = len(pd.read_csv(run / "history.csv"))
    assert 2 <= done < 25

    result = resume(run)
    history = pd.read_csv(run / "history.csv")
    assert not result.interrupted and len(history) == 25 == result.epochs
    assert history["epoch"].tolist() == list(range(25))
    assert json.loads((run / "config.json").read_text())["status"] == "finished"
    # model.keras is the best epoch of both sessions, by the monitored validation loss
    prepared = training_data(toy_demo.cache, TrainConfig())
    val = np.flatnonzero(read_split(run, prepared.samples) == "val")
    dataset = prepared.dataset(val, 16, shuffle=False, seed=0)
    val_loss = load_best_model(run).evaluate(dataset, verbose=0, return_dict=True)["loss"]
    assert val_loss == pytest.approx(history["val_loss"].min(), rel=1e-3)


@pytest.mark.slow
def test_group_column_keeps_a_subject_in_one_split(synth_csv, tmp_path):
    from gesture_cache.extract.config import ExtractConfig
    from gesture_cache.extract.extraction import build_cache

    table = pd.read_csv(synth_csv)
    table["file_path"] = [str(synth_csv.parent / p) for p in table["file_path"]]
    table["group"] = [f"subject{i % 4}" for i in range(len(table))]  # 4 subjects, 2 videos each
    csv = tmp_path / "grouped.csv"
    table.to_csv(csv, index=False)
    build_cache(csv, tmp_path / "cache", ExtractConfig(random_weights=0, clip_stride=64))
    train(tmp_path / "cache", tmp_path / "run", TrainConfig(epochs=1, val_size=0, units=(4,)))
    split = pd.read_csv(tmp_path / "run" / "split.csv").merge(
        table.assign(sample_id=table["file_path"].str.replace("\\\\", "/", regex=False)),
        on="sample_id",
    )
    assert split.groupby("group")["split"].nunique().max() == 1
    assert set(split["split"]) == {"train", "test"}
