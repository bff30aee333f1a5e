"""What one tuning run is asked to do, as a value: budget, limits, objective, executor.

``TuneOptions`` is what ``edgeopt tune`` / ``edgeopt convert --auto`` and ``edgeopt.tune()``
build from their arguments and what ``edgeopt.convert(..., auto=...)`` takes. Standard library
only (the CLI builds it before anything heavy is imported).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Any

from edgeopt_runtime.errors import EdgeOptError

from .search import Budget, Limits, Metric, Objective

# Without --budget a search still ends: at most this many candidate evaluations per search
# (every layer group is tried at most once per walk, so a search ends anyway; this bounds big
# graphs). A transformer candidate costs 10-60 s here, a CNN's a few seconds.
DEFAULT_EVALUATIONS = 40
MAX_EVALUATIONS = 10_000
MAX_SECONDS = 7 * 24 * 3600.0
# Per-layer ranking runs on the samples with the worst error (NNCF ranks on ~300; per-layer
# activation matching keeps every intermediate tensor of every sample, so fewer here).
DEFAULT_RANKING_SAMPLES = 16
DEFAULT_TUNE_LATENCY_RUNS = 30  # per candidate (the chosen artifact gets convert's runs)
EXECUTORS = ("serial", "process", "ray")
_BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h)?\s*$", re.IGNORECASE)
_UNIT = {None: None, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


class TuneOptionError(EdgeOptError):
    """A tuning option is invalid (budget, metric, objective, executor)."""


@dataclass(frozen=True)
class TuneOptions:
    """One tuning run: the accuracy budget, when to stop, what to optimise, where to run.

    ``limits`` hold the whole run's evaluations / seconds; with several targets and formats
    each search gets an even share of what is left (``share``).
    """

    budget: Budget
    limits: Limits = Limits(evaluations=DEFAULT_EVALUATIONS)
    objective: Objective = Objective.LATENCY
    executor: str = "serial"
    jobs: int | None = None
    threads: int | None = None  # None: the target's [runtime] threads, capped at this host's CPUs
    latency_runs: int = DEFAULT_TUNE_LATENCY_RUNS
    ranking_samples: int = DEFAULT_RANKING_SAMPLES
    ray_address: str | None = None

    def share(self, searches_left: int, used_evaluations: int, used_seconds: float) -> Limits:
        """The limits of the next search when ``searches_left`` searches (it included) remain
        and the earlier ones used ``used_evaluations`` / ``used_seconds``."""
        n = max(1, searches_left)
        ev = self.limits.evaluations
        sec = self.limits.seconds
        return Limits(
            evaluations=None if ev is None else max(1, (ev - used_evaluations) // n),
            seconds=None if sec is None else max(1.0, (sec - used_seconds) / n),
        )

    def threads_for(self, target_threads: int | None) -> int:
        """Threads candidates are timed at: ``threads``, else the target's, capped at the CPUs
        this process may use (timing 4 threads on 2 cores measures the scheduler)."""
        if self.threads is not None:
            return self.threads
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
        return max(1, min(target_threads or 1, cpus))

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.budget.metric.value, "threshold": self.budget.threshold,
                "budget": self.budget.describe(),
                "max_evaluations": self.limits.evaluations, "max_seconds": self.limits.seconds,
                "objective": self.objective.value, "executor": self.executor,
                "jobs": self.jobs, "threads": self.threads, "latency_runs": self.latency_runs,
                "ranking_samples": self.ranking_samples}


def parse_limits(text: str | int | float | None) -> Limits:
    """``--budget``: ``N`` candidate evaluations, or a time (``600s``, ``15m``, ``1.5h``).

    None gives the default (``DEFAULT_EVALUATIONS`` evaluations).

    Raises:
        TuneOptionError: anything else.
    """
    if text is None:
        return Limits(evaluations=DEFAULT_EVALUATIONS)
    if isinstance(text, bool):
        raise TuneOptionError(f"--budget: expected N evaluations or a time like 600s, got {text!r}")
    if isinstance(text, int | float):
        text = str(text)
    m = _BUDGET.match(str(text))
    if not m:
        raise TuneOptionError(f"--budget: expected N candidate evaluations (e.g. 30) or a time "
                              f"(e.g. 600s, 15m, 1h), got {text!r}")
    value, unit = float(m.group(1)), _UNIT[(m.group(2) or "").lower() or None]
    if unit is None:
        if not value.is_integer() or not 1 <= value <= MAX_EVALUATIONS:
            raise TuneOptionError(f"--budget {text!r}: a count of evaluations must be a whole "
                                  f"number in 1..{MAX_EVALUATIONS}")
        return Limits(evaluations=int(value))
    seconds = value * unit
    if not 1.0 <= seconds <= MAX_SECONDS:
        raise TuneOptionError(f"--budget {text!r}: a time budget must be between 1 s and 7 days")
    return Limits(seconds=seconds)


def make_budget(*, max_drop: float | str | None = None, min_cosine: float | None = None,
                min_sqnr: float | None = None) -> Budget:
    """Exactly one of the three accuracy budgets, checked.

    Raises:
        TuneOptionError: none or several given, or a value that cannot be met by any model
            (cosine above 1, a negative drop).
    """
    given = {k: v for k, v in (("--max-drop", max_drop), ("--min-cosine", min_cosine),
                               ("--min-sqnr", min_sqnr)) if v is not None}
    if len(given) != 1:
        what = "none" if not given else " and ".join(given)
        raise TuneOptionError(f"give exactly one accuracy budget: --max-drop POINTS, "
                              f"--min-cosine C or --min-sqnr DB (got {what})")
    (name, raw), = given.items()
    try:
        value = float(str(raw).strip().removesuffix("%") if name == "--max-drop" else raw)
    except ValueError:
        value = math.nan
    if name == "--max-drop" and str(raw).strip().endswith("%"):
        raise TuneOptionError("--max-drop: give accuracy points (e.g. 0.5), not a percentage")
    if not math.isfinite(value):
        raise TuneOptionError(f"{name}: expected a number, got {raw!r}")
    if name == "--max-drop":
        if not 0.0 <= value <= 100.0:
            raise TuneOptionError(f"--max-drop {raw}: accuracy points must be in 0..100")
        return Budget(Metric.MAX_DROP, value)
    if name == "--min-cosine":
        if not -1.0 < value <= 1.0:
            raise TuneOptionError(f"--min-cosine {raw}: a cosine similarity is at most 1 (the "
                                  "float model itself scores 1.0); use e.g. 0.99")
        return Budget(Metric.MIN_COSINE, value)
    if not 0.0 < value < 200.0:
        raise TuneOptionError(f"--min-sqnr {raw}: expected dB in (0, 200), e.g. 30")
    return Budget(Metric.MIN_SQNR, value)


def make_options(*, max_drop: float | str | None = None, min_cosine: float | None = None,
                 min_sqnr: float | None = None, budget: str | int | float | None = None,
                 objective: str = "latency", executor: str = "serial", jobs: int | None = None,
                 threads: int | None = None, latency_runs: int | None = None,
                 ranking_samples: int | None = None,
                 ray_address: str | None = None) -> TuneOptions:
    """``TuneOptions`` from CLI-style values, every one checked.

    Raises:
        TuneOptionError: a value out of range (one line naming the option).
    """
    try:
        obj = Objective(objective)
    except ValueError:
        raise TuneOptionError(f"--objective {objective!r}: use latency or size") from None
    if executor not in EXECUTORS:
        raise TuneOptionError(f"--executor {executor!r}: use one of {', '.join(EXECUTORS)}")
    if jobs is not None and not 1 <= jobs <= 256:
        raise TuneOptionError(f"-j {jobs}: expected 1..256 parallel candidate evaluations")
    if executor == "serial" and jobs not in (None, 1):
        executor = "process"  # -j N asks for a pool
    if threads is not None and not 1 <= threads <= 256:
        raise TuneOptionError(f"--threads {threads}: expected 1..256")
    runs = DEFAULT_TUNE_LATENCY_RUNS if latency_runs is None else latency_runs
    if not 1 <= runs <= 100_000:
        raise TuneOptionError(f"latency runs {runs}: expected 1..100000")
    rank = DEFAULT_RANKING_SAMPLES if ranking_samples is None else ranking_samples
    if not 1 <= rank <= 1024:
        raise TuneOptionError(f"--ranking-samples {rank}: expected 1..1024")
    return TuneOptions(make_budget(max_drop=max_drop, min_cosine=min_cosine,
                                   min_sqnr=min_sqnr), parse_limits(budget), obj, executor,
                       jobs, threads, runs, rank, ray_address)
