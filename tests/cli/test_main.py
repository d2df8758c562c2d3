"""The command's one-line errors and exits: a reader that goes away ends it quietly."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("command", [["info"], ["verify"], ["info", "--json"]])
def test_a_closed_pipe_ends_quietly(small_cache, command):
    read_end, write_end = os.pipe()
    os.close(read_end)  # `| head -1` that has already gone
    process = subprocess.run(
        [sys.executable, "-m", "gesture_cache.cli", command[0], str(small_cache), *command[1:]],
        stdout=write_end,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
    )
    os.close(write_end)
    assert process.returncode == 141 and process.stderr == "", process.stderr
