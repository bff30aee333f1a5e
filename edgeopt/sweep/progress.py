"""Progress of a whole sweep on stderr: jobs done / running / failed, ETA.

A tqdm bar on a terminal; plain lines otherwise (one per finished task, at most one a second
otherwise), so logs of CI runs and ``nohup`` stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"


class SweepProgress:
    """Counts tasks of a sweep and shows them; ``bar=None`` picks by ``isatty``."""

    def __init__(self, total: int, cached: int, *, stream: TextIO | None = None,
                 bar: bool | None = None, enabled: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.total, self.cached = total, cached
        self.done = cached
        self.running = self.failed = self.retries = 0
        self.enabled = enabled
        self._t0 = time.monotonic()
        self._fresh_done = 0
        self._last_line = 0.0
        self._bar: Any = None
        if enabled and (bar if bar is not None else self.stream.isatty()):
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=cached, file=self.stream, unit="task",
                             dynamic_ncols=True, desc="sweep")

    def begin(self, total: int, cached: int) -> None:
        """The job count is known (after planning)."""
        self.total, self.cached, self.done = total, cached, cached
        if self._bar is not None:
            self._bar.total, self._bar.n = total, cached
            self._bar.refresh()

    def add(self, n: int) -> None:
        """More tasks became known (validation shards, device profiles)."""
        self.total += n
        if self._bar is not None:
            self._bar.total = self.total
        self._show()

    def started(self) -> None:
        self.running += 1
        self._show()

    def retrying(self, what: str) -> None:
        self.running -= 1
        self.retries += 1
        self.say(f"retrying {what}: its worker was lost")

    def finished(self, ok: bool, what: str = "") -> None:
        self.running = max(0, self.running - 1)
        self.done += 1
        self._fresh_done += 1
        if not ok:
            self.failed += 1
        if self._bar is not None:
            self._bar.update(1)
        self._show(force=True, what=what)

    def eta(self) -> float | None:
        if not self._fresh_done:
            return None
        rate = (time.monotonic() - self._t0) / self._fresh_done
        return rate * (self.total - self.done)

    def status(self) -> str:
        return (f"{self.done}/{self.total} done ({self.cached} cached), {self.running} running, "
                f"{self.failed} failed, ETA {_eta(self.eta())}")

    def say(self, message: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(f"edgeopt: {message}", file=self.stream)
        else:
            print(f"edgeopt: {message}", file=self.stream, flush=True)

    def _show(self, force: bool = False, what: str = "") -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix_str(f"{self.running} running, {self.failed} failed",
                                      refresh=True)
            return
        now = time.monotonic()
        if force or now - self._last_line >= 1.0:
            self._last_line = now
            suffix = f" — {what}" if what else ""
            print(f"edgeopt: sweep {self.status()}{suffix}", file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
