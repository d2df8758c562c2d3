"""`evaluate-detection`: a bad cell named, events of an unknown recording refused."""

from __future__ import annotations

import pandas as pd
import pytest

from gesture_cache.cli.main import main
from tests.helpers import detect_args


@pytest.fixture
def detected(detector, tmp_path):
    out = tmp_path / "d"
    command = detect_args(detector, out, "--cache", str(detector.cache))
    assert main(command) == 0
    return out


@pytest.mark.parametrize(
    "name, column, value",
    [
        ("events.csv", "start_frame", "abc"),
        ("events.csv", "fired_frame", ""),
        ("recordings.csv", "n_frames", "many"),
        ("recordings.csv", "fps", "inf"),
    ],
)
def test_evaluate_detection_names_a_bad_cell(detector, detected, capsys, name, column, value):
    table = pd.read_csv(detected / name, dtype=str, keep_default_na=False)
    if not len(table):
        pytest.skip("no events to damage")
    table.loc[0, column] = value
    table.to_csv(detected / name, index=False)
    capsys.readouterr()
    assert main(["evaluate-detection", str(detected / "events.csv"), str(detector.truth)]) == 2
    err = capsys.readouterr().err
    assert f"{name} row 1: column {column}" in err and err.count("\n") == 1, err


def test_events_of_a_recording_not_in_recordings_csv_are_an_error(detector, detected, capsys):
    events = pd.read_csv(detected / "events.csv", dtype=str, keep_default_na=False)
    extra = {c: "1" for c in events.columns} | {"recording": "ghost.avi", "label": "NA"}
    pd.concat([events, pd.DataFrame([extra])]).to_csv(detected / "events.csv", index=False)
    capsys.readouterr()
    assert main(["evaluate-detection", str(detected / "events.csv"), str(detector.truth)]) == 2
    assert "'ghost.avi' is not in" in capsys.readouterr().err
