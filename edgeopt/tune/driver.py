"""The tuning loop around the search core, for ``convert(..., auto=TuneOptions)``.

Per (target, format) — in the order ``convert`` plans them — a :class:`Tuner`:

1. builds the float model in that format (the backend's ``build_float``, cached in the run's
   workdir), runs it once over the validation samples (``edgeopt.evaluate.run_reference``:
   the reference outputs every candidate is compared with), and refuses budgets the data
   cannot support (``--max-drop`` without labels, labels the float model disagrees with);
2. reads the model's shape and layer groups (``edgeopt.tune.space``) and the target's
   starting recipes;
3. runs ``edgeopt.tune.search`` with a batch runner that sends each candidate to the executor
   (``edgeopt.executors``: serial, a process pool for ``-j N``, Ray) as
   ``Task(evaluate_recipe, (recipe, workspace))`` and then times it here, one candidate at a
   time, interleaved with the float model at the target's threads
   (``edgeopt.evaluate.measure_latency``); latency the search compares is the candidate's
   ratio to float times the first float p50, so host load between candidates cancels out;
4. returns the search record (every candidate, the chosen one and why) and the chosen
   candidate, which ``convert`` installs into ``OUT/<target>/`` like any artifact.

The evaluation and time limits of a run are shared by its searches (``TuneOptions.share``).
Ctrl-C during a search ends it with status ``interrupted`` and the best candidate so far; the
remaining searches do not run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .. import signals
from ..evaluate import EvalData, EvalSamples, ModelRef, Pairing, measure_latency, run_reference
from ..recipes import Recipe
from ..results import LatencyPair
from ..targets import KeepFloatPolicy, TargetProfile
from . import search
from .candidate import Candidate, SourceRef, Workspace, candidate_of, evaluate_recipe, share
from .candidate import with_latency as timed
from .options import TuneOptionError, TuneOptions
from .progress import SearchProgress, duration
from .space import ModelShape, model_shape, starting_points

Say = Callable[[str], None]


@dataclass
class TargetInput:
    """What convert hands the tuner for one target (already loaded and checked)."""

    source: Any  # ModelSource
    source_ref: SourceRef
    calib: Any  # CalibrationSource
    samples: EvalSamples
    data: EvalData
    profile: TargetProfile
    shapes: dict[str, tuple[int | None, ...]]
    work: Path
    keep_float: tuple[str, ...] = ()


@dataclass
class FormatSearch:
    """One finished search: its record (JSON-ready) and the candidate to install."""

    format: str
    status: search.Status
    record: dict[str, Any]
    best: Candidate | None

    @property
    def interrupted(self) -> bool:
        return self.status is search.Status.INTERRUPTED


@dataclass
class TargetTuning:
    """What the searches of one target gave: (backend, chosen candidate) per format."""

    choices: list[tuple[Any, Candidate]]
    records: list[dict[str, Any]]
    errors: list[str]
    interrupted: bool


@dataclass
class TuneRun:
    """The searches of one tuning run, on one executor (a context manager)."""

    options: TuneOptions
    searches: int  # how many (target, format) searches the run will do
    source_ref: SourceRef
    data: EvalData
    say: Say | None = None
    stopped: bool = False  # Ctrl-C ended a search: the remaining ones do not run
    _done: int = 0
    _evaluations: int = 0
    _seconds: float = 0.0
    _executor: Any = field(default=None, repr=False)

    def __enter__(self) -> TuneRun:
        from ..executors import make_executor

        self._executor = make_executor(self.options.executor, self.options.jobs,
                                       ray_address=self.options.ray_address)
        self._executor.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._executor is not None:
            self._executor.__exit__(*exc)

    def target(self, source: Any, calib: Any, samples: EvalSamples, profile: TargetProfile,
               shapes: dict[str, tuple[int | None, ...]], work: Path,
               keep_float: tuple[str, ...], backends: Sequence[Any]) -> TargetTuning:
        """Search every format of one target (stops after an interrupted one)."""
        inp = TargetInput(source, self.source_ref, calib, samples, self.data, profile, shapes,
                          work, keep_float)
        out = TargetTuning([], [], [], False)
        for backend in backends:
            found = self.search(inp, backend.name)
            out.records.append(found.record)
            if found.best is not None:
                out.choices.append((backend, found.best))
            else:
                out.errors.append(f"{backend.name}: {found.record['reason']}")
            if found.interrupted:
                out.interrupted = self.stopped = True
                break
        return out

    # ------------------------------------------------------------------ one search

    def search(self, inp: TargetInput, fmt: str) -> FormatSearch:
        """Tune ``inp.profile`` in format ``fmt``.

        Raises:
            TuneOptionError: the budget cannot be evaluated on this data.
            EdgeOptError: the float model cannot be built or run on the data.
        """
        from ..backends import get_backend

        opts, profile = self.options, inp.profile
        title = f"{profile.name}/{fmt}"
        limits = opts.share(self.searches - self._done, self._evaluations, self._seconds)
        progress = SearchProgress(f"tune {title}", limits, say=self.say)
        progress.say(f"tune {title}: building and running the float reference")
        backend = get_backend(fmt)
        float_path = backend.build_float(inp.source, inp.shapes, inp.work)
        ref = ModelRef.host_cpu(float_path).load()
        reference = run_reference(ref, inp.samples)
        float_task = check_budget(opts.budget, reference, inp.samples)
        shape = model_shape(inp.source, fmt, float_path)
        starts = [r.with_keep_float(inp.keep_float) if inp.keep_float else r
                  for r in starting_points(profile, fmt, shape)]
        if not starts:
            raise TuneOptionError(f"target {profile.name!r} admits no {fmt} recipe to tune "
                                  "([recipes] in its profile); drop --format or widen it")
        threads = opts.threads_for(profile.runtime.threads)
        partition_aware = (profile.recipes.keep_float is KeepFloatPolicy.PARTITION_SPLIT
                           or _gated(profile, fmt))
        cand_dir = inp.work / "tune" / f"{profile.name}-{fmt}"
        cand_dir.mkdir(parents=True, exist_ok=True)
        ws = Workspace(inp.source_ref, profile, fmt, dict(inp.shapes), inp.data, reference,
                       float_path, inp.work, cand_dir, opts.budget, shape.groups,
                       opts.ranking_samples, partition_aware)
        share(inp.source_ref, inp.source, inp.calib)  # the serial executor reuses them
        timer = _Timer(float_path, threads, opts.latency_runs, inp.samples.first())
        progress.say(f"tune {title}: {len(starts)} starting recipe(s), {len(shape.groups)} "
                     f"layer group(s); {shape.evidence}; budget {opts.budget.describe()}, "
                     f"limits {_limits_text(limits)}, candidates timed at {threads} thread(s)")
        batch = _Batch(search.through_executor(self._executor, evaluate_recipe, ws), timer)

        def on_trial(i: int, trial: search.Trial) -> None:
            progress.evaluated(_trial_line(trial, opts.budget))

        core = search.Search(starts, shape.groups, batch, opts.budget, objective=opts.objective,
                             limits=limits, partition_aware=partition_aware,
                             parallel=max(1, opts.jobs or 1), progress=progress.say,
                             on_trial=on_trial)
        try:
            result = core.run()
            if opts.objective is search.Objective.LATENCY and not partition_aware:
                result = confirm_fastest(result, timer, opts.budget, say=progress.say)
        except KeyboardInterrupt:  # Ctrl-C while confirming: the search's own choice stands
            if "result" not in locals():
                raise
        finally:
            progress.close()
        self._done += 1
        self._evaluations += result.evaluations
        self._seconds += result.seconds
        best = candidate_of(result.best.evaluation) if result.best else None
        rec = record(fmt, result, shape, opts, limits, threads, timer, float_task)
        progress.say(f"tune {title}: {result.status.value} after {result.evaluations} "
                     f"evaluation(s) in {duration(result.seconds)}: {rec['chosen_reason']}")
        return FormatSearch(fmt, result.status, rec, best)


def _gated(profile: TargetProfile, fmt: str) -> bool:
    """Whether the target's accelerator is a device of its own (Edge TPU, GPU): then how much
    of the graph it runs decides before latency."""
    from ..accelerators import for_target

    try:
        return bool(for_target(profile, fmt).gated)
    except KeyError:
        return False


def _limits_text(limits: search.Limits) -> str:
    parts = []
    if limits.evaluations is not None:
        parts.append(f"{limits.evaluations} evaluations")
    if limits.seconds is not None:
        parts.append(duration(limits.seconds))
    return " / ".join(parts) or "none"


# ------------------------------------------------------------------------------ budget checks


def check_budget(budget: search.Budget, reference: Any, samples: EvalSamples) -> dict | None:
    """Refuse budgets the data cannot support; the float model's task metrics (or None).

    Raises:
        TuneOptionError: ``--max-drop`` without labels or without a class-score output, or
            labels the float model itself disagrees with (it does no better than always
            predicting the most frequent label: a wrong labels file, wrong preprocessing or
            a model that is not a classifier).
    """
    from ..drift import task_metrics

    labels = samples.labels
    if labels is None:
        if budget.metric is search.Metric.MAX_DROP:
            raise TuneOptionError(
                f"--max-drop needs labels: the validation data {samples.spec.path} holds no "
                "'labels' or 'y' array aligned with its samples; add one, or use --min-cosine "
                "/ --min-sqnr")
        return None
    refs = reference.outputs.stacked()
    task = task_metrics(refs, refs, labels, n_boot=0)
    if "metrics" not in task:
        if budget.metric is search.Metric.MAX_DROP:
            raise TuneOptionError(f"--max-drop: no model output reads as class scores "
                                  f"({task['skipped'].get('all')}); use --min-cosine / "
                                  "--min-sqnr")
        return None
    acc = float(task["metrics"]["accuracy"]["float"])
    chance, answers = _chance_agreement(refs, labels, task)
    # Cohen's kappa of the float predictions against the labels: 0 = no better than a
    # predictor that ignores the input (random labels, a shuffled file), 1 = perfect. A model
    # that gives one answer to every sample has kappa 0 whatever the labels: its drop is
    # still measurable (the int8 model must keep that answer), so it is noted, not refused.
    kappa = (acc - chance) / (1.0 - chance) if chance < 1.0 else 1.0
    note = None
    if answers == 1:
        note = ("the float model gives the same class to every validation sample: an "
                "accuracy drop says little about this data; --min-cosine is stricter")
    elif budget.metric is search.Metric.MAX_DROP and kappa <= 0.1:
        raise TuneOptionError(
            f"the float model itself gets {100 * acc:.1f} % of the {task['num_samples']} "
            f"validation labels right, no better than chance for its own answer frequencies "
            f"({100 * chance:.1f} %): the labels disagree with the model (wrong labels "
            "file, sample order or --preprocess?), so an accuracy-drop budget means "
            "nothing; fix the labels or use --min-cosine / --min-sqnr")
    return {"accuracy": acc, "num_samples": int(task["num_samples"]),
            "num_classes": int(task["num_classes"]), "kappa": round(kappa, 4),
            **({"note": note} if note else {})}


def _chance_agreement(refs: Any, labels: Any, task: dict) -> tuple[float, int]:
    """Accuracy expected if the float model's predictions were independent of the labels
    (sum over classes of P(predicted k) * P(label k)), and how many classes it predicts."""
    from ..drift import _as_list, _predict, _scores

    outs = _as_list(refs)
    scores = _scores(outs[task["output"]] if isinstance(task.get("output"), int) else outs[0])
    pred = np.asarray(_predict(scores)).reshape(-1)
    y = np.asarray(labels)
    y = (np.argmax(y, axis=1) if y.ndim == 2 else y.reshape(-1)).astype(np.int64)
    n = max(int(pred.max(initial=0)), int(y.max(initial=0))) + 1
    p = np.bincount(pred.astype(np.int64), minlength=n) / max(1, pred.size)
    q = np.bincount(y, minlength=n) / max(1, y.size)
    return float(np.dot(p, q)), int(np.count_nonzero(p))


# ------------------------------------------------------------------------------ batch + timing


class _Timer:
    """Times candidates against the float model, interleaved, at the search's threads."""

    def __init__(self, float_path: Path, threads: int, runs: int,
                 feeds: dict[str, np.ndarray]) -> None:
        self.reference = ModelRef.host_cpu(float_path, threads=threads).load()
        self.threads, self.runs, self.feeds = threads, runs, feeds
        self.base_ms: float | None = None  # the first float p50: the scale of every latency

    def time(self, path: Path) -> tuple[LatencyPair, float]:
        cand = ModelRef.host_cpu(path, threads=self.threads).load()
        pairing = Pairing.of(self.reference.inputs, self.reference.outputs, cand.inputs,
                             cand.outputs)
        lat = measure_latency(self.reference, cand, self.feeds, pairing, runs=self.runs,
                              warmup=max(2, min(5, self.runs // 5)))
        if self.base_ms is None:
            self.base_ms = lat.reference.p50_ms
        ratio = lat.candidate.p50_ms / lat.reference.p50_ms if lat.reference.p50_ms else 1.0
        return lat, self.base_ms * ratio


class _Batch:
    """The search's batch runner: evaluate through the executor, then time each candidate
    here; a recipe evaluated before is not evaluated again."""

    def __init__(self, inner: search.Batch, timer: _Timer) -> None:
        self.inner, self.timer = inner, timer
        self.seen: dict[str, search.Evaluation] = {}

    def __call__(self, recipes: Sequence[Recipe]) -> list[search.Evaluation]:
        fresh = list(dict.fromkeys(r for r in recipes if r.key() not in self.seen))
        results = self.inner(fresh) if fresh else []
        _raise_if_signalled()
        for r, ev in zip(fresh, results, strict=True):
            c = candidate_of(ev)
            if ev.error is None and c is not None:
                try:
                    lat, ms = self.timer.time(c.path)
                    ev = timed(c, lat, ms)
                except KeyboardInterrupt:
                    raise
                except Exception as exc:  # noqa: BLE001 - an untimeable candidate is failed
                    ev = search.failed(r, exc)
                _raise_if_signalled()
            self.seen[r.key()] = ev
        return [self.seen[r.key()] for r in recipes]


def _raise_if_signalled() -> None:
    """A framework may have swallowed Ctrl-C inside a candidate (TF turns it into a
    SystemError, which then reads as a failed build): stop the search all the same."""
    signum = signals.received()
    if signum is not None:
        raise signals.Interrupted(signum)


def _trial_line(trial: search.Trial, budget: search.Budget) -> str:
    ev = trial.evaluation
    head = ev.recipe.label()
    if trial.reverted:
        head += f" (float: {', '.join(trial.reverted[-3:])}" + \
            (f" +{len(trial.reverted) - 3}" if len(trial.reverted) > 3 else "") + ")"
    if ev.error:
        return f"{head}: failed: {ev.error}"
    c = candidate_of(ev)
    acc = "n/a" if ev.accuracy is None else f"{ev.accuracy:.5g}"
    verdict = "meets" if budget.met(ev.accuracy) else "misses"
    speed = ""
    if c is not None and c.latency is not None and c.latency.speedup_p50:
        speed = f", {c.latency.speedup_p50:.2f}x float"
    parts = f", {ev.partitions} partition(s)" if ev.partitions is not None else ""
    return f"{head}: {budget.metric.value} {acc} ({verdict}){speed}{parts}"


# ------------------------------------------------------------------------------ confirmation

CONFIRM_TOP = 3  # candidates meeting the budget re-timed against each other
CONFIRM_WITHIN = 1.5  # ... when at most this much slower than the fastest
CONFIRM_ROUNDS = 3  # extra interleaved timings each (median of these and the search's)


def confirm_fastest(result: search.SearchResult, timer: _Timer, budget: search.Budget, *,
                    tie: float = 0.03, say: Say | None = None) -> search.SearchResult:
    """Re-time the fastest candidates that meet the budget, round-robin, and choose again.

    Each candidate was timed once, minutes apart from the others, on a host whose load moves
    (on this 2-core VM a 2-thread timing of the same MiniLM candidate varied 2.3x-2.9x): the
    choice must not rest on one sample. The top ``CONFIRM_TOP`` within ``CONFIRM_WITHIN`` of
    the fastest get ``CONFIRM_ROUNDS`` more interleaved timings each, rotated so load drifts
    hit all of them; the median ratio to float decides, and within ``tie`` the more accurate
    wins (the search's own rule).
    """
    if result.status is not search.Status.MET or result.best is None:
        return result
    met = [i for i, t in enumerate(result.trials)
           if t.evaluation.error is None and budget.met(t.evaluation.accuracy)
           and t.evaluation.latency_ms is not None and candidate_of(t.evaluation) is not None]
    met.sort(key=lambda i: result.trials[i].evaluation.latency_ms)  # type: ignore[arg-type]
    if len(met) < 2 or timer.base_ms is None:
        return result
    fastest = result.trials[met[0]].evaluation.latency_ms or 0.0
    rivals = [i for i in met[:CONFIRM_TOP]
              if (result.trials[i].evaluation.latency_ms or math.inf) <= fastest * CONFIRM_WITHIN]
    if len(rivals) < 2:
        return result
    if say:
        say(f"confirming the {len(rivals)} fastest candidates meeting the budget: "
            f"{CONFIRM_ROUNDS} more interleaved timings each")
    ratios = {i: [result.trials[i].evaluation.latency_ms / timer.base_ms] for i in rivals}
    lats: dict[int, LatencyPair] = {}
    for k in range(CONFIRM_ROUNDS):
        order = rivals[k % len(rivals):] + rivals[:k % len(rivals)]
        for i in order:
            c = candidate_of(result.trials[i].evaluation)
            lat, _ = timer.time(c.path)  # type: ignore[union-attr]
            lats[i] = lat
            ratios[i].append(lat.candidate.p50_ms / lat.reference.p50_ms)
    trials = list(result.trials)
    for i in rivals:
        ev, c = trials[i].evaluation, candidate_of(trials[i].evaluation)
        med = float(np.median(ratios[i]))
        ev2 = timed(c, lats[i], timer.base_ms * med)  # type: ignore[arg-type]
        ev2 = replace(ev, latency_ms=ev2.latency_ms, extra={
            **ev2.extra, "confirmed_ratios": [round(r, 4) for r in ratios[i]]})
        trials[i] = search.Trial(ev2, trials[i].step, trials[i].reverted, trials[i].parent,
                                 trials[i].kept)
    best_ms = min(trials[i].evaluation.latency_ms for i in rivals)  # type: ignore[type-var]
    tied = [i for i in rivals if trials[i].evaluation.latency_ms <= best_ms * (1 + tie)]
    pick = tied[0]
    for i in tied[1:]:
        if budget.better(trials[i].evaluation.accuracy, trials[pick].evaluation.accuracy):
            pick = i
    # the search's choice may be a candidate outside the rivals only if none was re-timed
    return search.SearchResult(result.status, trials[pick], trials, result.seconds,
                               result.reason + f"; fastest re-timed {CONFIRM_ROUNDS + 1}x "
                               f"among {len(rivals)}")


# ------------------------------------------------------------------------------ the record


def record(fmt: str, result: search.SearchResult, shape: ModelShape, opts: TuneOptions,
           limits: search.Limits, threads: int, timer: _Timer,
           float_task: dict | None) -> dict[str, Any]:
    """The search record of one (target, format): JSON-ready, every candidate a row."""
    doc = result.to_dict()
    budget = opts.budget
    for row, trial in zip(doc["trials"], result.trials, strict=True):
        c = candidate_of(trial.evaluation)
        row["met"] = trial.evaluation.error is None and budget.met(trial.evaluation.accuracy)
        row.update(c.row() if c is not None else {})
        confirmed = trial.evaluation.extra.get("confirmed_ratios")
        if confirmed:  # re-timed against the other fastest candidates (confirm_fastest)
            row["confirmed"] = {"ratios": confirmed,
                                "speedup_p50": round(1.0 / float(np.median(confirmed)), 4)}
    doc.update(
        format=fmt, budget={"metric": budget.metric.value, "threshold": budget.threshold,
                            "text": budget.describe()},
        objective=opts.objective.value, threads=threads,
        limits={"evaluations": limits.evaluations, "seconds": limits.seconds},
        executor={"name": opts.executor, "jobs": opts.jobs},
        model=shape.to_dict(), float={"p50_ms": timer.base_ms, "task": float_task},
        chosen_reason=chosen_reason(result, opts, threads),
        budget_met=result.best is not None and result.best.evaluation.error is None
        and budget.met(result.best.evaluation.accuracy))
    return doc


def chosen_reason(result: search.SearchResult, opts: TuneOptions, threads: int) -> str:
    """Why the chosen candidate was chosen, in one sentence."""
    budget = opts.budget
    best = result.best
    if best is None:
        return f"no candidate could be built and evaluated ({result.reason})"
    ev = best.evaluation
    c = candidate_of(ev)
    acc = "n/a" if ev.accuracy is None or (isinstance(ev.accuracy, float) and
                                           math.isnan(ev.accuracy)) else f"{ev.accuracy:.5g}"
    confirmed = ev.extra.get("confirmed_ratios")
    speed = (f"{c.latency.speedup_p50:.2f}x float p50 at {threads} thread(s)"
             if c is not None and c.latency is not None and c.latency.speedup_p50 else
             "latency not measured")
    if confirmed:
        speed = (f"{1.0 / float(np.median(confirmed)):.2f}x float p50 at {threads} thread(s), "
                 f"median of {len(confirmed)} interleaved timings")
    what = f"{budget.metric.value} {acc}, {speed}, {ev.size_bytes or 0} bytes"
    if result.status is search.Status.INTERRUPTED:
        return f"interrupted (Ctrl-C): the best candidate found so far ({what})"
    if result.status is not search.Status.MET:
        return (f"budget not met ({budget.describe()}): {result.reason}; the most accurate "
                f"candidate is returned ({what})")
    met = [t for t in result.trials
           if t.evaluation.error is None and budget.met(t.evaluation.accuracy)]
    goal = "smallest" if opts.objective is search.Objective.SIZE else "fastest"
    parts = ""
    if ev.partitions is not None:
        parts = f", {ev.partitions} accelerator partition(s) (fewest first)"
    return (f"{goal} of {len(met)} candidate(s) meeting {budget.describe()}{parts} "
            f"({what}); candidates within 3 % of it count as equally "
            f"{'small' if goal == 'smallest' else 'fast'} and the most accurate wins")


