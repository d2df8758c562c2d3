"""A Ctrl-C swallowed or transformed by library code still stops the command.

Each scenario runs in a fresh interpreter: after an in-process export (test_bundle), a
signal delivered to pytest's main thread crashed it with SIGSEGV inside kill() (gdb), a
fault of the converters' native code that a command never meets (one command, one process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from gesture_cache.common import interrupts
from gesture_cache.common.interrupts import caused_by_interrupt, handled, watching
from tests.helpers import ROOT


def in_a_fresh_interpreter(scenario) -> str:
    """Run `scenario` in its own Python; its stderr, after checking it passed."""
    done = subprocess.run(
        [sys.executable, "-c", f"from {__name__} import {scenario.__name__} as s; s()"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        # a shell's background job inherits Ctrl-C ignored, and Python then never installs
        # its handler: the scenarios start from what an interactive terminal gives
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


class SlowToDelete:
    """Stands for the `__del__` of a TensorFlow function or JAX's gc callback, where a
    KeyboardInterrupt is printed as "Exception ignored" and lost."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler runs here, inside __del__


def wait_for_interrupt(seconds: float, press: bool = False) -> float:
    """Seconds until a KeyboardInterrupt came (inf: none), after a Ctrl-C if `press`."""
    started = time.perf_counter()
    try:
        if press:
            os.kill(os.getpid(), signal.SIGINT)
        while time.perf_counter() - started < seconds:
            time.sleep(0.01)
    except KeyboardInterrupt:
        return time.perf_counter() - started
    return float("inf")


def swallowed_then_raised_again() -> None:
    with watching():
        SlowToDelete()  # deleted at once: its KeyboardInterrupt is swallowed
        waited = wait_for_interrupt(5 * interrupts.REPEAT_SECONDS)
        handled()
    assert waited <= 2 * interrupts.REPEAT_SECONDS, waited


def swallowed_for_good() -> None:
    SlowToDelete()
    assert wait_for_interrupt(3 * interrupts.REPEAT_SECONDS) == float("inf")


def handled_once() -> None:
    with watching():
        assert wait_for_interrupt(1.0, press=True) < 1.0
        handled()
        assert wait_for_interrupt(3 * interrupts.REPEAT_SECONDS) == float("inf")


def turned_into_another_error() -> None:
    def library_call():  # what tf.data's tracing did: the interrupt came out as another error
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1.0)
        except KeyboardInterrupt:
            raise AttributeError("'list' object has no attribute '_type_spec'") from None

    with watching():
        assert not caused_by_interrupt(ValueError("before any Ctrl-C"))
        try:
            library_call()
        except AttributeError as error:
            assert caused_by_interrupt(error)
        else:
            raise AssertionError("the library call did not fail")
        handled()
        assert caused_by_interrupt(ValueError("later in the same command"))
    assert not caused_by_interrupt(ValueError("the next command"))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_ctrl_c_swallowed_by_a_del_is_raised_again_without_exception_ignored():
    assert "Exception ignored" not in in_a_fresh_interpreter(swallowed_then_raised_again)


@pytest.mark.slow
def test_without_watching_python_loses_it():
    """What the module is for: the same Ctrl-C with Python's own handler is gone."""
    assert "Exception ignored" in in_a_fresh_interpreter(swallowed_for_good)


@pytest.mark.slow
def test_a_handled_ctrl_c_is_not_raised_again():
    in_a_fresh_interpreter(handled_once)


def test_an_error_a_library_made_of_the_ctrl_c_is_taken_for_it():
    in_a_fresh_interpreter(turned_into_another_error)
