"""Signals as Ctrl-C: the one place that turns SIGTERM (and friends) into `KeyboardInterrupt`,
and that holds them back while a write must not be cut in half.

A `KeyboardInterrupt` is what the engine, the tracked run and the study already handle (save a
checkpoint, mark the run KILLED, record the running trials), so a scheduler's SIGTERM takes the
same path as a user's Ctrl-C.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["interrupts_as_keyboard", "interrupts_deferred"]


@contextlib.contextmanager
def interrupts_as_keyboard(
    signals: tuple[int, ...] = (signal.SIGTERM,), *, on_signal: Callable[[], Any] | None = None
) -> Iterator[None]:
    """Within the block, each of `signals` calls `on_signal` (if given), then raises
    `KeyboardInterrupt`; the previous handlers are restored on exit.

    Signal handlers can only be set from the main thread; elsewhere this does nothing.

    >>> stop = threading.Event()
    >>> with interrupts_as_keyboard((signal.SIGINT, signal.SIGTERM), on_signal=stop.set):
    ...     pass
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if on_signal is not None:
            on_signal()
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {signum: signal.signal(signum, handler) for signum in signals}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextlib.contextmanager
def interrupts_deferred(
    signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM),
) -> Iterator[None]:
    """Hold `signals` until the block ends, then deliver them to the handlers that were in place.

    For a short write to a store: a `KeyboardInterrupt` raised inside a SQLite transaction (an
    epoch's metrics, a trial's report) leaves the connection holding the database lock, and the
    run's end (KILLED) then fails with "database is locked" and a traceback. A signal that comes
    during the write is acted on the moment it ends, exactly as it would have been.
    Elsewhere than in the main thread (where signals are delivered) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        caught.append(signum)

    previous = {signum: signal.signal(signum, hold) for signum in signals}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, signal.SIG_DFL if old is None else old)
        for signum in dict.fromkeys(caught):
            signal.raise_signal(signum)
