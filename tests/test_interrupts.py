"""A Ctrl-C swallowed or transformed by library code still stops the command."""

import os
import signal
import time

import pytest

from gesture_cache import interrupts
from gesture_cache.interrupts import caused_by_interrupt, handled, watching


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


def test_a_ctrl_c_swallowed_by_a_del_is_raised_again_without_exception_ignored(capfd):
    with watching():
        SlowToDelete()  # deleted at once: its KeyboardInterrupt is swallowed
        waited = wait_for_interrupt(5 * interrupts.REPEAT_SECONDS)
        handled()
    assert waited <= 2 * interrupts.REPEAT_SECONDS
    assert "Exception ignored" not in capfd.readouterr().err


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_without_watching_python_loses_it():
    """What the module is for: the same Ctrl-C with Python's own handler is gone."""
    SlowToDelete()
    assert wait_for_interrupt(3 * interrupts.REPEAT_SECONDS) == float("inf")


def test_a_handled_ctrl_c_is_not_raised_again():
    with watching():
        assert wait_for_interrupt(1.0, press=True) < 1.0
        handled()
        assert wait_for_interrupt(3 * interrupts.REPEAT_SECONDS) == float("inf")


def test_an_error_a_library_made_of_the_ctrl_c_is_taken_for_it():
    def library_call():  # what tf.data's tracing did: the interrupt came out as another error
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1.0)
        except KeyboardInterrupt:
            raise AttributeError("'list' object has no attribute '_type_spec'") from None

    with watching():
        assert not caused_by_interrupt(ValueError("before any Ctrl-C"))
        with pytest.raises(AttributeError) as raised:
            library_call()
        assert caused_by_interrupt(raised.value)
        handled()
        assert caused_by_interrupt(ValueError("later in the same command"))
    assert not caused_by_interrupt(ValueError("the next command"))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
