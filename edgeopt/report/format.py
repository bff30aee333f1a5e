"""How numbers read in reports: one formatting for the Markdown, the HTML page and the terminal."""

from __future__ import annotations

import math
from typing import Any


def fmt(v: Any, digits: int = 4) -> str:
    """Compact human formatting of a number (``∞`` for inf, ``—`` for missing)."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        if math.isinf(v):
            return "∞" if v > 0 else "-∞"
        return f"{v:.{digits}g}"
    return str(v)


def fmt_bytes(n: Any) -> str:
    """Bytes as B / KiB / MiB."""
    if not isinstance(n, (int, float)) or n < 0:
        return "—"
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def pct(v: Any) -> str:
    """A fraction as a percentage (``0.975`` -> ``97.50%``)."""
    return "—" if not isinstance(v, (int, float)) else f"{100 * v:.2f}%"


def pts(v: Any) -> str:
    """A fraction difference as percentage points (``0.003`` -> ``+0.30 pts``)."""
    return "—" if not isinstance(v, (int, float)) else f"{100 * v:+.2f} pts"


def speedup(value: float | None) -> str:
    """A speedup factor (``2.0`` -> ``2.00x``)."""
    return "—" if value is None else f"{value:.2f}x"
