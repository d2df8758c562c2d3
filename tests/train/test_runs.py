"""Run folders stay honest: resume, split reuse, changed caches, bad settings and files.

What a new user's bad inputs and faults broke in detection, segments and the sharing
commands, each tested as a class: every output against every input, every float flag,
every worker thread, every CSV reader, every run-folder reader."""

from __future__ import annotations

import io
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gesture_cache.cli.main import main
from gesture_cache.common.errors import ConfigError, RunError
from gesture_cache.data.splits import split_groups, split_videos
from gesture_cache.extract.config import ExtractConfig
from gesture_cache.extract.extraction import build_cache
from gesture_cache.train.callbacks import training_callbacks
from gesture_cache.train.config import TrainConfig, load_config_file, make_train_config
from gesture_cache.train.fit import resume, train
from gesture_cache.train.metrics import evaluate_run
from tests.helpers import unlist_last_shard, write_video

TINY = {"epochs": 2, "patience": 2, "units": (4,), "dense": 0, "test_size": 0.5, "val_size": 0}


def smaller_copy(small_cache: Path, folder: Path) -> Path:
    """The cache as it was before its last shard: same extractor, fewer recordings."""
    shutil.copytree(small_cache, folder)
    unlist_last_shard(folder, delete=True)
    return folder


def interrupted(run: Path) -> None:
    """Mark a run as a Ctrl-C would have left it."""
    config = json.loads((run / "config.json").read_text())
    config["status"] = "interrupted"
    (run / "config.json").write_text(json.dumps(config))


@pytest.mark.slow
def test_resume_refuses_a_cache_that_grew(small_cache, tmp_path):
    smaller = smaller_copy(small_cache, tmp_path / "smaller")
    run = tmp_path / "run"
    train(smaller, run, TrainConfig(**TINY))
    interrupted(run)
    with pytest.raises(RunError, match="does not hold the data the run was trained on"):
        resume(run, small_cache)
    split_before = (run / "split.csv").read_text()
    result = resume(run, smaller)  # the same cache: goes on, split read back
    assert (run / "split.csv").read_text() == split_before and not result.interrupted


@pytest.mark.slow
def test_resume_refuses_changed_flags_and_finished_runs(small_cache, tmp_path, capsys):
    run = tmp_path / "run"
    train(small_cache, run, TrainConfig(**TINY))
    assert main(["train", "--out", str(run), "--resume"]) == 2
    assert "is finished; there is nothing to resume" in capsys.readouterr().err
    interrupted(run)
    assert main(["train", "--out", str(run), "--resume", "--lr", "0.5"]) == 2
    assert "lr 0.001 -> 0.5" in capsys.readouterr().err
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2"]) == 0  # same value


@pytest.mark.slow
def test_split_from_keeps_the_old_split_and_sends_new_videos_to_training(
    small_cache, tmp_path, caplog
):
    smaller = smaller_copy(small_cache, tmp_path / "smaller")
    train(smaller, tmp_path / "a", TrainConfig(**TINY))
    caplog.set_level(logging.WARNING)
    code = main(["train", str(small_cache), "--out", str(tmp_path / "b"), "--epochs", "1",
                 "--units", "4", "--split-from", str(tmp_path / "a")])  # fmt: skip
    assert code == 0
    a = pd.read_csv(tmp_path / "a" / "split.csv").set_index("sample_id")["split"]
    b = pd.read_csv(tmp_path / "b" / "split.csv").set_index("sample_id")["split"]
    assert (b[a.index] == a).all()
    new = b.drop(a.index)
    assert len(new) and (new == "train").all()
    assert f"{len(new)} samples it did not have go to training" in caplog.text


@pytest.mark.slow
def test_evaluate_refuses_another_dataset_at_the_runs_cache_path(small_cache, tmp_path):
    path = smaller_copy(small_cache, tmp_path / "cache")
    run = tmp_path / "run"
    train(path, run, TrainConfig(**TINY))
    shutil.rmtree(path)
    shutil.copytree(small_cache, path)  # same path, same extractor, other videos
    with pytest.raises(RunError, match="does not hold the data"):
        evaluate_run(run)
    with pytest.raises(RunError, match="classes the run never saw"):
        evaluate_run(run, path)  # asked for explicitly: all of it, whose classes are checked


def test_a_one_class_cache_is_refused(tmp_path):
    for i in range(2):
        write_video(tmp_path / f"v{i}.avi", 10, seed=i)
    (tmp_path / "meta.csv").write_text("file_path,action\nv0.avi,wave\nv1.avi,wave\n")
    build_cache(
        tmp_path / "meta.csv", tmp_path / "c", ExtractConfig(random_weights=0, clip_stride=64)
    )
    with pytest.raises(RunError, match="one class"):
        train(tmp_path / "c", tmp_path / "run", TrainConfig(**TINY))


def test_resumed_checkpoint_starts_from_the_best_value_so_far(tmp_path):
    pd.DataFrame({"epoch": [0, 1], "loss": [1.0, 0.5], "val_loss": [0.9, 0.3]}).to_csv(
        tmp_path / "history.csv", index=False
    )
    checkpoint = training_callbacks(tmp_path, "val_loss", 5, resume=True)[1]
    assert checkpoint.best == pytest.approx(0.3)
    fresh = training_callbacks(tmp_path, "val_loss", 5, resume=False)[1]
    assert fresh.best in (None, np.inf)  # no threshold: the first epoch is saved


def test_a_truncated_model_or_config_gets_a_message(small_cache, tmp_path, capsys):
    run = tmp_path / "run"
    train(small_cache, run, TrainConfig(**TINY))
    model = run / "model.keras"
    model.write_bytes(model.read_bytes()[:1000])
    assert main(["evaluate", str(run)]) == 2
    assert "model.keras cannot be loaded" in capsys.readouterr().err
    config = run / "config.json"
    config.write_text(config.read_text()[:50])
    assert main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err
    assert "config.json is not valid JSON" in err and "Traceback" not in err


def test_run_files_planted_as_links_are_refused(small_cache, tmp_path):
    victim = tmp_path / "victim.csv"
    victim.write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    (run / "history.csv").symlink_to(victim)
    with pytest.raises(RunError, match="outside"):
        train(small_cache, run, TrainConfig(**TINY))
    assert victim.read_text() == "precious"


def test_a_blank_group_is_a_group_of_its_own(caplog):
    groups = np.array(["s1", "s1", "", "s2", ""])
    contents = np.array(["a", "b", "c", "d", "e"])
    tied = split_groups(groups, [contents])
    assert tied[0] == tied[1] and len({tied[2], tied[3], tied[4], tied[0]}) == 4
    assert "2 of 5 samples have no group" in caplog.text
    assert split_groups(np.full(3, ""), [np.array(["a", "b", "c"])]) is None


def test_identical_files_under_two_paths_share_a_split():
    n = 40
    ids = np.array([f"v{i:02d}.avi" for i in range(n)])
    labels = np.array(["a", "b"] * (n // 2))
    contents = np.array([f"sha{i}" for i in range(n)])
    contents[1::10] = contents[0::10]  # ten files copied under a second path (other label)
    for seed in range(5):
        split = split_videos(ids, labels, np.full(n, ""), 0.25, 0.15, seed, ties=[contents])
        for i in range(0, n, 10):
            assert split[i] == split[i + 1], (seed, i)


@pytest.mark.parametrize(
    "text, message",
    [
        ("lr: [0.1\n", "cannot be parsed"),
        ("- lr\n- 0.1\n", "expected a table"),
        ("epochs: 2.5\n", "epochs = 2.5: expected a whole number"),
        ("lr: fast\n", "lr = 'fast': expected a number"),
        ("units: [100000]\n", "each size must be a whole number in 1..8192"),
        ("lr: .nan\n", "must be a finite number"),
        ("dropout: 1.5\n", "dropout = 1.5"),
        ("normalize: maybe\n", "normalize = 'maybe': use true or false"),
    ],
)
def test_bad_config_files_name_the_setting(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        make_train_config(load_config_file(path), {})


def test_bad_flags_are_one_line_errors(small_cache, tmp_path, capsys):
    out = ["--out", str(tmp_path / "t")]
    for command, message in [
        (["train", str(small_cache), *out, "--units", "100000"], "1..8192"),
        (["train", str(small_cache), *out, "--lr", "nan"], "finite"),
        (["tune", str(small_cache), *out, "--trials", "0"], "--trials 0"),
        (["tune", str(small_cache), *out, "--storage", "nosuchdb://x"], "--storage nosuchdb"),
    ]:
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (command, err)


def test_resume_refuses_links_planted_in_the_run_folder(small_cache, tmp_path):
    run = tmp_path / "run"
    train(small_cache, run, TrainConfig(**TINY))
    interrupted(run)
    victim = tmp_path / "victim.csv"
    victim.write_text("precious")
    (run / "history.csv").unlink()
    (run / "history.csv").symlink_to(victim)
    with pytest.raises(RunError, match="outside"):
        resume(run)
    assert victim.read_text() == "precious"


@pytest.mark.slow
def test_a_full_disk_while_training_is_a_message(small_cache, tmp_path):
    import resource

    def limit_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.RLIM_INFINITY))

    command = [sys.executable, "-m", "gesture_cache.cli", "train", str(small_cache)]
    command += ["--out", str(tmp_path / "run"), "--epochs", "2"]
    done = subprocess.run(command, capture_output=True, text=True, preexec_fn=limit_files)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "cannot write in" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_runs_lists_every_run_and_survives_half_written_ones(small_cache, tmp_path, capsys):
    train(small_cache, tmp_path / "runs" / "a", TrainConfig(**TINY))
    train(small_cache, tmp_path / "runs" / "b", TrainConfig(**{**TINY, "lr": 0.01}))
    (tmp_path / "runs" / "broken").mkdir()
    (tmp_path / "runs" / "broken" / "config.json").write_text('{"hparams": ')
    capsys.readouterr()  # training's own output
    assert main(["runs", str(tmp_path / "runs"), "--sort", "lr", "--format", "csv"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert table["run"].tolist() == ["a", "b", "broken"]
    assert table["status"].tolist() == ["finished", "finished", "incomplete"]
    assert table.loc[0, "epochs"] == 2 and 0 <= table.loc[0, "test_accuracy"] <= 1
    assert main(["runs", str(tmp_path / "runs"), "--format", "markdown"]) == 0
    assert capsys.readouterr().out.startswith("| run | status |")
    assert main(["runs", str(tmp_path / "runs"), "--sort", "nope"]) == 2
    assert "--sort 'nope'" in capsys.readouterr().err


def test_runs_shows_training_seconds_of_a_copied_run(detector, tmp_path, capsys):
    copy = tmp_path / "runs" / "copy"
    copy.mkdir(parents=True)
    for path in detector.run.iterdir():  # a plain copy: new file times
        if path.is_file():
            shutil.copyfile(path, copy / path.name)
    assert main(["runs", str(tmp_path / "runs"), "--format", "csv"]) == 0
    table = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    seconds = json.loads((detector.run / "config.json").read_text())["train_seconds"]
    assert seconds > 0 and table["seconds"].iloc[0] == pytest.approx(seconds)
