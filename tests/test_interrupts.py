"""`mnr.interrupts`: signals as Ctrl-C, and signals held back during a write."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator

import pytest

from mnr.interrupts import interrupts_as_keyboard, interrupts_deferred


@pytest.fixture(autouse=True)
def ctrl_c_raises() -> Iterator[None]:
    """Python's own Ctrl-C handler, whatever the test runner's process had (xdist workers may
    ignore SIGINT); put back afterwards."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_sigterm_is_a_keyboard_interrupt_inside_the_block_only() -> None:
    stopped = threading.Event()
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), interrupts_as_keyboard(on_signal=stopped.set):
        signal.raise_signal(signal.SIGTERM)
    assert stopped.is_set() and signal.getsignal(signal.SIGTERM) is before


def test_a_deferred_ctrl_c_arrives_when_the_write_ends_not_inside_it() -> None:
    finished = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():
            signal.raise_signal(signal.SIGINT)  # Ctrl-C in the middle of the write
            finished.append("the write")  # still runs to its end
        finished.append("after the block")  # never: the interrupt is delivered at the block's end
    assert finished == ["the write"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_deferred_signal_goes_to_the_handler_that_was_in_place() -> None:
    stopped = threading.Event()
    seen = []
    with pytest.raises(KeyboardInterrupt), interrupts_as_keyboard(on_signal=stopped.set):
        with interrupts_deferred():
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGTERM)  # twice: delivered once
            seen.append(stopped.is_set())
    assert seen == [False] and stopped.is_set()


def test_without_a_signal_nothing_happens() -> None:
    with interrupts_deferred():
        pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
