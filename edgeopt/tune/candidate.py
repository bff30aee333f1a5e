"""One candidate: build a recipe, evaluate it through the one evaluator, score its layers.

``evaluate_recipe(recipe, workspace)`` is the module-level function the executors run (serial
in this process, or in pool workers): it builds the recipe with the format's backend, runs the
candidate against the reference outputs computed once by the driver
(``edgeopt.evaluate.evaluate(..., cached=...)``), computes the per-sample accuracy the budget
bounds, the pre-flight partition count on partition-aware targets, and — when the candidate
misses the budget and could be walked from — the per-layer ranking signal on its worst
samples. Latency is *not* measured here: parallel workers would time each other; the driver
times every candidate against the float model, interleaved, one at a time
(``edgeopt.tune.driver``).

Two evaluation types meet here, adapted in one place (:func:`to_search`): the evaluator's
record (``edgeopt.results.Evaluation``: drift, task metrics, latency — what reports show) is
kept whole on the :class:`Candidate`; the search core's ``edgeopt.tune.search.Evaluation`` is
the few numbers it compares (accuracy, latency, size, partitions, layer scores) and carries the
``Candidate`` in ``extra["candidate"]``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..calibration import Preprocessing
from ..evaluate import EvalData, EvalOptions, ModelRef, ReferenceOutputs, evaluate
from ..recipes import Recipe
from ..recipes.groups import LayerGroup
from ..results import Evaluation as Record
from ..results import LatencyPair
from ..targets import TargetProfile
from . import search
from .accuracy import SampleStats, budget_value

Shapes = dict[str, tuple[int | None, ...]]


@dataclass(frozen=True)
class SourceRef:
    """How a worker loads the source model and calibration data (values, picklable)."""

    path: Path
    sha256: str
    trust_model: bool = False
    calib: str | None = None
    num_calib: int | None = None
    seed: int = 0
    preprocessing: Preprocessing | None = None


@dataclass(frozen=True)
class Workspace:
    """Everything one candidate evaluation needs, for one (target, format) search."""

    source: SourceRef
    profile: TargetProfile
    format: str
    input_shapes: Shapes
    data: EvalData
    reference: ReferenceOutputs = field(repr=False)
    float_path: Path
    work: Path  # the backend's workdir (float models, pre-processed and transformed graphs)
    out_dir: Path  # candidate files
    budget: search.Budget
    groups: tuple[LayerGroup, ...]
    ranking_samples: int
    partition_aware: bool


@dataclass(frozen=True)
class Candidate:
    """What one recipe gave (one report row). ``latency`` is set by the driver."""

    recipe: Recipe
    path: Path
    size_bytes: int
    evaluation: Record  # drift and task metrics (no per-sample outputs)
    samples: dict[str, Any]  # per-sample stats (SampleStats.summary)
    accuracy: float | None  # the budget's metric
    partitions: int | None
    preflight: dict[str, Any] | None
    layer_scores: dict[str, float]
    signal: dict[str, Any]
    details: dict[str, Any]  # the backend's details of the build
    notes: tuple[str, ...]
    build_seconds: float
    eval_seconds: float
    latency: LatencyPair | None = None
    float_model: Path | None = None

    @property
    def float_layers(self) -> list[str]:
        """Node / tensor names the recipe kept float on purpose (keep-float matches)."""
        return list(self.details.get("keep_float") or [])

    def row(self) -> dict[str, Any]:
        """The JSON row of the search record (beside the search core's trial fields)."""
        lat = self.latency
        return {
            "file": self.path.name, "size_bytes": self.size_bytes,
            "samples": self.samples,
            "float_layers": self.float_layers,
            "float_layer_count": len(self.float_layers),
            "partitions": self.partitions,
            "preflight": self.preflight,
            "latency": None if lat is None else {
                "candidate_p50_ms": lat.candidate.p50_ms, "float_p50_ms": lat.reference.p50_ms,
                "speedup_p50": lat.speedup_p50, "threads": lat.threads, "runs": lat.candidate.runs},
            "task": None if self.evaluation.task is None else self.evaluation.task.to_dict(),
            "signal": self.signal, "top_layers": _top(self.layer_scores),
            "build_seconds": self.build_seconds, "eval_seconds": self.eval_seconds,
            "notes": list(self.notes),
        }


def _top(scores: dict[str, float], n: int = 5) -> list[dict[str, Any]]:
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])[:n]
    return [{"group": k, "score": v} for k, v in ranked]


def to_search(c: Candidate, latency_ms: float | None = None) -> search.Evaluation:
    """The search core's view of a candidate (the adapter between the two types)."""
    return search.Evaluation(c.recipe, c.accuracy, latency_ms=latency_ms,
                             size_bytes=c.size_bytes, partitions=c.partitions,
                             layer_scores=dict(c.layer_scores), extra={"candidate": c})


def candidate_of(ev: search.Evaluation) -> Candidate | None:
    return ev.extra.get("candidate") if ev.extra else None


# ------------------------------------------------------------------------------ worker side

# Per process: the loaded source and the open calibration data (a worker evaluates many
# candidates of the same search; the serial executor shares the driver's objects).
_LOADED: dict[tuple[str, str], Any] = {}


def share(ref: SourceRef, source: Any, calib: Any) -> None:
    """Let candidates evaluated in this process use already loaded objects."""
    _LOADED[("source", ref.sha256)] = source
    _LOADED[("calib", _calib_key(ref))] = calib


def _calib_key(ref: SourceRef) -> str:
    return f"{ref.sha256}:{ref.calib}:{ref.num_calib}:{ref.seed}:{ref.preprocessing!r}"


def _source(ref: SourceRef) -> Any:
    key = ("source", ref.sha256)
    if key not in _LOADED:
        from ..sources import load_source

        _LOADED[key] = load_source(ref.path, trust_model=ref.trust_model)
    return _LOADED[key]


def _calibration(ref: SourceRef, source: Any) -> Any:
    key = ("calib", _calib_key(ref))
    if key not in _LOADED:
        from ..calibration import open_calibration

        _LOADED[key] = open_calibration(ref.calib, list(source.inputs), num=ref.num_calib,
                                        seed=ref.seed, preprocessing=ref.preprocessing)
    return _LOADED[key]


def evaluate_recipe(recipe: Recipe, ws: Workspace) -> search.Evaluation:
    """Build and evaluate one recipe (see the module docstring). Raises on a failed build;
    the search records that candidate as failed and goes on."""
    from ..backends import BuildRequest, get_backend

    source = _source(ws.source)
    calib = _calibration(ws.source, source)
    backend = get_backend(ws.format)
    out = ws.out_dir / f"c{recipe.key()}{backend.extension}"
    t0 = time.perf_counter()
    built = backend.build(BuildRequest(
        source=source, profile=ws.profile, precision=recipe.precision,
        input_shapes=ws.input_shapes, workdir=ws.work, out_path=out, calib=calib,
        calib_method=recipe.calibration_method, recipe=recipe))
    build_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    model = ModelRef.host_cpu(built.path).load()
    samples = ws.data.open(list(ws.reference.inputs))
    record = evaluate(None, model, samples, cached=ws.reference, data_warnings=False,
                      options=EvalOptions(latency_runs=0, keep_outputs=True))
    stats = SampleStats.of(record.outputs.reference, record.outputs.candidate)
    accuracy = budget_value(ws.budget, record, stats)
    preflight, partitions = _partitions(built.path, ws) if ws.partition_aware else (None, None)
    scores, signal = {}, {"signal": "none", "why": "budget met"}
    if not ws.budget.met(accuracy):
        scores, signal = _signal(recipe, ws, built, samples, stats, source, calib)
    cand = Candidate(
        recipe=recipe, path=built.path, size_bytes=built.path.stat().st_size,
        evaluation=record.without_outputs(), samples=stats.summary(), accuracy=accuracy,
        partitions=partitions, preflight=preflight, layer_scores=scores, signal=signal,
        details=dict(built.details), notes=tuple(built.notes) + tuple(record.notes),
        build_seconds=round(build_s, 2), eval_seconds=round(time.perf_counter() - t1, 2),
        float_model=built.float_model)
    return to_search(cand)


def _signal(recipe: Recipe, ws: Workspace, built: Any, samples: Any, stats: SampleStats,
            source: Any, calib: Any) -> tuple[dict[str, float], dict[str, Any]]:
    """The ranking signal on the worst samples; a failure is reported, never fatal."""
    from . import signal as sig

    if not ws.groups or not search.walkable(recipe):
        return {}, {"signal": "none", "why": "no layer group can be kept float in this recipe"}
    worst = set(stats.worst_first()[:ws.ranking_samples])
    feeds = [f for i, f in enumerate(samples) if i in worst]
    try:
        if ws.format == "onnx":
            float_model = built.float_model or ws.float_path
            return sig.onnx_scores(float_model, built.path, ws.groups, feeds)
        if recipe.mode in ("int8", "int16x8"):
            cal = [s for _, s in zip(range(64), calib, strict=False)]
            return sig.tflite_scores(source, ws.groups, feeds, cal,
                                     cache=ws.work / "tune_tflite_signal.json")
    except Exception as exc:  # noqa: BLE001 - a diagnostic: rank by position instead
        text = (str(exc).strip().splitlines() or [""])[0][:200]
        return {}, {"signal": "none", "why": f"per-layer analysis failed: "
                                             f"{type(exc).__name__}: {text}"}
    return {}, {"signal": "none", "why": f"no per-layer analysis for TFLite {recipe.mode}"}


def _partitions(path: Path, ws: Workspace) -> tuple[dict[str, Any] | None, int | None]:
    """The pre-flight verdict and accelerator segment count (fewer is better; a model with
    nothing on the accelerator counts as worst)."""
    from ..accelerators import for_target
    from ..inspect import preflight

    try:
        result = preflight(path, ws.profile, for_target(ws.profile, ws.format))
    except Exception as exc:  # noqa: BLE001 - an unanalysable candidate ranks last
        return {"error": str(exc)[:300]}, None
    return {"verdict": (result.get("summary") or {}).get("verdict"),
            "delegated": (result.get("summary") or {}).get("delegated"),
            "ops": (result.get("summary") or {}).get("ops")}, segments(result)


def segments(result: dict[str, Any]) -> int | None:
    """Runs of consecutive ops on the same side (accelerator / CPU) in execution order:
    1 = the whole graph on the accelerator; nothing on it = ops + 1 (worse than any split)."""
    ops = result.get("ops") or []
    if not ops:
        return None
    flags = [bool(o.get("delegated")) for o in ops]
    if not any(flags):
        return len(flags) + 1
    return 1 + sum(1 for a, b in zip(flags, flags[1:], strict=False) if a != b)


def with_latency(c: Candidate, latency: LatencyPair, latency_ms: float) -> search.Evaluation:
    """The search view of ``c`` once the driver timed it."""
    return to_search(replace(c, latency=latency), latency_ms=latency_ms)
