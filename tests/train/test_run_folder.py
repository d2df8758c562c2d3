"""Run folders: every reader refuses links that leave the folder."""

from __future__ import annotations

import json
import shutil

from gesture_cache.cli.main import main
from tests.helpers import write_video


def test_every_run_folder_reader_refuses_links_out(detector, tmp_path, capsys):
    run = tmp_path / "runs" / "copied"
    shutil.copytree(detector.run, run)
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"accuracy": 0.123, "macro_f1": 0.5}))
    (run / "metrics.json").unlink()
    (run / "metrics.json").symlink_to(secret)
    assert main(["runs", str(tmp_path / "runs"), "--format", "csv"]) == 0
    assert "0.123" not in capsys.readouterr().out
    outside = tmp_path / "config.json"
    shutil.copy(run / "config.json", outside)
    (run / "config.json").unlink()
    (run / "config.json").symlink_to(outside)
    assert main(["runs", str(tmp_path / "runs"), "--format", "csv"]) == 0
    assert "link out" in capsys.readouterr().out
    video = str(write_video(tmp_path / "x.avi", 20))
    for command in (
        ["evaluate", str(run)],
        ["detect", str(run), video, "--out", str(tmp_path / "d"), "--random-weights", "0"],
        ["predict", str(run), video, "--random-weights", "0"],
        ["train", "--out", str(run), "--resume"],
    ):
        assert main(command) == 2, command
        assert "outside" in capsys.readouterr().err, command
