"""Calibration ranges that cannot be quantized, found at the source (both formats).

Real models hold tensors whose calibrated range is non-finite or absurd: the −inf additive
attention mask of torch's SDPA export, −FLT_MAX (−3.4e38) masks and paddings, Keras' −1e9
softmax mask, the log(0) = −inf of relative-position buckets. min/max calibration turns them into
an infinite or useless scale (the 6-layer MiniLM's cosine fell to 0.35; the 12-layer MPNet's int8
model crashed ORT with a Gather index of −9.2e18), and histogram calibration (entropy,
percentile) crashes on them. Such tensors are kept float; every backend reports them by name.

``ABSURD`` is the magnitude above which a range is refused: an int8 step of range/255 is then
≥ 4e5, so every ordinary activation value (|x| < 1e3) quantizes to the zero point. Masks of
−1e9 are caught; no ordinary activation reaches it (a model's real values that large need
float anyway).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

ABSURD = 1e8


@dataclass(frozen=True)
class BadRange:
    """One tensor whose calibrated range is kept float, and why (for notes and reports)."""

    tensor: str
    low: float
    high: float

    @property
    def reason(self) -> str:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            return "non-finite"
        return f"|x| > {ABSURD:g}"

    def to_dict(self) -> dict[str, object]:
        """JSON-ready (strict JSON has no inf: non-finite bounds become "-inf" / "inf" / "nan")."""
        def num(x: float) -> float | str:
            return x if math.isfinite(x) else str(x)

        return {"tensor": self.tensor, "min": num(self.low), "max": num(self.high),
                "reason": self.reason}

    def note(self) -> str:
        return (f"calibration range of {self.tensor!r} is [{self.low:.4g}, {self.high:.4g}] "
                f"({self.reason}: a masking constant or padding); kept float")


def bad_ranges(ranges: Mapping[str, tuple[float, float]] | Iterable[tuple[str, float, float]],
               ) -> list[BadRange]:
    """The tensors among ``ranges`` (name -> (min, max)) that must stay float, by name.

    NaN counts as non-finite. Returns them sorted by name (stable notes).
    """
    items = (ranges.items() if isinstance(ranges, Mapping)
             else ((n, (lo, hi)) for n, lo, hi in ranges))
    out = []
    for name, (low, high) in items:
        low, high = float(low), float(high)
        finite = math.isfinite(low) and math.isfinite(high)
        if not finite or max(abs(low), abs(high)) > ABSURD:
            out.append(BadRange(name, low, high))
    return sorted(out, key=lambda b: b.tensor)


def summary(bad: list[BadRange], limit: int = 3) -> str:
    """One line naming the first ``limit`` bad tensors (for a note or an error message)."""
    shown = "; ".join(b.note() for b in bad[:limit])
    more = f" (+{len(bad) - limit} more)" if len(bad) > limit else ""
    return f"{len(bad)} tensor(s) with unquantizable calibration ranges kept float: {shown}{more}"
