"""Module-level task functions for the executor tests (workers import them by name)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np


def square(x: int) -> int:
    return x * x


def fail_on(x: int, bad: int) -> int:
    if x == bad:
        raise ValueError(f"no {bad}s here")
    return x


def die_once(marker: str, value: int) -> int:
    """SIGKILL the worker on the first attempt (the marker file remembers it), then return."""
    path = Path(marker)
    if not path.exists():
        path.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return value


def always_die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def hold(folder: str, name: str, seconds: float) -> str:
    """Write start / end times and the pid into ``folder/name``; sleep in between."""
    path = Path(folder) / name
    path.write_text(f"{os.getpid()} {time.time()}\n")
    time.sleep(seconds)
    with path.open("a") as f:
        f.write(f"{time.time()}\n")
    return name


def allocate(mb: int) -> int:
    block = np.ones(mb * 2**20, dtype=np.uint8)
    return int(block[::4096].sum())


def worker_pid() -> int:
    return os.getpid()
