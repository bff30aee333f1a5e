"""SIGINT / SIGTERM as one exception, ``Interrupted``, from the CLI's first line to its last.

Python's default SIGINT handler raises a bare ``KeyboardInterrupt``, which click turns into
"Aborted!" and exit code 1, and SIGTERM kills the process without a word. ``edgeopt``'s CLI
installs ``handle()`` before it parses its arguments, so either signal at any moment gives one
line and exit code 128 + signal (130 / 143). Standard library only: ``edgeopt --help`` imports
this module and must stay instant.

Frameworks sometimes swallow the exception or turn it into another one (TensorFlow raises a
``SystemError`` from inside graph tracing; an import interrupted half-way becomes an
``ImportError``), so the handler also records the signal: ``received()`` tells a caller that the
error in hand was caused by a signal.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_received: int | None = None


class Interrupted(KeyboardInterrupt):
    """Stopped by SIGINT / SIGTERM; ``signum`` says which (exit code ``128 + signum``)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def received() -> int | None:
    """The signal that ``handle`` or a ``Staging`` caught in this process, if any."""
    return _received


def note(signum: int | None) -> None:
    """Record that ``signum`` arrived (for ``received()``); None forgets it."""
    global _received
    _received = signum


def in_finalizer(frame: FrameType | None) -> bool:
    """True when ``frame`` runs inside a ``__del__`` (garbage collection of a framework object).

    An exception raised there never reaches the caller: Python prints "Exception ignored in ...
    Traceback" and carries on, so the signal would be lost and the user would see a traceback.
    """
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def _raise(signum: int, frame: FrameType | None) -> None:
    note(signum)
    if in_finalizer(frame):  # recorded: the next check (every progress step, commit) raises
        return
    raise Interrupted(signum)


def ignore_from_now() -> None:
    """The process's work is over: SIGINT / SIGTERM during interpreter shutdown (TensorFlow's
    teardown takes tens of ms, with Python's handlers already reset to the default action) no
    longer kill it with a signal status. Only for the real CLI process, never in-process
    callers (tests, embedding apps)."""
    for sig in SIGNALS:
        with contextlib.suppress(ValueError, OSError):  # not the main thread
            signal.signal(sig, signal.SIG_IGN)


@contextlib.contextmanager
def handle() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise ``Interrupted`` (main thread only; a signal
    the caller ignores, as under ``nohup`` or ``&``, stays ignored). Forgets a signal an
    earlier block recorded."""
    note(None)
    old: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            if signal.getsignal(sig) is not signal.SIG_IGN:
                old[sig] = signal.signal(sig, _raise)
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


def block() -> set[int] | None:
    """Hold SIGINT / SIGTERM in this thread (POSIX); returns the mask to give ``unblock``."""
    if not hasattr(signal, "pthread_sigmask"):
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)


def unblock(previous: set[int] | None) -> None:
    """Restore the mask ``block`` returned; a held signal is delivered now."""
    if previous is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
