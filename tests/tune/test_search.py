"""Search logic with a fake evaluator: budget stops, step back, limits, not-met, partitions.

The fake model has layer groups L0..L7. Each quantized group costs accuracy (its "damage");
keeping a group float removes its damage and adds latency. One group can be made fragile.
"""

from __future__ import annotations

import itertools
import re

import pytest

from edgeopt.recipes import Recipe
from edgeopt.targets import Format
from edgeopt.tune.search import (
    Budget,
    Evaluation,
    LayerGroup,
    Limits,
    Metric,
    Objective,
    Status,
    search,
    serial,
)

N = 8
GROUPS = [LayerGroup(f"L{i}", (f"^L{i}$",), position=i / (N - 1)) for i in range(N)]
STATIC = Recipe(Format.ONNX, "static")
DYNAMIC = Recipe(Format.ONNX, "dynamic", op_types=("MatMul",))


def reverted(recipe: Recipe) -> set[str]:
    return {g.name for g in GROUPS if any(p in recipe.keep_float for p in g.patterns)}


class Fake:
    """accuracy = base - sum(damage of quantized groups); latency grows per float group."""

    def __init__(self, damage: dict[str, float], base: float = 1.0,
                 signal: dict[str, float] | None = None, latency: dict[str, float] | None = None,
                 partitions_from_end: bool = False, fail: set[str] = frozenset()):
        self.damage, self.base, self.signal = damage, base, signal
        self.latency = latency or {"static": 1.0, "dynamic": 1.2}
        self.partitions_from_end = partitions_from_end
        self.fail = fail
        self.calls: list[Recipe] = []

    def __call__(self, recipe: Recipe) -> Evaluation:
        self.calls.append(recipe)
        if recipe.mode in self.fail:
            raise RuntimeError(f"{recipe.mode} does not build")
        floats = reverted(recipe)
        acc = self.base - sum(d for g, d in self.damage.items() if g not in floats)
        lat = self.latency[recipe.mode] + 0.1 * len(floats)
        parts = None
        if self.partitions_from_end:  # a float group splits the graph unless it ends it
            first = min((int(g[1:]) for g in floats), default=N)
            parts = 1 if first == N else (1 if all(f"L{i}" in floats for i in range(first, N))
                                          else 2)
        signal = self.signal if self.signal is not None else {
            g: d for g, d in self.damage.items() if g not in floats}
        return Evaluation(recipe, acc, latency_ms=lat, partitions=parts,
                          layer_scores={g: s for g, s in signal.items() if g not in floats})


def run(fake: Fake, budget: float, starts=(STATIC,), **kw):
    return search(list(starts), GROUPS, serial(fake), Budget(Metric.MIN_COSINE, budget), **kw)


def test_fragile_layer_exactly_that_group_is_kept_float():
    fake = Fake({"L3": 0.2, **{f"L{i}": 0.001 for i in range(N) if i != 3}})
    result = run(fake, 0.99)
    assert result.status is Status.MET
    assert reverted(result.best.evaluation.recipe) == {"L3"}
    assert result.best.evaluation.recipe.keep_float == ("^L3$",)
    assert result.evaluations == 2  # the start, then the fragile group: ranked first


def test_budget_met_by_a_start_stops_without_reverting():
    fake = Fake({g.name: 0.001 for g in GROUPS})
    result = run(fake, 0.99)
    assert result.status is Status.MET and result.evaluations == 1
    assert result.best.step == "start" and "met" in result.reason


def test_step_back_when_a_revert_does_not_help_then_rerank():
    # The signal says L5 is worst but reverting it changes nothing; L1 is the real cause.
    damage = {"L1": 0.05, **{f"L{i}": 0.0 for i in range(N) if i != 1}}
    signal = {"L5": 10.0, "L1": 1.0}
    fake = Fake(damage, signal=signal)
    result = run(fake, 0.99)
    assert result.status is Status.MET
    steps = [(t.step, sorted(t.reverted), t.kept) for t in result.trials]
    assert steps == [("start", [], False), ("revert", ["L5"], False), ("revert", ["L1"], True)]
    # stepped back: the winner derives from the start, not from the unhelpful L5 revert
    assert result.best.parent == 0
    assert reverted(result.best.evaluation.recipe) == {"L1"}


def test_greedy_accumulates_reverts_until_the_budget_holds():
    fake = Fake({"L0": 0.01, "L2": 0.02, "L4": 0.03, "L6": 0.002})
    result = run(fake, 0.99)
    assert result.status is Status.MET
    # ranked by damage: L4, then L2, then L0 (0.998 >= 0.99); L6 never needed
    assert reverted(result.best.evaluation.recipe) == {"L4", "L2", "L0"}
    assert all(t.kept for t in result.trials[1:])


def test_not_met_when_nothing_is_left_returns_the_most_accurate():
    fake = Fake({g.name: 0.001 for g in GROUPS}, base=0.9)  # even all-float misses 0.99
    result = run(fake, 0.99)
    assert result.status is Status.NOT_MET
    assert "nothing left" in result.reason
    assert result.best.evaluation.accuracy == pytest.approx(0.9)
    assert result.evaluations == 1 + N  # every group tried once, never repeated
    assert len({t.evaluation.recipe for t in result.trials}) == result.evaluations


def test_evaluation_limit_stops_with_limit_status_and_best_so_far():
    fake = Fake({g.name: 0.01 for g in GROUPS})  # needs many reverts
    result = run(fake, 0.995, limits=Limits(evaluations=3))
    assert result.status is Status.LIMIT and result.evaluations == 3
    assert "evaluation limit (3)" in result.reason and "not met" in result.reason
    assert result.best.evaluation.accuracy == max(t.evaluation.accuracy for t in result.trials)


def test_time_limit_stops_the_search():
    ticks = itertools.count()
    fake = Fake({g.name: 0.01 for g in GROUPS})
    result = run(fake, 0.995, limits=Limits(seconds=2.5), clock=lambda: float(next(ticks)))
    assert result.status is Status.LIMIT and "time limit" in result.reason
    assert 1 <= result.evaluations <= 3


def test_limit_after_a_candidate_met_returns_it_as_met():
    # the static start meets; the faster-looking dynamic start is walked until the limit
    fake = Fake({g.name: 0.02 for g in GROUPS}, latency={"static": 2.0, "dynamic": 1.0})
    met_static = Fake({}, latency={"static": 2.0, "dynamic": 1.0})

    def evaluator(r: Recipe) -> Evaluation:
        return (met_static if r.mode == "static" else fake)(r)

    result = search([STATIC, DYNAMIC], GROUPS, serial(evaluator),
                    Budget(Metric.MIN_COSINE, 0.99), limits=Limits(evaluations=4))
    assert result.status is Status.MET and result.best.evaluation.recipe.mode == "static"
    assert "evaluation limit" in result.reason


def test_fastest_meeting_candidate_wins_and_slower_starts_are_not_walked():
    fake = Fake({"L7": 0.02}, latency={"static": 1.0, "dynamic": 3.0})
    fake_dyn = Fake({}, latency={"static": 1.0, "dynamic": 3.0})

    def evaluator(r: Recipe) -> Evaluation:
        return (fake_dyn if r.mode == "dynamic" else fake)(r)

    result = search([STATIC, DYNAMIC], GROUPS, serial(evaluator), Budget(Metric.MIN_COSINE, 0.99))
    assert result.status is Status.MET
    best = result.best.evaluation
    assert best.recipe.mode == "static" and reverted(best.recipe) == {"L7"}
    assert best.latency_ms < 3.0


def test_failed_candidates_are_recorded_and_skipped():
    fake = Fake({}, fail={"dynamic"})
    result = run(fake, 0.99, starts=(DYNAMIC, STATIC))
    errors = [t.evaluation.error for t in result.trials if t.evaluation.error]
    assert errors and "does not build" in errors[0]
    assert result.status is Status.MET and result.best.evaluation.recipe.mode == "static"


def test_max_drop_budget_direction():
    fake = Fake({"L2": 0.03})

    def drop(r: Recipe) -> Evaluation:
        ev = fake(r)
        return Evaluation(r, (1.0 - ev.accuracy) * 100, latency_ms=ev.latency_ms,
                          layer_scores=ev.layer_scores)

    result = search([STATIC], GROUPS, serial(drop), Budget(Metric.MAX_DROP, 0.5))
    assert result.status is Status.MET
    assert reverted(result.best.evaluation.recipe) == {"L2"}


def test_partition_aware_prefers_reverts_near_the_end():
    # L1 and L6 hurt equally (same signal); on an accelerator only L6 avoids a split.
    fake = Fake({"L1": 0.006, "L6": 0.006}, partitions_from_end=True,
                signal={"L1": 1.0, "L6": 1.0})
    aware = run(fake, 0.99, partition_aware=True)
    assert aware.status is Status.MET
    assert [sorted(t.reverted) for t in aware.trials][1] == ["L6"]
    plain = run(Fake({"L1": 0.006, "L6": 0.006}, signal={"L1": 1.0, "L6": 1.0}), 0.99)
    assert plain.status is Status.MET


def test_partition_count_decides_before_latency():
    fast_split = Evaluation(STATIC.with_keep_float(("^L1$",)), 0.995, latency_ms=1.0,
                            partitions=2)
    slow_whole = Evaluation(DYNAMIC, 0.995, latency_ms=5.0, partitions=1)
    table = {fast_split.recipe: fast_split, slow_whole.recipe: slow_whole}
    result = search(list(table), GROUPS, serial(table.__getitem__),
                    Budget(Metric.MIN_COSINE, 0.99), partition_aware=True)
    assert result.best.evaluation is slow_whole
    result = search(list(table), GROUPS, serial(table.__getitem__),
                    Budget(Metric.MIN_COSINE, 0.99))
    assert result.best.evaluation is fast_split


def test_size_objective():
    small = Evaluation(Recipe(Format.ONNX, "weight-only"), 0.999, latency_ms=9.0, size_bytes=10)
    fast = Evaluation(DYNAMIC, 0.999, latency_ms=1.0, size_bytes=40)
    table = {small.recipe: small, fast.recipe: fast}
    result = search(list(table), GROUPS, serial(table.__getitem__),
                    Budget(Metric.MIN_COSINE, 0.99), objective=Objective.SIZE)
    assert result.best.evaluation is small


def test_lookahead_evaluates_several_reverts_per_step():
    fake = Fake({"L3": 0.05, "L4": 0.001}, signal={"L4": 5.0, "L3": 4.0})
    result = run(fake, 0.99, parallel=2)
    assert result.status is Status.MET
    assert [t.step for t in result.trials] == ["start", "lookahead", "lookahead"]
    assert reverted(result.best.evaluation.recipe) == {"L3"}


def test_interrupt_returns_best_so_far():
    fake = Fake({g.name: 0.01 for g in GROUPS})
    calls = []

    def evaluator(r: Recipe) -> Evaluation:
        calls.append(r)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return fake(r)

    result = search([STATIC], GROUPS, serial(evaluator), Budget(Metric.MIN_COSINE, 0.999))
    assert result.status is Status.INTERRUPTED
    assert result.evaluations == 2 and result.best is not None


def test_result_record_is_json_ready():
    import json

    fake = Fake({"L3": 0.2})
    data = run(fake, 0.99).to_dict()
    text = json.dumps(data)
    assert data["status"] == "met" and data["best"] == 1
    assert data["trials"][1]["reverted"] == ["L3"] and data["trials"][1]["chosen"]
    assert re.fullmatch(r"[0-9a-f]{16}", data["trials"][0]["key"]) and text


def test_through_executor_runs_candidates_as_tasks():
    executors = pytest.importorskip("edgeopt.executors")
    from edgeopt.tune.search import through_executor

    with executors.make_executor("serial") as ex:
        batch = through_executor(ex, _module_level_evaluate, 0.5)
        got = batch([STATIC, DYNAMIC])
    assert [e.recipe for e in got] == [STATIC, DYNAMIC]
    assert got[0].accuracy == 0.5 and got[1].error and "ValueError" in got[1].error


def _module_level_evaluate(recipe: Recipe, accuracy: float) -> Evaluation:
    if recipe.mode == "dynamic":
        raise ValueError("no dynamic here")
    return Evaluation(recipe, accuracy, latency_ms=1.0)


def test_latency_within_the_tie_tolerance_goes_to_the_more_accurate():
    a = Evaluation(DYNAMIC, 0.992, latency_ms=5.00)
    b = Evaluation(STATIC, 0.998, latency_ms=5.10)  # 2 % slower: a tie, more accurate
    c = Evaluation(Recipe(Format.ONNX, "weight-only"), 0.9999, latency_ms=9.0)
    table = {e.recipe: e for e in (a, b, c)}
    result = search(list(table), GROUPS, serial(table.__getitem__),
                    Budget(Metric.MIN_COSINE, 0.99))
    assert result.best.evaluation is b
    result = search(list(table), GROUPS, serial(table.__getitem__),
                    Budget(Metric.MIN_COSINE, 0.99), tie=0.0)
    assert result.best.evaluation is a
