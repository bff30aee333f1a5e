"""Interleaved latency measurement: several models timed in the same rounds, so ratios between
them are computed from numbers taken under the same machine load.

On a shared, noisy machine, timing model A for a minute and then model B for a minute compares
A's minute with B's minute as much as A with B. Here every round runs a block of calls of each
model, in an order rotated every round (no model always goes first, right after the previous
one warmed the caches), and the ratio is taken *within* each round. The reported ratio is the
median over rounds of those within-round ratios of block medians; a background job that slows
down one round slows both sides of that round's ratio.

Block sizes adapt to the model: each block lasts about ``block_s`` seconds (a tiny model gets
hundreds of calls, MobileNetV2 tens), after ``warmup`` untimed calls per model.

With ``cpu=True`` (single-threaded engines only) each call's CPU time on the calling thread is
recorded too. Wall time is the latency users see; thread CPU time leaves out the slices other
processes took while the call was preempted, so on a shared machine it is the steadier figure
for comparing models (cache pollution by neighbours still shows in both). It is only meaningful
when the engine computes on the calling thread (LiteRT / ONNX Runtime with 1 thread).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Samples:
    """All timed calls of one model (seconds), and the median of each round's block."""

    name: str
    calls: list[float] = field(default_factory=list)
    round_medians: list[float] = field(default_factory=list)
    cpu_calls: list[float] = field(default_factory=list)
    cpu_round_medians: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """p50 / p90 / mean / min over every timed call, in milliseconds, plus counts (and the
        thread-CPU-time p50 when it was recorded)."""
        a = np.asarray(self.calls) * 1e3
        out: dict[str, Any] = {
            "p50_ms": _r(np.percentile(a, 50)),
            "p90_ms": _r(np.percentile(a, 90)),
            "mean_ms": _r(a.mean()),
            "min_ms": _r(a.min()),
            "calls": int(a.size),
            "rounds": len(self.round_medians),
            "round_p50_ms": [_r(m * 1e3) for m in self.round_medians],
        }
        if self.cpu_calls:
            c = np.asarray(self.cpu_calls) * 1e3
            out["cpu_p50_ms"] = _r(np.percentile(c, 50))
            out["cpu_p90_ms"] = _r(np.percentile(c, 90))
        return out


def _r(x: float) -> float:
    return round(float(x), 5)


@dataclass(frozen=True)
class Plan:
    """How long to measure: rounds x (one block of about ``block_s`` seconds per model)."""

    rounds: int = 7
    block_s: float = 0.3
    warmup: int = 3
    min_calls: int = 3  # per block, however slow the model
    max_calls: int = 2000  # per block, however fast the model


def calls_per_block(one_call_s: float, plan: Plan) -> int:
    """Calls that fill about ``plan.block_s``, clamped to ``[min_calls, max_calls]``."""
    if one_call_s <= 0:
        return plan.max_calls
    return int(min(plan.max_calls, max(plan.min_calls, plan.block_s / one_call_s)))


def interleaved(
    fns: Mapping[str, Callable[[], Any]],
    plan: Plan,
    clock: Callable[[], float] = time.perf_counter,
    cpu: bool = False,
    cpu_clock: Callable[[], float] = time.thread_time,
) -> dict[str, Samples]:
    """Time each function in rotated order, round after round.

    Args:
        fns: name -> zero-argument callable running one inference.
        plan: rounds, block length, warm-up.
        clock: wall-time clock in seconds (injectable for tests).
        cpu: also record each call's CPU time on this thread (see the module docstring).
        cpu_clock: CPU-time clock in seconds.

    Returns:
        name -> ``Samples``.
    """
    names = list(fns)
    block: dict[str, int] = {}
    for name in names:
        fn = fns[name]
        for _ in range(plan.warmup):
            fn()
        t0 = clock()
        fn()
        block[name] = calls_per_block(clock() - t0, plan)
    out = {name: Samples(name) for name in names}
    for r in range(plan.rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            times, cpu_times = _block(fns[name], block[name], clock, cpu_clock if cpu else None)
            out[name].calls.extend(times)
            out[name].round_medians.append(statistics.median(times))
            if cpu:
                out[name].cpu_calls.extend(cpu_times)
                out[name].cpu_round_medians.append(statistics.median(cpu_times))
    return out


def _block(fn: Callable[[], Any], n: int, clock: Callable[[], float],
           cpu_clock: Callable[[], float] | None) -> tuple[list[float], list[float]]:
    times: list[float] = []
    cpu_times: list[float] = []
    if cpu_clock is None:
        for _ in range(n):
            t0 = clock()
            fn()
            times.append(clock() - t0)
        return times, cpu_times
    for _ in range(n):
        # The CPU clock is a system call: read it outside the wall-clock window.
        c0 = cpu_clock()
        t0 = clock()
        fn()
        t1 = clock()
        cpu_times.append(cpu_clock() - c0)
        times.append(t1 - t0)
    return times, cpu_times


def ratio(reference: Samples, candidate: Samples, *, cpu: bool = False) -> dict[str, Any]:
    """Speed-up of ``candidate`` over ``reference`` (> 1 = candidate faster), same rounds only.

    Args:
        cpu: use the thread-CPU-time block medians instead of wall time.

    Returns:
        ``speedup``: median over rounds of reference/candidate block medians; ``per_round``;
        ``spread``: (min, max) of the per-round ratios, a direct view of the noise.

    Raises:
        ValueError: the two were not timed in the same rounds.
    """
    if cpu:
        a, b = reference.cpu_round_medians, candidate.cpu_round_medians
    else:
        a, b = reference.round_medians, candidate.round_medians
    if len(a) != len(b) or not a:
        raise ValueError(
            f"{reference.name} and {candidate.name} were not timed in the same rounds "
            f"({len(a)} vs {len(b)})"
        )
    per_round = [x / y for x, y in zip(a, b, strict=True)]
    return {
        "speedup": round(statistics.median(per_round), 4),
        "per_round": [round(v, 4) for v in per_round],
        "spread": [round(min(per_round), 4), round(max(per_round), 4)],
    }
