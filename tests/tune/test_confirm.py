"""``confirm_fastest``: the fastest candidates meeting the budget are re-timed round-robin and
the choice follows the median, not one noisy timing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from edgeopt.recipes import Recipe
from edgeopt.targets import Format
from edgeopt.tune import search
from edgeopt.tune.driver import CONFIRM_ROUNDS, confirm_fastest


@dataclass(frozen=True)
class _Cand:  # the fields of tune.candidate.Candidate that the adapter reads
    recipe: Recipe
    path: Path
    accuracy: float
    size_bytes: int = 100
    partitions: int | None = None
    layer_scores: dict[str, float] = field(default_factory=dict)
    latency: Any = None


class _Timer:
    """Candidate ``name`` always times at ``true[name]`` x float, float at 10 ms."""

    def __init__(self, true: dict[str, float]) -> None:
        self.true, self.base_ms, self.calls = true, 10.0, []

    def time(self, path: Path) -> tuple[Any, float]:
        self.calls.append(path.name)
        ratio = self.true[path.name]
        lat = SimpleNamespace(candidate=SimpleNamespace(p50_ms=10.0 * ratio),
                              reference=SimpleNamespace(p50_ms=10.0), speedup_p50=1 / ratio)
        return lat, 10.0 * ratio


def _trial(name: str, acc: float, first_ms: float, mode: str = "int8") -> search.Trial:
    r = Recipe(Format.TFLITE, mode, keep_float=(f"^{name}$",) if mode == "int8" else ())
    c = _Cand(r, Path(name), acc)
    return search.Trial(search.Evaluation(r, acc, latency_ms=first_ms, size_bytes=100,
                                          extra={"candidate": c}), "start")


def _result(trials: list[search.Trial], best: int) -> search.SearchResult:
    return search.SearchResult(search.Status.MET, trials[best], trials, 1.0, "met")


def test_a_lucky_single_timing_does_not_decide() -> None:
    budget = search.Budget(search.Metric.MIN_COSINE, 0.99)
    # "a" looked fastest once (4 ms) but really runs at 0.5x float; "b" at 0.4x
    trials = [_trial("a", 0.995, 4.0), _trial("b", 0.999, 5.0), _trial("c", 0.98, 1.0)]
    timer = _Timer({"a": 0.5, "b": 0.4})
    out = confirm_fastest(_result(trials, 0), timer, budget)  # type: ignore[arg-type]
    assert out.best is out.trials[1]
    assert sorted(timer.calls) == sorted(["a", "b"] * CONFIRM_ROUNDS)  # "c" misses: not timed
    assert out.trials[1].evaluation.extra["confirmed_ratios"][1:] == [0.4] * CONFIRM_ROUNDS
    assert out.trials[2] is trials[2]


def test_tie_goes_to_the_more_accurate_and_single_candidates_are_left_alone() -> None:
    budget = search.Budget(search.Metric.MIN_COSINE, 0.99)
    trials = [_trial("a", 0.995, 5.0), _trial("b", 0.9999, 5.1)]
    out = confirm_fastest(_result(trials, 0), _Timer({"a": 0.50, "b": 0.51}),  # type: ignore[arg-type]
                          budget)
    assert out.best is out.trials[1]  # within 3 %: the more accurate
    one = [_trial("a", 0.995, 5.0), _trial("b", 0.9, 1.0)]
    assert confirm_fastest(_result(one, 0), _Timer({}), budget).best is one[0]  # type: ignore[arg-type]
