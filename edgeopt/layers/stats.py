"""Per-tensor error statistics, streamed, and the ranking that puts the cause first.

Every per-layer method (ONNX activation matching, TFLite tensor matching) feeds one
:class:`TensorError` per matched tensor with the float and the quantized value of that tensor,
one sample at a time; nothing of a sample is kept once it is added, so memory does not grow with
the number of samples.

Ranking (:func:`rank_rows`), worst first:

1. tensors where NaN/inf **first** appears (the float value is finite, the quantized one is not,
   and none of the tensors feeding it is already non-finite) — the cause, in graph order;
2. tensors measured by how much keeping that layer float improves the model output
   (``gain_db``, largest first) — the signal a user acts on;
3. the others by their own (local) error, lowest SQNR first;
4. tensors that only inherit NaN/inf from upstream, then those without a defined error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def sqnr_from_power(signal: float, noise: float) -> float:
    """``10 log10(signal / noise)``; ``inf`` for no noise, ``nan`` for no signal."""
    if signal == 0.0:
        return float("nan") if noise else float("inf")
    if noise == 0.0:
        return float("inf")
    return 10.0 * math.log10(signal / noise)


def noise_ratio(sqnr: float) -> float:
    """noise / signal power from an SQNR in dB (0 for a perfect match)."""
    return 0.0 if math.isinf(sqnr) and sqnr > 0 else 10.0 ** (-sqnr / 10.0)


@dataclass
class TensorError:
    """Running error of one tensor over the samples seen so far.

    Elements where the float value itself is non-finite (a −inf mask is legitimate in float)
    are compared for equality only and left out of the powers; a quantized value that is
    NaN/inf where the float one is finite (or differs from a non-finite float value) makes
    that sample ``nonfinite``.
    """

    signal: float = 0.0
    noise: float = 0.0
    max_abs: float = 0.0
    elements: int = 0
    samples: int = 0
    nonfinite_samples: int = 0
    first_nonfinite: int | None = None
    float_nonfinite: int = 0  # elements non-finite in the float model itself
    qdq_signal: float = 0.0  # across the tensor's own Q/DQ pair (pre-Q vs post-DQ)
    qdq_noise: float = 0.0
    has_qdq: bool = False

    def add(self, index: int, ref: np.ndarray, cand: np.ndarray,
            pre: np.ndarray | None = None) -> None:
        f = np.asarray(ref, dtype=np.float64).ravel()
        c = np.asarray(cand, dtype=np.float64).ravel()
        if f.shape != c.shape:
            return  # a shape the two graphs disagree on (a fused reshape): not comparable
        self.samples += 1
        ok = np.isfinite(f)
        if not ok.all():
            self.float_nonfinite += int(f.size - np.count_nonzero(ok))
            same = np.isclose(f[~ok], c[~ok], equal_nan=True) | (f[~ok] == c[~ok])
            broken = not bool(np.all(same))
            f, c = f[ok], c[ok]
        else:
            broken = False
        cf = np.isfinite(c)
        if broken or not cf.all():
            self.nonfinite_samples += 1
            if self.first_nonfinite is None:
                self.first_nonfinite = index
            f, c = f[cf], c[cf]
        if f.size:
            d = c - f
            self.signal += float(np.dot(f, f))
            self.noise += float(np.dot(d, d))
            self.max_abs = max(self.max_abs, float(np.max(np.abs(d))))
            self.elements += int(f.size)
        if pre is not None:
            p = np.asarray(pre, dtype=np.float64).ravel()
            q = np.asarray(cand, dtype=np.float64).ravel()
            if p.shape == q.shape:
                keep = np.isfinite(p) & np.isfinite(q)
                self.has_qdq = True
                self.qdq_signal += float(np.dot(p[keep], p[keep]))
                self.qdq_noise += float(np.sum(np.square(q[keep] - p[keep])))

    @property
    def sqnr_db(self) -> float:
        """Float vs quantized model at this tensor (the error accumulated up to here)."""
        if self.nonfinite_samples:
            return float("nan")
        return sqnr_from_power(self.signal, self.noise)

    @property
    def mse(self) -> float:
        return self.noise / self.elements if self.elements else float("nan")


def local_sqnr(name: str, cumulative: Mapping[str, float], upstream: Sequence[str]) -> float:
    """SQNR of the noise ``name`` adds on top of the noisiest of its ``upstream`` tensors.

    Noise-to-signal ratios of independent errors add, so ``r_own = r_out - max(r_in)`` with
    ``r = 10^(-SQNR/10)``; an op that only passes noise on gets ``inf``.
    """
    out = cumulative.get(name, float("nan"))
    if math.isnan(out):
        return out
    r_in = max((noise_ratio(cumulative[t]) for t in upstream
                if t in cumulative and not math.isnan(cumulative[t])), default=0.0)
    own = noise_ratio(out) - r_in
    return float("inf") if own <= 0 else -10.0 * math.log10(own)


def rank_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Order rows cause-first (see the module docstring) and number them ``rank`` from 1.

    Rows carry ``nonfinite`` (samples with NaN/inf where float is finite), ``origin`` (no
    non-finite tensor upstream), ``order`` (graph position), ``gain_db`` (None when not
    measured) and ``sqnr_db`` (the local error).
    """

    def key(e: dict[str, Any]) -> tuple[int, float, float]:
        order = float(e.get("order") or 0)
        if e.get("broken_scale"):
            return (0, order, 0.0)
        if e.get("nonfinite"):
            return (0, order, 0.0) if e.get("origin") else (4, order, 0.0)
        gain = e.get("gain_db")
        if gain is not None and not math.isnan(gain) and gain > 0:
            return (1, -gain, order)
        s = e.get("sqnr_db")
        if s is None or math.isnan(s):
            return (5, order, 0.0)
        if e.get("quantized") is False:  # runs in float: its "own" error is amplified noise
            return (3, s, order)
        return (3, math.inf, order) if math.isinf(s) else (2, s, order)

    ranked = sorted(rows, key=key)
    for i, e in enumerate(ranked, 1):
        e["rank"] = i
    return ranked


def rank_local(rows: list[dict[str, Any]]) -> None:
    """Set ``rank_local`` (1 = lowest own SQNR; NaN/inf origins first) on every row."""
    def key(e: dict[str, Any]) -> tuple[int, float]:
        if e.get("broken_scale"):
            return (0, float(e.get("order") or 0))
        if e.get("nonfinite"):
            return (0, float(e.get("order") or 0)) if e.get("origin") else (3, 0.0)
        s = e.get("sqnr_db")
        if s is None or math.isnan(s):
            return (3, 0.0)
        return (2, 0.0) if math.isinf(s) else (1, s)

    for i, e in enumerate(sorted(rows, key=key), 1):
        e["rank_local"] = i


def rank_gain(rows: list[dict[str, Any]]) -> None:
    """Set ``rank_gain`` (1 = keeping it float helps the output most) where it was measured."""
    measured = [e for e in rows if e.get("gain_db") is not None and not math.isnan(e["gain_db"])]
    for i, e in enumerate(sorted(measured, key=lambda e: -e["gain_db"]), 1):
        e["rank_gain"] = i

