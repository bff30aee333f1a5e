"""Progress of a search on stderr: one line per evaluated candidate, with an ETA bound.

A tqdm bar on a terminal (the candidate lines are written above it), plain lines otherwise, so
CI logs stay readable. The ETA is an upper bound: the search may stop as soon as a candidate
meets the budget, but never runs past its evaluation or time limit.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from .search import Limits


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class SearchProgress:
    """Counts the evaluations of one search and says what each candidate gave."""

    def __init__(self, title: str, limits: Limits, *, say: Any = None,
                 stream: TextIO | None = None, bar: bool | None = None) -> None:
        self.title, self.limits = title, limits
        self.stream = stream or sys.stderr
        self._say = say
        self.done = 0
        self._t0 = time.monotonic()
        self._bar: Any = None
        if say is None and (bar if bar is not None else self.stream.isatty()):
            from tqdm import tqdm

            self._bar = tqdm(total=limits.evaluations, file=self.stream, unit="cand",
                             dynamic_ncols=True, desc=title)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._t0

    def eta(self) -> float | None:
        """Seconds until the search must stop at the latest (None before any evaluation)."""
        if not self.done:
            return None
        bounds = []
        if self.limits.evaluations is not None:
            bounds.append(self.elapsed / self.done * max(0, self.limits.evaluations - self.done))
        if self.limits.seconds is not None:
            bounds.append(max(0.0, self.limits.seconds - self.elapsed))
        return min(bounds) if bounds else None

    def evaluated(self, text: str) -> None:
        self.done += 1
        limit = f"/{self.limits.evaluations}" if self.limits.evaluations else ""
        line = (f"{self.title} [{self.done}{limit}, {duration(self.elapsed)}, ETA <= "
                f"{duration(self.eta())}] {text}")
        if self._bar is not None:
            self._bar.update(1)
        self.say(line)

    def say(self, text: str) -> None:
        if self._say is not None:
            self._say(text)
        elif self._bar is not None:
            self._bar.write(f"edgeopt: {text}", file=self.stream)
        else:
            print(f"edgeopt: {text}", file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
