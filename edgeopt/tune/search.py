"""The recipe search: the fastest (or smallest) artifact that meets an accuracy budget.

Inputs: starting recipes (``edgeopt.recipes.space.starting_points``: the target's recipe space,
ordered by what is known about the model), the model's *layer groups* (quantizers that go back
to float together: a weight MatMul with its bias, a conv with its activation), an
``Evaluator`` (one candidate recipe -> ``Evaluation``: the accuracy metric over the validation
set, latency, size, accelerator partitions, per-layer signal) and a ``Batch`` runner that
evaluates several recipes at once (serially, or through ``edgeopt.executors``).

Algorithm (NNCF's ``quantize_with_accuracy_control``, with limits and partitions added):

1. Evaluate every starting point (``parallel`` per batch). The best one meeting the budget is
   the incumbent.
2. For each start that misses the budget but would beat the incumbent on the objective if it
   met it (fastest first), and whose recipe has a keep-float set: greedy revert. Rank its
   layer groups by the per-layer signal of the current candidate; revert the top group
   (``parallel`` > 1: the top ``parallel`` groups, one each, evaluated together, best kept);
   keep the revert if the metric improved, otherwise
   *step back* (the group stays quantized and is not tried again) and re-rank the remaining
   groups on the current candidate. Stop when the budget holds, no group is left, or the limits
   (evaluations, seconds) run out.
3. Return the best candidate meeting the budget (``met``: the fastest, where candidates within
   ``tie`` (3 %) of the fastest count as equally fast and the most accurate of them wins);
   otherwise the most accurate one with
   status ``not-met`` (nothing left to try) or ``limit`` (limits ran out) and the reason.

Partition-aware targets (``KeepFloatPolicy.PARTITION_SPLIT``: Edge TPU, GPU): candidates are
compared on accelerator partitions first (fewer is better), then on the objective; reverting a
group costs a partition split unless it sits at the graph's end, so ranking multiplies each
group's signal by its position (``0.25 + 0.75 * position``, position 1 = last op).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from ..recipes import Recipe
from ..recipes.groups import LayerGroup


class Metric(StrEnum):
    """What the accuracy budget bounds (``--min-cosine`` / ``--min-sqnr`` / ``--max-drop``)."""

    MIN_COSINE = "min-cosine"  # worst-sample cosine >= threshold
    MIN_SQNR = "min-sqnr"  # worst-sample SQNR (dB) >= threshold
    MAX_DROP = "max-drop"  # task-metric drop vs float (points) <= threshold


class Objective(StrEnum):
    LATENCY = "latency"
    SIZE = "size"


class Status(StrEnum):
    MET = "met"  # the best candidate meets the accuracy budget
    NOT_MET = "not-met"  # every candidate was tried; none meets it
    LIMIT = "limit"  # evaluations / seconds ran out before one met it
    INTERRUPTED = "interrupted"  # Ctrl-C: the best found so far


@dataclass(frozen=True)
class Budget:
    """The accuracy budget: ``metric`` against ``threshold``."""

    metric: Metric
    threshold: float

    def met(self, accuracy: float | None) -> bool:
        if accuracy is None or math.isnan(accuracy):
            return False
        if self.metric is Metric.MAX_DROP:
            return accuracy <= self.threshold
        return accuracy >= self.threshold

    def better(self, a: float | None, b: float | None) -> bool:
        """Whether accuracy ``a`` is strictly better than ``b`` (NaN / None is worst)."""
        if a is None or math.isnan(a):
            return False
        if b is None or math.isnan(b):
            return True
        return a < b if self.metric is Metric.MAX_DROP else a > b

    def describe(self) -> str:
        op = "<=" if self.metric is Metric.MAX_DROP else ">="
        return f"{self.metric.value} {op} {self.threshold:g}"


@dataclass(frozen=True)
class Evaluation:
    """What the evaluator measured for one recipe (any field may be None when not measured)."""

    recipe: Recipe
    accuracy: float | None  # the budget's metric over the validation set
    latency_ms: float | None = None
    size_bytes: int | None = None
    partitions: int | None = None  # accelerator partitions (1 = one segment; None: no accel.)
    layer_scores: Mapping[str, float] = field(default_factory=dict)  # group -> sensitivity
    error: str | None = None  # the build or evaluation failed (one line)
    extra: Mapping[str, Any] = field(default_factory=dict)


Evaluator = Callable[[Recipe], Evaluation]


class Batch(Protocol):
    """Evaluates recipes, several at once where it can; results in the order given."""

    def __call__(self, recipes: Sequence[Recipe]) -> list[Evaluation]: ...


def serial(evaluator: Evaluator) -> Batch:
    """A ``Batch`` that calls ``evaluator`` once per recipe, in order; a raised exception
    becomes an ``Evaluation`` with ``error`` set (one failed candidate never stops a search)."""

    def run(recipes: Sequence[Recipe]) -> list[Evaluation]:
        out = []
        for r in recipes:
            try:
                out.append(evaluator(r))
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - reported as the candidate's error
                out.append(failed(r, exc))
        return out

    return run


def through_executor(executor: Any, evaluate: Callable[..., Evaluation],
                     *args: Any) -> Batch:
    """A ``Batch`` over an ``edgeopt.executors`` executor: one ``Task(evaluate, (recipe,
    *args))`` per recipe (``evaluate`` must be a module-level function; recipes and
    evaluations pickle). Failed tasks become ``Evaluation``s with ``error`` set."""
    from ..executors import Task  # type: ignore[import-not-found]  # shared with sweep

    def run(recipes: Sequence[Recipe]) -> list[Evaluation]:
        tasks = [Task(evaluate, (r, *args), key=r.key()) for r in recipes]
        out = []
        for r, outcome in zip(recipes, executor.run(tasks), strict=True):
            if outcome.ok:
                out.append(outcome.value)
            else:
                err = outcome.error
                out.append(Evaluation(r, None, error=f"{err.type}: {err.message}"[:300]
                                      if err else "failed"))
        return out

    return run


def failed(recipe: Recipe, exc: BaseException) -> Evaluation:
    text = str(exc).strip().splitlines()
    return Evaluation(recipe, None, error=f"{type(exc).__name__}: {text[0] if text else ''}"[:300])


@dataclass(frozen=True)
class Limits:
    """When to stop searching whatever was found (None = no limit)."""

    evaluations: int | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class Trial:
    """One evaluated candidate and why it was tried."""

    evaluation: Evaluation
    step: str  # "start" | "revert" | "lookahead"
    reverted: tuple[str, ...] = ()  # layer groups kept float in this candidate
    parent: int | None = None  # index of the candidate it was derived from
    kept: bool = False  # a revert that improved the metric (the walk continued from it)


@dataclass
class SearchResult:
    status: Status
    best: Trial | None
    trials: list[Trial]
    seconds: float
    reason: str

    @property
    def evaluations(self) -> int:
        return len(self.trials)

    def to_dict(self) -> dict[str, Any]:
        def row(i: int, t: Trial) -> dict[str, Any]:
            e = t.evaluation
            return {"index": i, "step": t.step, "parent": t.parent, "kept": t.kept,
                    "recipe": e.recipe.to_dict(), "label": e.recipe.label(),
                    "key": e.recipe.key(), "reverted": list(t.reverted),
                    "accuracy": e.accuracy, "latency_ms": e.latency_ms,
                    "size_bytes": e.size_bytes, "partitions": e.partitions, "error": e.error,
                    "chosen": t is self.best}

        return {"status": self.status.value, "reason": self.reason,
                "evaluations": self.evaluations, "seconds": round(self.seconds, 3),
                "best": None if self.best is None else self.trials.index(self.best),
                "trials": [row(i, t) for i, t in enumerate(self.trials)]}


class _Stop(Exception):
    """Limits reached (internal)."""


@dataclass
class Search:
    """One search; see the module docstring. ``run()`` returns the ``SearchResult``."""

    starts: Sequence[Recipe]
    groups: Sequence[LayerGroup]
    batch: Batch
    budget: Budget
    objective: Objective = Objective.LATENCY
    limits: Limits = field(default_factory=Limits)
    partition_aware: bool = False
    parallel: int = 1
    # Objective values within this fraction of the best are a tie (latency measured on a busy
    # host moves by a few %): among tied candidates meeting the budget the most accurate wins.
    tie: float = 0.03
    clock: Callable[[], float] = time.monotonic
    progress: Callable[[str], None] | None = None
    # Called with (index, trial) after each evaluated candidate (progress lines, ETA).
    on_trial: Callable[[int, Trial], None] | None = None
    trials: list[Trial] = field(default_factory=list)

    # ------------------------------------------------------------------ public

    def run(self) -> SearchResult:
        self._t0 = self.clock()
        reason = ""
        status = None
        try:
            self._starts()
            for i in self._walk_order():
                if self._improvable(i):
                    self._greedy(i)
            best = self._best_met()
            status = Status.MET if best is not None else Status.NOT_MET
            reason = (f"{self.budget.describe()} met" if best is not None else
                      f"no candidate meets {self.budget.describe()} after "
                      f"{len(self.trials)} evaluation(s): nothing left to try")
        except _Stop as stop:
            status, reason = Status.LIMIT, str(stop)
        except KeyboardInterrupt:
            status, reason = Status.INTERRUPTED, "interrupted: best candidate found so far"
        best = self._best_met()
        if best is not None and status is not Status.INTERRUPTED:
            if status is Status.LIMIT:
                reason += f"; the best meeting {self.budget.describe()} is returned"
            status = Status.MET
        elif best is None:
            best = self._most_accurate()
            if status is Status.LIMIT and best is not None:
                reason += f"; {self.budget.describe()} not met, most accurate returned"
        return SearchResult(status, best, self.trials, self.clock() - self._t0, reason)

    # ------------------------------------------------------------------ steps

    def _starts(self) -> None:
        """Every starting point, ``parallel`` at a time: the limits and Ctrl-C apply between
        batches (a transformer candidate takes minutes; six of them in one batch would run
        past a time limit and show no progress)."""
        recipes = list(dict.fromkeys(self.starts))  # Recipe is hashable: no repeats
        step = max(1, self.parallel)
        for k in range(0, len(recipes), step):
            self._evaluate(recipes[k:k + step], step="start")

    def _walk_order(self) -> list[int]:
        """Start candidates that miss the budget, by objective (best first)."""
        starts = [i for i, t in enumerate(self.trials)
                  if t.step == "start" and t.evaluation.error is None
                  and not self.budget.met(t.evaluation.accuracy)
                  and walkable(t.evaluation.recipe)]
        return sorted(starts, key=lambda i: self._objective_key(self.trials[i].evaluation))

    def _improvable(self, i: int) -> bool:
        """Whether walking from start ``i`` could beat the incumbent (reverts only slow a
        candidate down or grow it, so a start already worse than the incumbent cannot win)."""
        best = self._best_met()
        if best is None:
            return True
        return self._objective_key(self.trials[i].evaluation) < \
            self._objective_key(best.evaluation)

    def _greedy(self, start: int) -> None:
        current = start
        reverted: tuple[str, ...] = ()
        done: set[str] = set()
        ranked = self._rank(self.trials[current].evaluation, done)
        while ranked:
            take, ranked = ranked[: max(1, self.parallel)], ranked[max(1, self.parallel):]
            base = self.trials[current].evaluation.recipe
            recipes = [base.with_keep_float(g.patterns) for g in take]
            first = len(self.trials)
            self._evaluate(recipes, step="revert" if len(take) == 1 else "lookahead",
                           reverted=[(*reverted, g.name) for g in take], parent=current)
            done |= {g.name for g in take}
            new = range(first, len(self.trials))
            winner = None
            for k in new:
                acc = self.trials[k].evaluation.accuracy
                if self.trials[k].evaluation.error is None and self.budget.better(
                        acc, self.trials[current].evaluation.accuracy if winner is None
                        else self.trials[winner].evaluation.accuracy):
                    winner = k
            if winner is None:  # step back: keep the current candidate, re-rank on it
                self._say(f"revert of {', '.join(g.name for g in take)} did not help: "
                          "step back, re-rank")
                ranked = self._rank(self.trials[current].evaluation, done)
                continue
            self.trials[winner] = _kept(self.trials[winner])
            current = winner
            reverted = self.trials[winner].reverted
            if self.budget.met(self.trials[winner].evaluation.accuracy):
                return
            if not self._improvable_trial(winner):
                return
            ranked = self._rank(self.trials[current].evaluation, done)

    def _improvable_trial(self, i: int) -> bool:
        best = self._best_met()
        return best is None or self._objective_key(self.trials[i].evaluation) < \
            self._objective_key(best.evaluation)

    # ------------------------------------------------------------------ helpers

    def _rank(self, ev: Evaluation, done: set[str]) -> list[LayerGroup]:
        """Groups not yet tried, most sensitive first (per-layer signal of ``ev``; groups with
        no signal last, later groups first among them)."""
        left = [g for g in self.groups if g.name not in done]

        def key(g: LayerGroup) -> tuple[float, float]:
            score = ev.layer_scores.get(g.name)
            if score is None or math.isnan(score):
                return (1.0, -g.position)
            weight = 0.25 + 0.75 * g.position if self.partition_aware else 1.0
            return (0.0, -score * weight)

        return sorted(left, key=key)

    def _evaluate(self, recipes: list[Recipe], step: str,
                  reverted: list[tuple[str, ...]] | None = None,
                  parent: int | None = None) -> None:
        self._check_limits()
        if self.limits.evaluations is not None:
            room = self.limits.evaluations - len(self.trials)
            recipes = recipes[:room]
        if not recipes:
            raise _Stop(f"evaluation limit ({self.limits.evaluations}) reached")
        results = self.batch(recipes)
        for k, ev in enumerate(results):
            self.trials.append(Trial(ev, step, (reverted or [()] * len(results))[k], parent))
            if self.on_trial is not None:
                self.on_trial(len(self.trials) - 1, self.trials[-1])
            else:
                self._say(self._line(len(self.trials) - 1))

    def _check_limits(self) -> None:
        if self.limits.evaluations is not None and len(self.trials) >= self.limits.evaluations:
            raise _Stop(f"evaluation limit ({self.limits.evaluations}) reached")
        if self.limits.seconds is not None and self.clock() - self._t0 >= self.limits.seconds:
            raise _Stop(f"time limit ({self.limits.seconds:g} s) reached")

    def _objective_key(self, ev: Evaluation) -> tuple[float, ...]:
        value = ev.size_bytes if self.objective is Objective.SIZE else ev.latency_ms
        cost = float("inf") if value is None else float(value)
        if self.partition_aware:
            parts = float("inf") if ev.partitions is None else float(ev.partitions)
            return (parts, cost)
        return (cost,)

    def _best_met(self) -> Trial | None:
        ok = [t for t in self.trials
              if t.evaluation.error is None and self.budget.met(t.evaluation.accuracy)]
        if not ok:
            return None
        fastest = min(self._objective_key(t.evaluation) for t in ok)
        tied = [t for t in ok if self._ties(self._objective_key(t.evaluation), fastest)]
        best = tied[0]
        for t in tied[1:]:
            if self.budget.better(t.evaluation.accuracy, best.evaluation.accuracy):
                best = t
        return best

    def _ties(self, key: tuple[float, ...], best: tuple[float, ...]) -> bool:
        """``key`` equals ``best`` on every element but the last, and the last is within
        ``tie`` of it (partitions compare exactly; latency / size within the tolerance)."""
        if key[:-1] != best[:-1]:
            return False
        a, b = key[-1], best[-1]
        return a == b or (math.isfinite(a) and a <= b * (1 + self.tie))

    def _most_accurate(self) -> Trial | None:
        best = None
        for t in self.trials:
            if t.evaluation.error is None and (best is None or self.budget.better(
                    t.evaluation.accuracy, best.evaluation.accuracy)):
                best = t
        return best

    def _line(self, i: int) -> str:
        e = self.trials[i].evaluation
        acc = "error" if e.error else f"{self.budget.metric.value} {e.accuracy:.4g}" \
            if e.accuracy is not None else "no metric"
        lat = f", {e.latency_ms:.3g} ms" if e.latency_ms is not None else ""
        return f"[{i + 1}] {e.recipe.label()}: {acc}{lat}"

    def _say(self, text: str) -> None:
        if self.progress is not None:
            self.progress(text)


def walkable(recipe: Recipe) -> bool:
    """Whether keeping layers float changes ``recipe`` (TFLite dynamic-range and float16
    recipes have no keep-float set: reverting groups there would rebuild the same model)."""
    probe = recipe.with_keep_float(("^edgeopt-walk-probe$",))
    return probe.normalized() != recipe.normalized()


def _kept(t: Trial) -> Trial:
    return Trial(t.evaluation, t.step, t.reverted, t.parent, kept=True)


def search(starts: Sequence[Recipe], groups: Sequence[LayerGroup], batch: Batch,
           budget: Budget, **options: Any) -> SearchResult:
    """Run one ``Search`` (see its fields for ``options``)."""
    return Search(starts, groups, batch, budget, **options).run()
