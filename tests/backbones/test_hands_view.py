"""`gesture-cache hands --out`: drawings never replace a source, never replace each other."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import pytest

from gesture_cache.cli.main import main
from gesture_cache.common.files import file_sha256
from tests.helpers import HANDS

needs_hands = pytest.mark.skipif(not HANDS.is_dir(), reason="../shared/fixtures/hands absent")


@needs_hands
def test_drawing_into_the_sources_own_folder_keeps_every_source(tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    gif = Path(shutil.copy(HANDS / "fingers-lq.gif", folder))
    photo = Path(shutil.copy(HANDS / "nocurl.jpg", folder))
    photo_png = folder / "nocurl.png"
    cv2.imwrite(str(photo_png), cv2.imread(str(photo)))
    before = {p.name: file_sha256(p) for p in folder.iterdir()}
    assert main(["hands", str(gif), str(photo), str(photo_png), "--out", str(folder)]) == 0
    assert "43 of 43 frames" in capsys.readouterr().out  # every frame read, none lost
    assert {p.name: file_sha256(p) for p in folder.iterdir() if p.name in before} == before
    drawn = cv2.VideoCapture(str(folder / "fingers-lq.gif.mp4"))
    assert int(drawn.get(cv2.CAP_PROP_FRAME_COUNT)) == 43
    assert {"nocurl.jpg.png", "nocurl.png.png"} <= {p.name for p in folder.iterdir()}


@needs_hands
def test_two_sources_of_one_name_are_refused_before_anything_runs(tmp_path, capsys):
    for side in ("a", "b"):
        (tmp_path / side).mkdir()
        shutil.copy(HANDS / "nocurl.jpg", tmp_path / side)
    out = tmp_path / "out"
    sources = [str(tmp_path / "a" / "nocurl.jpg"), str(tmp_path / "b" / "nocurl.jpg")]
    assert main(["hands", *sources, "--out", str(out)]) == 2
    assert "would both be drawn to nocurl.jpg.png" in capsys.readouterr().err
    assert not out.exists()
