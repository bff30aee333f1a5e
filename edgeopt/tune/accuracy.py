"""The accuracy a budget bounds, measured per sample from one evaluation's outputs.

A budget holds for the *worst* sample (``--min-cosine 0.99``: every validation sample's output
has cosine >= 0.99 against float), or for the task metric's drop against labels
(``--max-drop``). Per-sample values come from the evaluator's per-sample outputs
(``edgeopt.evaluate.EvaluatedOutputs``); with several outputs a sample's value is its worst
output's. A sample with a non-finite candidate output scores NaN and counts as the worst.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..results import Evaluation
from .search import Budget, Metric

WORST_LISTED = 10  # sample indices named in a record


@dataclass(frozen=True)
class SampleStats:
    """Per-sample cosine and SQNR of one candidate (worst output per sample)."""

    cosine: tuple[float, ...]
    sqnr_db: tuple[float, ...]

    @classmethod
    def of(cls, reference: Any, candidate: Any) -> SampleStats:
        """From two ``OutputStack``s of the same samples."""
        cos, snr = [], []
        for i in range(len(reference)):
            pairs = list(zip(reference.sample(i), candidate.sample(i), strict=True))
            c = [_cosine(r, q) for r, q in pairs if _numeric(r)]
            s = [_sqnr(r, q) for r, q in pairs if _numeric(r)]
            cos.append(_worst(c))
            snr.append(_worst(s))
        return cls(tuple(cos), tuple(snr))

    def values(self, metric: Metric) -> tuple[float, ...]:
        return self.sqnr_db if metric is Metric.MIN_SQNR else self.cosine

    def worst_first(self) -> list[int]:
        """Sample indices, largest error first (NaN first, then lowest cosine, then lowest
        SQNR)."""
        def key(i: int) -> tuple[float, float]:
            c, s = self.cosine[i], self.sqnr_db[i]
            return (-math.inf if math.isnan(c) else c, -math.inf if math.isnan(s) else s)

        return sorted(range(len(self.cosine)), key=key)

    def summary(self) -> dict[str, Any]:
        """JSON-ready: min / p5 / median / mean per metric, NaN count, the worst samples."""
        with np.errstate(invalid="ignore"):  # exact candidates: SQNR +inf on every sample
            return self._summary()

    def _summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"samples": len(self.cosine)}
        for name, vals in (("cosine", self.cosine), ("sqnr_db", self.sqnr_db)):
            a = np.asarray(vals, dtype=np.float64)
            bad = ~np.isfinite(a) & ~np.isposinf(a)
            fin = a[~bad]
            worst = -1.0 if name == "cosine" else -math.inf
            filled = np.where(bad, worst, a)
            out[name] = {
                "min": float(filled.min()) if a.size else None,
                "p5": float(np.percentile(filled, 5, method="lower")) if a.size else None,
                "median": float(np.median(fin)) if fin.size else None,
                "mean": float(fin[np.isfinite(fin)].mean()) if np.isfinite(fin).any() else None,
                "nan": int(bad.sum()),
            }
        out["worst_samples"] = self.worst_first()[:WORST_LISTED]
        return out


def _numeric(a: np.ndarray) -> bool:
    return np.asarray(a).dtype.kind in "fiub"


def _cosine(r: np.ndarray, q: np.ndarray) -> float:
    r64, q64 = np.ravel(r).astype(np.float64), np.ravel(q).astype(np.float64)
    if not (np.isfinite(q64).all() and np.isfinite(r64).all()):
        return math.nan
    nr, nq = float(np.linalg.norm(r64)), float(np.linalg.norm(q64))
    if nr == 0.0:  # an all-zero reference row: only an all-zero candidate matches it
        return 1.0 if nq == 0.0 else 0.0
    if nq == 0.0:
        return 0.0
    return float(np.clip(np.dot(r64, q64) / (nr * nq), -1.0, 1.0))


def _sqnr(r: np.ndarray, q: np.ndarray) -> float:
    r64, q64 = np.ravel(r).astype(np.float64), np.ravel(q).astype(np.float64)
    if not (np.isfinite(q64).all() and np.isfinite(r64).all()):
        return math.nan
    noise = float(np.sum(np.square(r64 - q64)))
    signal = float(np.sum(np.square(r64)))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def _worst(values: Sequence[float]) -> float:
    if not values:
        return math.nan
    if any(math.isnan(v) for v in values):
        return math.nan
    return min(values)


def accuracy_drop_points(ev: Evaluation) -> float | None:
    """The task accuracy drop against labels, in points (None without labels / classifier)."""
    acc = ((ev.task.metrics if ev.task is not None else {}) or {}).get("accuracy")
    if not acc or acc.get("drop") is None:
        return None
    return 100.0 * float(acc["drop"])


def budget_value(budget: Budget, ev: Evaluation, stats: SampleStats | None) -> float | None:
    """The number the budget bounds: worst-sample cosine / SQNR, or the drop in points.

    NaN when any sample's output is non-finite (such a candidate never meets a budget).
    """
    if budget.metric is Metric.MAX_DROP:
        return accuracy_drop_points(ev)
    if stats is None or not stats.cosine:
        return None
    vals = stats.values(budget.metric)
    if any(math.isnan(v) for v in vals):
        return math.nan
    return float(min(vals))
