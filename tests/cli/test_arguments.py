"""The flags every command shares: no number flag takes NaN or infinity."""

from __future__ import annotations

import argparse

import pytest

from gesture_cache.cli.arguments import finite_float
from gesture_cache.cli.parser import build_parser


def test_every_float_flag_refuses_nan_and_infinity():
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    floats = []
    for name, sub in commands.choices.items():
        for action in sub._actions:
            assert action.type is not float, f"{name} {action.option_strings}: plain float"
            if action.type is finite_float:
                floats.append((name, action.option_strings[0]))
    assert ("detect", "--speed") in floats and ("train", "--lr") in floats
    assert len(floats) >= 10
    for text in ("nan", "inf", "-inf", "NaN"):
        with pytest.raises(argparse.ArgumentTypeError):
            finite_float(text)
