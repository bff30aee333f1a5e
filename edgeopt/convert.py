"""The conversion pipeline: ``edgeopt.convert(model, targets, calib, ...) -> ConvertReport``.

Order of work, cheapest refusals first: options and target profiles, the output directory, the
source model, the plan (which formats and precisions each target gets), the calibration data
(shapes, dtypes and values checked by ``open_calibration``) — all before the first conversion.
Then, inside a staging folder next to ``OUT``, per target: build each artifact, load it through
``edgeopt_runtime`` (the IO spec with scale / zero point in the manifest comes from the produced
file), measure drift and latency against the float model converted to the same format with the
one evaluator (``edgeopt.evaluate``), run the target accelerator's pre-flight analysis and its
post-build step (the Edge TPU: ``edgetpu_compiler`` when installed; see
``edgeopt.accelerators``), write
``manifest.json``; finally ``report.json`` / ``.md`` / ``.html`` and one rename into place.
With ``strict=True`` a target not fully on its accelerator raises ``StrictError`` afterwards.

Note: the module itself is callable (``edgeopt.convert(...)`` works even after
``import edgeopt.convert`` replaced the package attribute with this module).
"""

from __future__ import annotations

import contextlib
import copy
import re
import shutil
import signal
import sys
import time
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import edgeopt_runtime as rt
import numpy as np
from edgeopt_runtime.errors import EdgeOptError, TargetError
from edgeopt_runtime.manifest import ModelEntry, sha256_file
from edgeopt_runtime.spec import TensorSpec

from . import accelerators, progress, signals
from .accelerators import Accelerator, StrictError
from .artifact import model_entry, write_target_manifest
from .backends import Backend, BuildRequest, Built, Shapes, get_backend
from .calibration import CalibrationSource, Preprocessing, open_calibration
from .evaluate import (
    DEFAULT_LATENCY_RUNS,
    DEFAULT_MAX_EVAL,
    HOST_THREADS,
    EvalData,
    EvalOptions,
    EvalSamples,
    ModelRef,
    evaluate,
)
from .limits import OptionError, check_numbers
from .output import Staging, claim_output, source_bytes
from .results import (
    ArtifactFailure,
    ArtifactResult,
    ConvertResult,
    Evaluation,
    Gates,
    ModelInfo,
    ReportHeader,
    RuntimeInfo,
    Status,
    TargetResult,
)
from .signals import Interrupted
from .sources import ModelSource, load_source
from .targets import (
    CalibrationMethod,
    Format,
    Scheme,
    TargetProfile,
    builtin_dir,
    load_target,
)

# Partial success: every target and format is attempted; one that fails becomes a `failed`
# record (target) or an `ArtifactFailure` (one format of a target) and the run goes on, so the
# artifacts that worked are written; the CLI exits 1. Only a run where nothing at all could be
# built raises (exit 2, nothing written). True restores all-or-nothing (the first failure
# raises and nothing is written).
FAIL_FAST = False
WORK_DIR = "_work"  # scratch inside the staging folder (float models, exports); not shipped
DEFAULT_LAYER_SAMPLES = 8  # per-layer section of every artifact: samples (bounded time)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ConvertReport:
    """The result of ``convert``: the record, its ``edgeopt.report/1`` document (``data``) and
    where it was written."""

    result: ConvertResult
    out: Path
    data: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", self.result.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return self.data

    @property
    def artifacts(self) -> list[dict[str, Any]]:
        """Every artifact of every target (each dict carries its ``target`` name)."""
        return [a for t in self.data["targets"] for a in t["artifacts"]]

    def __getitem__(self, key: str) -> Any:
        return self.data[key]


@dataclass
class _Job:
    backend: Backend
    precision: str
    recipe: Any = None  # a Recipe chosen by the tuning loop (None: the profile's)
    prebuilt: Any = None  # the tuning loop's Candidate holding that recipe's built file


@dataclass
class _Plan:
    profile: TargetProfile
    jobs: list[_Job]
    skipped: list[str]
    shapes: Shapes = field(default_factory=dict)
    tune: tuple[dict[str, Any], ...] | None = None  # search records (--auto)


@dataclass
class _Context:
    source: ModelSource
    calib: CalibrationSource
    samples: EvalSamples
    method: CalibrationMethod | None
    keep_float: tuple[re.Pattern[str], ...]
    work: Path
    say: Progress
    latency_runs: int
    out: Path  # the final output folder (report paths and hints name it, not the staging one)
    stage: Path  # the staging folder: never named in a message (see _public)
    check: Callable[[], None]  # raise Interrupted when a library swallowed a signal
    keep_reference: bool | None
    measure_memory: bool
    rewrites: tuple[str, ...] = ()
    output_kinds: tuple[tuple[str, str], ...] = ()  # --output-kind overrides
    layer_samples: int = 0  # samples of the per-layer section (0: no per-layer section)


def convert(
    model: str | Path,
    targets: str | Sequence[str],
    calib: str | Path | None = None,
    *,
    val: str | Path | None = None,
    formats: str | Sequence[str] = "all",
    calib_method: str | None = None,
    num_calib: int | None = None,
    seed: int = 0,
    keep_float: Iterable[str] = (),
    out: str | Path = "out",
    force: bool = False,
    allow_synthetic: bool = False,
    trust_model: bool = False,
    progress: Progress | None = None,
    preprocessing: Preprocessing | None = None,
    latency_runs: int = DEFAULT_LATENCY_RUNS,
    strict: bool = False,
    rewrite: Iterable[str] = (),
    output_kinds: Sequence[tuple[str, str]] = (),
    layer_samples: int = DEFAULT_LAYER_SAMPLES,
    allow_invalid: bool = False,
    max_eval: int | None = DEFAULT_MAX_EVAL,
    input_shapes: Mapping[str, Sequence[int]] | Sequence[str] | None = None,
    keep_reference: bool | None = None,
    measure_memory: bool = True,
    auto: Any = None,
    recipes: Mapping[str, Any] | None = None,
) -> ConvertReport:
    """Calibrate and quantize a float model for one or more targets.

    Args:
        model: ``.keras`` / ``.h5`` file, SavedModel directory or ``.onnx`` file.
        targets: built-in target names (``arm-cpu``) or paths to target ``.toml`` files.
        calib: calibration data (``.npz``, ``.npy``, image folder, folder of arrays); None only
            with ``allow_synthetic``.
        val: validation data for drift (default: the calibration data).
        formats: ``"all"`` (every format a target allows), ``"tflite"``, ``"onnx"`` or a list.
        calib_method: ``minmax`` / ``entropy`` / ``percentile`` (default: the profile's).
        num_calib: use a seeded random subset of this many calibration samples.
        seed: seed of the subset choice (and of synthetic data).
        keep_float: regexes (``re.search``) of layer / node names to leave in float; refused on
            targets without float fallback. TFLite matches tensor names (they carry the Keras
            layer path, e.g. ``functional/fc_1/MatMul``), ONNX matches node names.
        out: output directory; ``OUT/<target>/`` per target plus ``OUT/report.*``.
        force: replace an existing, non-empty ``out`` that holds earlier edgeopt output.
        allow_synthetic: calibrate on seeded random data when ``calib`` is None (marked loudly).
        trust_model: let Keras deserialize Python code (Lambda layers) from the model file.
        progress: called with one human line per step.
        preprocessing: how raw calibration data becomes model input (images especially).
        latency_runs: timed runs per model for the float-vs-quantized latency.
        strict: raise ``StrictError`` (after writing everything) when a target would not run
            its whole graph on its accelerator: Edge TPU partition incomplete (or, when
            ``edgetpu_compiler`` is installed, ops it left on the CPU or a failed compile), ops
            the GPU delegate cannot run. The report's ``gates`` hold the per-artifact checks
            either way.
        rewrite: ``("edgetpu",)``: on Edge TPU targets, replace ONNX ops the Edge TPU lacks by
            exact compositions it maps (HardSwish -> x * relu6(x + 3) / 6, ...) and report
            the mapped-op count before and after; ONNX sources only.
        output_kinds: ``(output name or "*", kind)`` overrides of the inferred output kinds
            (``edgeopt.drift.parse_output_kinds``).
        layer_samples: samples the per-layer section of each artifact runs (0: no section).
        allow_invalid: do not raise ``ValidationFailed`` when an artifact fails validation or
            is degraded (the report says so either way).
        max_eval: measure drift on at most this many samples (a seeded subset); None: all
            (the CLI's default; the API keeps ``DEFAULT_MAX_EVAL`` for sweep / tune callers).
        input_shapes: ``{name: dims}`` or ``["name=1,224,224,3"]`` for the inputs' dynamic dims.
        keep_reference: keep the float references in ``OUT/<target>/reference/`` (None: when
            small, ``edgeopt.reference.AUTO_MAX_BYTES``).
        measure_memory: measure each artifact's peak working set in a child process.
        auto: ``edgeopt.tune.TuneOptions``: search each target's recipe space for the
            artifact that meets the accuracy budget (``edgeopt tune`` / ``convert --auto``);
            needs ``val``. Each target then gets one artifact per format, the chosen one,
            and its search record (``targets[].tune``, ``OUT/<target>/tune.json``) and the
            chosen recipes (``OUT/<target>/recipe.toml``).
        recipes: format -> ``edgeopt.recipes.Recipe`` (``--recipe FILE``, e.g. the
            ``recipe.toml`` a tune run wrote): build exactly these, one artifact per format
            in it, instead of the profile's defaults (``keep_float`` is added to them).

    Every target and format is attempted: a failure is a ``failed`` target or an
    ``ArtifactFailure`` of a ``partial`` one and the run goes on (``FAIL_FAST``).

    Returns:
        The report (also written to ``out/report.json``, ``.md`` and ``.html``).

    Raises:
        EdgeOptError: (subclasses) bad model, data, target, options or output directory, or
            nothing at all could be built. Nothing is left under ``out`` in that case.
        StrictError: ``strict`` and an accelerator check failed; ``out`` is complete and the
            exception's ``report`` holds the ``ConvertReport``.
        ValidationFailed: an artifact is broken (non-finite / absurd scales, NaN weights, NaN/inf
            outputs) or its drift cannot be trusted (constant float reference), unless
            ``allow_invalid``; ``out`` is complete, the targets say ``failed`` / ``degraded``.
    """
    say = progress or (lambda _msg: None)
    wanted = _formats(formats)
    patterns = _patterns(keep_float)
    method = _method(calib_method)
    check_numbers(latency_runs=latency_runs, num_calib=num_calib, seed=seed)
    if layer_samples < 0:
        raise OptionError(f"--layer-samples must be >= 0, got {layer_samples}")
    if max_eval is not None and (isinstance(max_eval, bool) or not isinstance(max_eval, int)
                                 or max_eval < 1):
        raise OptionError(f"--max-eval must be a whole number >= 1, got {max_eval!r}")
    if auto is not None:
        _check_auto(val, calib, allow_synthetic)
        if recipes:
            raise OptionError("--recipe builds a given recipe and --auto searches for one: "
                              "use one of them")
    profiles = _profiles(targets)
    out = Path(out)
    rewrites = _rewrites(rewrite)
    if auto is not None and rewrites:
        raise OptionError("--rewrite is not supported with --auto / edgeopt tune yet: tune "
                          "candidates are built without graph rewrites; drop --rewrite")
    opts = _RunOptions(
        wanted=wanted, patterns=patterns, method=method, calib_method=calib_method,
        num_calib=num_calib, seed=seed, allow_synthetic=allow_synthetic,
        trust_model=trust_model, preprocessing=preprocessing, latency_runs=latency_runs,
        strict=strict, max_eval=max_eval, input_shapes=input_shapes,
        keep_reference=keep_reference, measure_memory=measure_memory,
        rewrites=rewrites, auto=auto, recipes=recipes,
        output_kinds=tuple(output_kinds), layer_samples=layer_samples,
        allow_invalid=allow_invalid)
    with claim_output(out, force):  # OUT usable, and no other run writing it (lock file)
        return _convert_claimed(model, profiles, calib, val, out, say, opts)


@dataclass(frozen=True)
class _RunOptions:
    """The options of one ``convert`` call, checked."""

    wanted: set[str] | None
    patterns: tuple[re.Pattern[str], ...]
    method: CalibrationMethod | None
    calib_method: str | None
    num_calib: int | None
    seed: int
    allow_synthetic: bool
    trust_model: bool
    preprocessing: Preprocessing | None
    latency_runs: int
    strict: bool
    max_eval: int | None
    input_shapes: Mapping[str, Sequence[int]] | Sequence[str] | None
    keep_reference: bool | None
    measure_memory: bool
    rewrites: tuple[str, ...] = ()
    auto: Any = None  # edgeopt.tune.TuneOptions (--auto / edgeopt tune)
    recipes: Mapping[str, Any] | None = None  # --recipe FILE
    output_kinds: tuple[tuple[str, str], ...] = ()  # --output-kind overrides
    layer_samples: int = DEFAULT_LAYER_SAMPLES  # per-layer section samples (0: none)
    allow_invalid: bool = False  # --allow-invalid: no ValidationFailed

    def settings(self) -> dict[str, Any]:
        return {
            "formats": sorted(self.wanted) if self.wanted else "all",
            "calib_method": self.calib_method, "num_calib": self.num_calib, "seed": self.seed,
            "keep_float": [p.pattern for p in self.patterns], "latency_runs": self.latency_runs,
            "host_threads": HOST_THREADS, "strict": self.strict, "max_eval": self.max_eval,
            "keep_reference": _reference_policy(self.keep_reference),
            "measure_memory": self.measure_memory, "rewrite": list(self.rewrites),
            "layer_samples": self.layer_samples,
            "output_kinds": {k: v for k, v in self.output_kinds},
            "allow_invalid": self.allow_invalid,
            **({"auto": self.auto.to_dict()} if self.auto is not None else {}),
        }


def _reference_policy(keep: bool | None) -> str:
    return "auto" if keep is None else "always" if keep else "never"


def _convert_claimed(model: str | Path, profiles: list[TargetProfile], calib: str | Path | None,
                     val: str | Path | None, out: Path, say: Progress,
                     opts: _RunOptions) -> ConvertReport:
    """``convert`` once OUT is claimed: load, plan, check the data, build, swap into place."""
    say(f"loading {model}")
    source = load_source(model, trust_model=opts.trust_model)
    if opts.rewrites and source.format != "onnx":
        raise OptionError(
            f"--rewrite {opts.rewrites[0]} rewrites ONNX graphs (PyTorch exports) before "
            f"onnx2tf; {model} is a {source.format} model: drop --rewrite (for Keras "
            "MobileNetV3, minimalistic=True avoids HARD_SWISH)"
        )
    inputs = _input_specs(source, opts.input_shapes)
    plans, refused = _plans(source, profiles, opts)
    if opts.recipes:
        plans = [_with_recipes(p, opts.recipes, opts.patterns) for p in plans]
    say("checking calibration data")
    calib_src = open_calibration(
        calib, inputs, num=opts.num_calib, seed=opts.seed,
        preprocessing=opts.preprocessing, allow_synthetic=opts.allow_synthetic,
    )
    for w in calib_src.warnings:
        progress.warn(f"calibration: {w}")
    # The evaluation samples follow the one selection rule (edgeopt.evaluate.EvalData), so
    # `edgeopt compare --data` on the same data, --num, --seed and --max-eval measures the
    # same samples.
    data_path = val if val is not None else calib
    eval_spec = EvalData(
        None if data_path is None else str(data_path),
        num=None if val is not None else opts.num_calib, seed=opts.seed,
        max_samples=opts.max_eval, preprocessing=opts.preprocessing,
        allow_synthetic=val is None and opts.allow_synthetic,
        role="validation" if val is not None else "calibration",
    )
    samples = eval_spec.open(inputs, reuse=calib_src if val is None else None)
    if val is not None:
        for w in samples.source.warnings:
            progress.warn(f"validation: {w}")
    for plan in plans:
        plan.shapes = _target_shapes(source, plan.profile, calib_src, inputs)
    started = time.perf_counter()
    with Staging(out) as stage:
        stage.need(source_bytes(source), "the float model is copied once per format")
        work = stage.path(WORK_DIR)
        work.mkdir()

        def step(message: str) -> None:
            stage.check()  # stop at the next step when a library swallowed Ctrl-C
            say(message)

        ctx = _Context(
            source, calib_src, samples, opts.method, opts.patterns, work, step,
            opts.latency_runs, out, stage.path(), stage.check, opts.keep_reference,
            opts.measure_memory, opts.rewrites,
            output_kinds=opts.output_kinds, layer_samples=opts.layer_samples,
        )
        results: list[tuple[TargetResult, EdgeOptError | None]] = [
            refused.get(i, (None, None)) for i in range(len(profiles))]  # type: ignore[misc]
        errors: list[EdgeOptError] = [e for _t, e in refused.values()]
        tuner = _tuner(opts, plans, ctx, eval_spec, calib, say)
        with tuner if tuner is not None else contextlib.nullcontext():
            for plan in plans:
                if tuner is not None:
                    if tuner.stopped:  # Ctrl-C ended an earlier target's search
                        results[_index(profiles, plan.profile)] = (_not_tuned(plan), None)
                        continue
                    _tune_plan(tuner, plan, ctx, stage)
                target, error = _attempt_target(ctx, plan, stage.path(plan.profile.name))
                results[_index(profiles, plan.profile)] = (target, error)
                if error is not None:
                    errors.append(error)
                    if FAIL_FAST:
                        raise error
        targets = [t for t, _e in results]
        if not any(t.artifacts for t in targets):
            raise _nothing_built(errors)
        by_name = {p.name: p for p in profiles}
        gates = accelerators.accelerator_gates(
            [(a.to_dict(), accelerators.for_target(by_name[t.name], a.format))
             for t in targets for a in t.artifacts], opts.strict)
        gates = _with_memory_gates(gates, targets, by_name)
        record = _result(ctx, targets, gates, started, settings=opts.settings())
        report = ConvertReport(record, out)
        from .report import write_report

        step("writing report")
        write_report(report.data, stage.path())
        stage.commit(drop=(WORK_DIR,))
    if record.invalid_targets and not opts.allow_invalid:
        from .validation import ValidationFailed

        raise ValidationFailed(_invalid_message(record), report)
    if opts.strict and not gates.passed:
        raise StrictError(accelerators.strict_message(gates), report)
    return report


def _invalid_message(record: ConvertResult) -> str:
    parts = [f"{t.name}: {t.status.value}: {t.error}" for t in record.invalid_targets]
    return ("artifact validation: " + "; ".join(parts)
            + " (the report and artifacts are written; --allow-invalid exits 0)")


def _index(profiles: list[TargetProfile], profile: TargetProfile) -> int:
    return next(i for i, p in enumerate(profiles) if p is profile)


def _plans(source: ModelSource, profiles: list[TargetProfile], opts: _RunOptions,
           ) -> tuple[list[_Plan], dict[int, tuple[TargetResult, EdgeOptError]]]:
    """A plan per target that can take this source; a ``failed`` record for each that cannot
    (keyed by the target's position, so the report keeps the command line's order)."""
    plans, refused = [], {}
    for i, profile in enumerate(profiles):
        try:
            plans.append(_plan(source, profile, opts.wanted, opts.patterns))
        except EdgeOptError as exc:
            if FAIL_FAST:
                raise
            refused[i] = (TargetResult.failed(
                profile.name, profile.description, _profile_path(profile), str(exc),
                error_type=type(exc).__name__), exc)
    if not plans:
        raise _nothing_built([e for _t, e in refused.values()])
    for record, exc in refused.values():  # the others go on; say so now, not only at the end
        progress.info(f"{record.name}: FAILED ({type(exc).__name__}): {exc}")
    return plans, refused


def _nothing_built(errors: list[EdgeOptError]) -> EdgeOptError:
    """The error of a run that produced no artifact at all: the first one (its own type, so
    the message and exit code are those of the cause), naming the others."""
    flat = [e for err in errors
            for e in (err.errors if isinstance(err, _FormatsFailed) else (err,))]
    first = flat[0] if flat else EdgeOptError("no artifact could be built")
    if len(flat) <= 1:
        return first
    err = copy.copy(first)
    err.args = (f"{first} (nothing could be built; also: "
                f"{'; '.join(str(e) for e in flat[1:])})",)
    return err


def _with_memory_gates(gates: Gates, targets: list[TargetResult],
                       profiles: Mapping[str, TargetProfile]) -> Gates:
    """Add a ``memory_budget`` gate per artifact of a target whose profile sets
    ``memory_budget_mb`` (binding: a failed budget makes the CLI exit 1 without --strict)."""
    from .memory import MemoryHeadline, budget_gate
    from .results import GateResult

    extra = []
    for t in targets:
        budget = profiles[t.name].memory_budget_mb
        if budget is None:
            continue
        for a in t.artifacts:
            headline = (MemoryHeadline.from_dict(a.memory) if a.memory is not None else
                        MemoryHeadline(None, None, None, "", error="memory not measured "
                                       "(measure_memory=False)"))
            extra.append(GateResult.from_dict(budget_gate(headline, budget, t.name, a.file)))
    if not extra:
        return gates
    return replace(gates, results=gates.results + tuple(extra))


# ------------------------------------------------------------------------------ options / plan


def _formats(formats: str | Sequence[str]) -> set[str] | None:
    """None for "all", else the set of requested format names."""
    items = [formats] if isinstance(formats, str) else list(formats)
    if "all" in items:
        return None
    allowed = {f.value for f in Format}
    bad = [f for f in items if f not in allowed]
    if bad or not items:
        raise OptionError(f"unknown format {', '.join(map(repr, bad)) or '(none)'}; "
                          f"use tflite, onnx or all")
    return set(items)


def _patterns(keep_float: Iterable[str]) -> tuple[re.Pattern[str], ...]:
    out = []
    for text in keep_float:
        try:
            out.append(re.compile(text))
        except re.error as exc:
            raise OptionError(
                f"--keep-float {text!r} is not a valid regular expression: {exc}"
            ) from None
    return tuple(out)


def _rewrites(names: Iterable[str]) -> tuple[str, ...]:
    from .backends.onnx2tf import REWRITES

    found = tuple(dict.fromkeys(names))
    bad = [n for n in found if n not in REWRITES]
    if bad:
        raise OptionError(f"unknown --rewrite {bad[0]!r}; use one of {', '.join(REWRITES)}")
    return found


def _method(name: str | None) -> CalibrationMethod | None:
    if name is None:
        return None
    try:
        return CalibrationMethod(name)
    except ValueError:
        allowed = ", ".join(m.value for m in CalibrationMethod)
        raise OptionError(f"unknown calibration method {name!r}; use one of {allowed}") from None


def _profiles(targets: str | Sequence[str]) -> list[TargetProfile]:
    names = [targets] if isinstance(targets, str) else list(targets)
    if not names:
        raise OptionError("no target given; pass --target NAME (see `edgeopt targets list`)")
    profiles = [load_target(n) for n in names]
    seen: set[str] = set()
    for p in profiles:
        if p.name in seen:
            raise OptionError(f"target {p.name!r} given twice; each target writes OUT/{p.name}/")
        seen.add(p.name)
    return profiles


def _plan(
    source: ModelSource, profile: TargetProfile, wanted: set[str] | None,
    patterns: tuple[re.Pattern[str], ...],
) -> _Plan:
    """Which backend / precision pairs ``profile`` gets from ``source``.

    Raises:
        TargetError: the target cannot produce any requested format from this source, or
            ``--keep-float`` on a target without float fallback.
    """
    if patterns and not profile.quantization.float_fallback:
        raise TargetError(
            f"target {profile.name!r} allows no float ops (quantization.float_fallback = "
            "false), so --keep-float cannot apply; drop --keep-float or use a target with "
            "float fallback (e.g. arm-cpu)"
        )
    allowed = [f.value for f in profile.formats]
    if wanted is not None:
        missing = sorted(wanted - set(allowed))
        if missing and not wanted & set(allowed):
            raise TargetError(
                f"target {profile.name!r} produces {', '.join(allowed)} only, not "
                f"{', '.join(missing)}; drop --format or choose another target"
            )
        allowed = [f for f in allowed if f in wanted]
    jobs, skipped, reasons = [], [], []
    for fmt in allowed:
        backend = get_backend(fmt)
        why = backend.refuses(source)
        if why:
            skipped.append(f"{fmt}: {why}")
            reasons.append(why)
            continue
        jobs += [_Job(backend, p) for p in backend.precisions(profile)]
    if not jobs:
        raise TargetError(f"target {profile.name!r} ({', '.join(allowed)}): {reasons[0]}")
    if wanted is not None and skipped:
        raise TargetError(f"target {profile.name!r}: {skipped[0]}")
    return _Plan(profile, jobs, skipped)


def _input_specs(source: ModelSource,
                 input_shapes: Mapping[str, Sequence[int]] | Sequence[str] | None,
                 ) -> list[TensorSpec]:
    """The source's inputs with ``--input-shape`` applied (data is checked against these).

    Raises:
        InputError: an unknown input, a rank that differs, a fixed dim contradicted.
    """
    from edgeopt_runtime.spec import parse_input_shapes

    if not input_shapes:
        return list(source.inputs)
    items = ([f"{k}={','.join(str(d) for d in v)}" for k, v in input_shapes.items()]
             if isinstance(input_shapes, Mapping) else list(input_shapes))
    fixed = parse_input_shapes(items, source.inputs)
    return [replace(s, shape=fixed.get(s.name, s.shape)) for s in source.inputs]


def _target_shapes(
    source: ModelSource, profile: TargetProfile, calib: CalibrationSource,
    inputs: Sequence[TensorSpec] | None = None,
) -> Shapes:
    """Input shapes after ``--input-shape`` (``inputs``) and the target's shape rules.

    Batch-one / static targets get batch 1; static targets take any other dynamic dim from the
    first calibration sample (the data the model will really see).

    Raises:
        TargetError: a fixed batch > 1 on a batch-one target.
    """
    rules = profile.shapes
    first: dict[str, np.ndarray] | None = None
    shapes: Shapes = {}
    for spec in inputs if inputs is not None else source.inputs:
        dims = list(spec.shape)
        if dims and (rules.static or rules.batch_one):
            if dims[0] is None:
                dims[0] = 1
            elif dims[0] != 1 and rules.batch_one:
                raise TargetError(
                    f"input {spec.name!r} has a fixed batch of {dims[0]} but target "
                    f"{profile.name!r} runs batch 1 only; export the model with batch 1 or a "
                    "dynamic batch"
                )
        if rules.static and None in dims:
            first = first or next(iter(calib))
            seen = first[spec.name].shape
            dims = [s if d is None else d for d, s in zip(dims, seen, strict=True)]
        shapes[spec.name] = tuple(dims)
    return shapes


def _format_shapes(shapes: Shapes, fmt: str, calib: CalibrationSource,
                   ) -> tuple[Shapes, str | None]:
    """The shapes one format is built with, and a note when they differ from the target's.

    TFLite: dynamic dims other than the batch are fixed from the first calibration sample. A
    Keras model with dynamic height / width converts, but its TFLite model then cannot be
    run: XNNPACK fails to reshape (and the converter cannot calibrate) for the sizes it sees,
    measured on a conv net with (None, None, 3) inputs. ONNX Runtime runs dynamic dims, so
    the ONNX artifact keeps them.
    """
    if fmt != "tflite" or not any(None in dims[1:] for dims in shapes.values()):
        return shapes, None
    first = next(iter(calib))
    fixed: Shapes = {}
    changed = []
    for name, dims in shapes.items():
        seen = first[name].shape
        new = tuple(d if d is not None or i == 0 else int(seen[i]) for i, d in enumerate(dims))
        if new != dims:
            changed.append(f"{name} {_dims(dims)} -> {_dims(new)}")
        fixed[name] = new
    note = (f"TFLite: dynamic input dims fixed from the first calibration sample ("
            f"{'; '.join(changed)}): LiteRT/XNNPACK cannot run a model with dynamic height / "
            "width; pass --input-shape NAME=D0,D1,... to choose the size")
    return fixed, note


def _dims(dims: Sequence[int | None]) -> str:
    return "[" + ",".join("?" if d is None else str(d) for d in dims) + "]"


# ------------------------------------------------------------------------------ per target


def _attempt_target(
    ctx: _Context, plan: _Plan, tdir: Path
) -> tuple[TargetResult, EdgeOptError | None]:
    """Convert one target; a user-caused failure becomes a ``failed`` record (its folder is
    removed) and is returned beside it, so the caller decides whether the run goes on."""
    started = time.perf_counter()
    try:
        return _convert_target(ctx, plan, tdir), None
    except EdgeOptError as exc:
        shutil.rmtree(tdir, ignore_errors=True)
        exc = _public(ctx, exc)
        profile = plan.profile
        failures = exc.failures if isinstance(exc, _FormatsFailed) else ()
        error_type = failures[0].error_type if failures else type(exc).__name__
        if not failures:
            progress.info(f"{profile.name}: FAILED ({error_type}): {exc}")
        failed = TargetResult.failed(
            profile.name, profile.description, _profile_path(profile), str(exc),
            error_type=error_type, skipped=plan.skipped,
            wall_seconds=round(time.perf_counter() - started, 3), failures=failures,
        )
        return failed, exc


class _FormatsFailed(EdgeOptError):
    """Every format of a target failed: the failures, one per artifact."""

    def __init__(self, failures: Sequence[ArtifactFailure],
                 errors: Sequence[EdgeOptError]) -> None:
        super().__init__("; ".join(f"{f.format} {f.precision}: {f.error}" for f in failures))
        self.failures = tuple(failures)
        self.errors = tuple(errors)  # the original exceptions (public messages)


def _public(ctx: _Context, exc: EdgeOptError) -> EdgeOptError:
    """The same error, its message naming OUT (or the source) instead of the staging folder,
    whose name means nothing to the user and is gone after the run."""
    text = _public_text(ctx, str(exc))
    if text == str(exc):
        return exc
    err = copy.copy(exc)
    err.args = (text,)
    return err


def _public_text(ctx: _Context, text: str) -> str:
    work = str(ctx.work)
    if work in text:
        # a scratch file (float model, export) of this run: say what it was made from
        made = f"(a file converted from {ctx.source.path})"
        text = re.sub(re.escape(work) + r"/[^\s:'\"]*", made, text)
    return text.replace(str(ctx.stage), str(ctx.out))


def _profile_path(profile: TargetProfile) -> str | None:
    return None if profile.path is None else str(profile.path)


def _convert_target(ctx: _Context, plan: _Plan, tdir: Path) -> TargetResult:
    """Build, check and measure every artifact of one target; write its manifest.

    Each format / precision is attempted on its own: one that fails becomes an
    ``ArtifactFailure`` (its files removed) and the others go on.

    Raises:
        _FormatsFailed: every artifact of the target failed.
    """
    from .reference import Kept

    profile = plan.profile
    tdir.mkdir()
    started = time.perf_counter()
    artifacts: list[ArtifactResult] = []
    entries: list[ModelEntry] = []
    failures: list[ArtifactFailure] = []
    errors: list[EdgeOptError] = []
    kept = Kept(_reference_policy(ctx.keep_reference))
    for job in plan.jobs:
        name = f"model_{job.precision}{job.backend.extension}"
        try:
            art, new = _convert_job(ctx, plan, job, tdir, name, kept)
        except EdgeOptError as exc:
            if FAIL_FAST:
                raise
            exc = _public(ctx, exc)
            for leftover in tdir.glob(f"model_{job.precision}*{job.backend.extension}"):
                leftover.unlink(missing_ok=True)
            progress.info(f"{profile.name}/{name}: FAILED ({type(exc).__name__}): {exc}")
            failures.append(ArtifactFailure(name, job.backend.name, job.precision, str(exc),
                                            type(exc).__name__))
            errors.append(exc)
            continue
        artifacts.append(art)
        entries += new
    if not artifacts:
        if len(errors) == 1:
            raise errors[0]
        raise _FormatsFailed(failures, errors)
    artifacts = _with_memory(ctx, profile, tdir, artifacts)
    write_target_manifest(
        tdir, profile, entries,
        source={"path": str(ctx.source.path), "format": ctx.source.format,
                "sha256": ctx.source.sha256},
        calibration={**ctx.calib.to_manifest(),
                     "method": (ctx.method or profile.quantization.calibration_method).value,
                     # what each calibrated model really used (TFLite: always min/max)
                     "methods": {a.file: a.calibration_method for a in artifacts
                                 if a.calibration_method}},
        preprocessing=ctx.calib.preprocessing,
        tools=_tools(),
        reference=kept.write(tdir),
    )
    if plan.tune is not None:
        _write_tune_record(tdir, plan.tune)
        _write_recipe_file(tdir, plan)
    rt.load(tdir, threads=HOST_THREADS)  # the artifact dir must load as shipped
    status, error = _validation_status(artifacts)
    if failures and status is Status.OK:
        status = Status.PARTIAL
    _, why_not = kept.decide()
    notes = (why_not,) if why_not else ()
    return TargetResult(
        name=profile.name, status=status, description=profile.description,
        profile_path=_profile_path(profile), directory=profile.name,
        artifacts=tuple(replace(a, notes=a.notes + notes)
                        for a in (_with_runtime(a, tdir, profile) for a in artifacts)),
        skipped=tuple(plan.skipped), input_shapes={k: list(v) for k, v in plan.shapes.items()},
        wall_seconds=round(time.perf_counter() - started, 3), failures=tuple(failures),
        tune=plan.tune, error=error, error_type="ValidationFailed" if error else None,
    )

def _validation_status(artifacts: Sequence[ArtifactResult]) -> tuple[Status, str | None]:
    """A target is as bad as its worst artifact's validation; the error names the artifact."""
    worst, error = Status.OK, None
    for a in artifacts:
        v = a.validation or {}
        status = Status(v.get("status", "ok"))
        if status is Status.FAILED or (status is Status.DEGRADED and worst is Status.OK):
            worst, error = status, f"{a.file}: {v.get('reason')}"
    return worst, error


def _convert_job(ctx: _Context, plan: _Plan, job: _Job, tdir: Path, name: str,
                 kept: Any) -> tuple[ArtifactResult, list[ModelEntry]]:
    """One artifact: build it, its float reference, measure, pre-flight, post-build step."""
    profile = plan.profile
    what = f"{profile.name}: {job.backend.name} {job.precision}"
    method = ctx.method or profile.quantization.calibration_method
    shapes, shape_note = _format_shapes(plan.shapes, job.backend.name, ctx.calib)
    ctx.check()
    if job.prebuilt is not None:  # the tuning loop's chosen candidate: already built
        ctx.say(f"{profile.name}: installing the tuned {job.backend.name} {job.precision}")
        built, seconds = _install(job, tdir / name)
        method = job.recipe.calibration_method
    else:
        ctx.say(f"{profile.name}: converting {job.backend.name} {job.precision}")
        calib = progress.Passes(ctx.calib, f"{what}: calibrating", ctx.calib.count)
        t0 = time.perf_counter()
        with progress.task(f"{what}: converting", unit="step"):
            built = job.backend.build(BuildRequest(
                source=ctx.source, profile=profile, precision=job.precision,
                input_shapes=shapes, workdir=ctx.work, out_path=tdir / name,
                calib=calib, calib_method=method, keep_float=ctx.keep_float,
                rewrites=ctx.rewrites, recipe=job.recipe,
            ))
        seconds = round(time.perf_counter() - t0, 3)
    # ONNX sources through onnx2tf: the checked float TFLite the artifact was made from
    float_path = built.float_path
    if float_path is None:
        with progress.task(f"{what}: float reference", unit="step"):
            float_path = job.backend.build_float(ctx.source, shapes, ctx.work)
    ctx.say(f"{profile.name}: measuring {name} against the float model")
    accel = accelerators.for_target(profile, built.format)
    art, entry, prediction = _measure(ctx, profile, accel, built, float_path,
                                      seconds, _used_method(job, method))
    if shape_note:
        art = replace(art, notes=(shape_note, *art.notes))
    entries = [entry]
    post = accel.post_build
    if post is not None and post.applies(built.format, built.precision):
        ctx.say(f"{profile.name}: {post.progress(built.path)}")
        outcome = post.run(built.path, tdir, entry, prediction)
        art = replace(art, post_build=outcome.block, post_build_key=post.key,
                      notes=art.notes + ((outcome.note,) if outcome.note else ()))
        entries += [outcome.entry] if outcome.entry is not None else []
    kept.add(built.format, float_path, art.float_sha256, name)
    return art, entries


def _with_memory(ctx: _Context, profile: TargetProfile, tdir: Path,
                 artifacts: list[ArtifactResult]) -> list[ArtifactResult]:
    """Each artifact's memory headline, measured through the runtime in child processes."""
    if not ctx.measure_memory:
        return artifacts
    from .memory import measure

    shapes = {k: v.shape for k, v in ctx.samples.first().items()}
    with progress.task(f"{profile.name}: measuring memory", len(artifacts), unit="model") as step:
        heads = measure([(tdir / a.file, a.format, shapes) for a in artifacts], step.update)
    out = []
    for art, head in zip(artifacts, heads, strict=True):
        notes = art.notes
        if head.error:
            notes += (f"memory not measured: {_public_text(ctx, head.error)}",)
        out.append(replace(art, memory=head.to_dict(), notes=notes))
    return out


# ------------------------------------------------------------------------------ --auto


def _check_auto(val: str | Path | None, calib: str | Path | None,
                allow_synthetic: bool) -> None:
    """Tuning measures candidates on held-out data: it needs --val (and real --calib)."""
    if val is None:
        raise OptionError("tuning needs validation data: pass --val (a labelled .npz for "
                          "--max-drop); candidates are judged on it, not on the calibration "
                          "samples they were calibrated with")
    if calib is None or allow_synthetic:
        raise OptionError("tuning needs real calibration data: pass --calib (synthetic "
                          "calibration would tune for random inputs)")


def _tuner(opts: _RunOptions, plans: list[_Plan], ctx: _Context, data: EvalData,
           calib: str | Path | None, say: Progress) -> Any:
    """The tuning run of ``opts.auto`` (``edgeopt.tune.driver.TuneRun``), or None without it."""
    if opts.auto is None:
        return None
    from .tune.candidate import SourceRef
    from .tune.driver import TuneRun

    ref = SourceRef(ctx.source.path, ctx.source.sha256, opts.trust_model,
                    None if calib is None else str(calib), opts.num_calib, opts.seed,
                    opts.preprocessing)
    searches = sum(len({j.backend.name for j in p.jobs}) for p in plans)
    return TuneRun(opts.auto, searches, ref, data, say=say)


def _tune_plan(tuner: Any, plan: _Plan, ctx: _Context, stage: Staging) -> None:
    """Replace the plan's jobs with the chosen candidate of each format; keep the records.

    Raises:
        Interrupted: Ctrl-C before any candidate was evaluated (nothing to write).
        TargetError: no candidate of any format could be built and evaluated.
    """
    backends = list({j.backend.name: j.backend for j in plan.jobs}.values())
    found = tuner.target(ctx.source, ctx.calib, ctx.samples, plan.profile, plan.shapes,
                         ctx.work, tuple(p.pattern for p in ctx.keep_float), backends)
    signum = signals.received() or signal.SIGINT
    if found.interrupted:  # write what was found; a second Ctrl-C still aborts
        stage.signum = None
        signals.note(None)
    if not found.choices:
        if found.interrupted:
            raise Interrupted(signum)
        raise TargetError(f"target {plan.profile.name!r}: tuning found no candidate that "
                          f"builds and runs ({'; '.join(found.errors)})")
    plan.jobs = [_Job(b, c.recipe.precision, c.recipe, c) for b, c in found.choices]
    plan.tune = tuple(found.records)


def _not_tuned(plan: _Plan) -> TargetResult:
    """A target whose search never started because Ctrl-C ended an earlier one."""
    p = plan.profile
    return TargetResult.failed(p.name, p.description, _profile_path(p),
                               "not tuned: interrupted (Ctrl-C) before this target's search "
                               "started", error_type="Interrupted", skipped=plan.skipped)


def _install(job: _Job, dest: Path) -> tuple[Built, float]:
    """Copy the chosen candidate's file into the target folder as its artifact."""
    cand = job.prebuilt
    shutil.copyfile(cand.path, dest)
    built = Built(dest, job.backend.name, job.precision, dict(cand.details), list(cand.notes))
    return built, float(cand.build_seconds)


def _with_recipes(plan: _Plan, recipes: Mapping[str, Any],
                  patterns: tuple[re.Pattern[str], ...]) -> _Plan:
    """``plan`` building the given recipes (``--recipe``), one job per format in both.

    Raises:
        TargetError: the target produces none of the recipe file's formats.
    """
    backends = {j.backend.name: j.backend for j in plan.jobs}
    extra = tuple(p.pattern for p in patterns)
    jobs = [_Job(backends[fmt], r.precision, r.with_keep_float(extra) if extra else r)
            for fmt, r in recipes.items() if fmt in backends]
    if not jobs:
        raise TargetError(f"target {plan.profile.name!r} builds {', '.join(backends)} here, "
                          f"the recipe file has {', '.join(recipes)} only")
    skipped = list(plan.skipped) + [f"{fmt}: not in the recipe file" for fmt in backends
                                    if fmt not in recipes]
    return _Plan(plan.profile, jobs, skipped, plan.shapes)


def _write_recipe_file(tdir: Path, plan: _Plan) -> None:
    """``OUT/<target>/recipe.toml``: the chosen recipe per format, for ``convert --recipe``."""
    from .recipes.file import write

    chosen = {j.backend.name: j.recipe for j in plan.jobs if j.recipe is not None}
    if chosen:
        write(tdir / "recipe.toml", chosen, header=(
            f"The recipe(s) `edgeopt tune` chose for target {plan.profile.name}.\n"
            f"Rebuild: edgeopt convert MODEL --target {plan.profile.name} --calib CALIB "
            f"--recipe {plan.profile.name}/recipe.toml"))


def _write_tune_record(tdir: Path, records: tuple[dict[str, Any], ...]) -> None:
    """``OUT/<target>/tune.json``: every candidate tried, per format (report.json has it too)."""
    from .report import dumps

    (tdir / "tune.json").write_text(dumps({"schema": "edgeopt.tune/1", "searches":
                                           list(records)}), encoding="utf-8")


def _with_runtime(art: ArtifactResult, tdir: Path, profile: TargetProfile) -> ArtifactResult:
    """Load the artifact as the runtime would on this host and keep what it says.

    The latency numbers were taken on this host's CPU; when the target's accelerator is not
    here (no GPU delegate, no libedgetpu) the runtime says so in ``Model.notes``.
    """
    model = ModelRef(tdir, threads=HOST_THREADS, format=art.format,
                     precision=art.precision).load()
    notes = list(model.notes)
    accel = accelerators.for_target(profile, art.format)
    if not notes and accelerators.runs_on_host_cpu(model.delegate):
        # the runtime says nothing when, e.g., there is no compiled model to prefer
        note = accel.host_note(model.delegate)
        notes += [note] if note else []
    runtime = RuntimeInfo(
        target_delegate=accel.name,
        host_delegate=model.delegate, host_backend=model.backend,
        loaded_file=model.path.name, notes=tuple(notes),
    )
    ev = art.evaluation
    if ev.latency is not None:
        ev = replace(ev, latency=replace(ev.latency, host_notes=tuple(notes)))
    return replace(art, runtime=runtime, evaluation=ev,
                   notes=art.notes + tuple(n for n in notes if n not in art.notes))


def _used_method(job: _Job, method: CalibrationMethod) -> str | None:
    if job.precision not in (Scheme.INT8.value, Scheme.INT16X8.value):
        return None
    return method.value if job.backend.name == "onnx" else "minmax"


def _in_source_layout(
    entry: ModelEntry, quant: rt.Model, ref: rt.Model, layouts: dict[str, Any]
) -> tuple[ModelEntry, rt.Model, rt.Model]:
    """The manifest entry with each converted tensor's ``layout``, and both models fed and
    read in the source's layout (``edgeopt_runtime.layout``)."""
    from edgeopt_runtime.layout import IOLayouts, annotate

    entry = replace(entry, inputs=annotate(entry.inputs, layouts.get("inputs") or {}),
                    outputs=annotate(entry.outputs, layouts.get("outputs") or {}))
    wrapped = [m.with_layouts(IOLayouts.from_dict(layouts, m.inputs, m.outputs))
               for m in (quant, ref)]
    return entry, wrapped[0], wrapped[1]


def _measure(
    ctx: _Context, profile: TargetProfile, accel: Accelerator, built: Built, float_path: Path,
    seconds: float, calibration_method: str | None,
) -> tuple[ArtifactResult, ModelEntry, dict[str, Any] | None]:
    """Record and manifest entry of one artifact: size, drift, latency, pre-flight.

    Returns:
        (the artifact record without its runtime block, the manifest entry, the full
        pre-flight result or None when it failed).
    """
    quant = _load_built(ctx, built.path, built.format)
    ref_model = _load_built(ctx, float_path, built.format)
    entry = model_entry(built.path, built.format, built.precision, quant)
    layouts = built.details.get("layouts")
    if layouts and (layouts.get("inputs") or layouts.get("outputs")):
        # converted from NCHW (onnx2tf): the manifest says how, and both models are fed and
        # compared in the source's layout, as apps will use them
        entry, quant, ref_model = _in_source_layout(entry, quant, ref_model, layouts)
    evaluation: Evaluation = evaluate(
        ref_model, quant, ctx.samples,
        options=EvalOptions(latency_runs=ctx.latency_runs, output_kinds=ctx.output_kinds),
        data_warnings=False, label=f"{profile.name}: {built.format} {built.precision}",
    )
    notes = list(built.notes) + list(evaluation.notes)
    per_layer = _layers_section(ctx, built, float_path)
    checked = _validate(built, evaluation, per_layer)
    if checked["status"] != "ok":
        notes.append(f"validation {checked['status']}: {checked['reason']}")
    if built.details.get("keep_float_unmatched"):
        notes.append(f"--keep-float {built.details['keep_float_unmatched']} matched no "
                     f"{'tensor' if built.format == 'tflite' else 'node'} name in this model")
    shown = f"{profile.name}/{built.path.name}"
    prediction = _preflight(built.path, profile, accel)
    art = ArtifactResult(
        target=profile.name, file=built.path.name, path=shown, format=built.format,
        precision=built.precision, sha256=entry.sha256, size_bytes=entry.size_bytes,
        float_size_bytes=float_path.stat().st_size, float_sha256=sha256_file(float_path),
        io={"inputs": entry.inputs, "outputs": entry.outputs}, evaluation=evaluation,
        details=built.details,
        preflight=accelerators.compact_preflight(prediction, str(ctx.out / shown),
                                                 str(_target_arg(profile))),
        calibration_method=calibration_method, conversion_seconds=seconds,
        notes=tuple(notes), validation=checked, per_layer=per_layer,
    )
    return art, entry, (prediction if "summary" in prediction else None)


def _layers_section(ctx: _Context, built: Built, float_path: Path) -> dict[str, Any] | None:
    """The bounded per-layer section of one artifact (``edgeopt.layers``) on the first
    ``layer_samples`` evaluation samples; a failure is said in the section, never raised."""
    import itertools

    from . import layers

    if ctx.layer_samples <= 0:
        return None
    if built.precision == "float32":
        return layers.unavailable("float32 artifact: nothing is quantized")
    layouts = built.details.get("layouts") or {}
    if layouts.get("inputs") or layouts.get("outputs"):
        return layers.unavailable("converted from NCHW by onnx2tf: the samples are in the "
                                  "source's layout, the TFLite pair in NHWC (not matched yet)")
    ctx.say(f"per-layer analysis of {built.path.name} ({ctx.layer_samples} samples)")
    try:
        samples = list(itertools.islice(ctx.samples, ctx.layer_samples))
        section = layers.layer_report(float_path, built.path, samples)
    except EdgeOptError as exc:
        return layers.unavailable(str(exc))
    except Exception as exc:  # a diagnostic must not sink the conversion; say why it failed
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        return layers.unavailable(f"{type(exc).__name__}: {first}")
    return layers.bounded(section)


def _validate(built: Built, evaluation: Evaluation,
              per_layer: dict[str, Any] | None) -> dict[str, Any]:
    """``edgeopt.validation`` of the file and the validation run, as the report block."""
    from .layers import first_nonfinite
    from .validation import validate

    where = first_nonfinite(per_layer) if per_layer and per_layer.get("available") else None
    return validate(built.path, evaluation.drift, first_nonfinite=where).to_dict()


def _load_built(ctx: _Context, path: Path, fmt: str) -> rt.Model:
    """Load a model this run just built. The runtime's checks were written for files from
    outside; when one refuses a file the converter itself produced, the converter made a model
    the runtime cannot take (a degenerate graph, unsupported tensor types), not a damaged file,
    and the message says so and names the source, not the staging path.

    Raises:
        UnsupportedOpError: the runtime refused the produced model.
    """
    from edgeopt_runtime.errors import ModelLoadError, UnsupportedOpError

    try:
        return ModelRef.host_cpu(path).load()
    except ModelLoadError as exc:
        why = str(exc)
        for prefix in (f"{path}: ", f"{path.name}: "):
            why = why.removeprefix(prefix)
        why = why.replace("corrupt TFLite model: ", "").replace("corrupt TFLite model", "")
        why = _public_text(ctx, why).strip(" :()") or type(exc).__name__
        progress.log(f"the runtime refused {path.name} (built from {ctx.source.path}): {exc}")
        tool = "TFLite converter" if fmt == "tflite" else "ONNX exporter / quantizer"
        raise UnsupportedOpError(
            f"{ctx.source.path}: the {tool} produced a {fmt} model that edgeopt_runtime cannot "
            f"load ({why}); this is a conversion problem with this model, not a damaged file: "
            "try another --format, or simplify the layers named above") from None


def _target_arg(profile: TargetProfile) -> str:
    """How a user names ``profile`` on the command line: built-in name, else its TOML path."""
    builtin = profile.path is None or Path(profile.path).parent == builtin_dir()
    return profile.name if builtin else str(profile.path)


def _preflight(path: Path, profile: TargetProfile, accel: Accelerator) -> dict[str, Any]:
    """The full pre-flight result of the produced file (``edgeopt.inspect/1``), or
    ``{"error": ...}`` when the analysis refused the file."""
    from .inspect import preflight

    try:
        return preflight(path, profile, accel)
    except EdgeOptError as exc:
        return {"error": str(exc)}


def _tools() -> dict[str, Any]:
    from .results import tool_versions

    return tool_versions()


# ------------------------------------------------------------------------------ report


def _result(
    ctx: _Context, targets: list[TargetResult], gates: Gates, started: float,
    settings: dict[str, Any],
) -> ConvertResult:
    src, calib, samples = ctx.source, ctx.calib, ctx.samples
    validation = samples.spec.role == "validation"
    notes = []
    if calib.synthetic:
        notes.append(
            "WARNING: SYNTHETIC CALIBRATION — calibrated on seeded random data "
            "(--allow-synthetic), not real inputs: quantization ranges and every drift number "
            "below do not reflect real data. Do not ship these artifacts."
        )
    notes += [f"calibration: {w}" for w in calib.warnings]
    if validation:
        notes += [f"validation: {w}" for w in samples.source.warnings]
    notes += list(src.notes)
    for t in targets:
        if t.status is Status.FAILED and not t.failures:
            notes.append(f"{t.name}: FAILED ({t.error_type}): {t.error}")
        notes += [f"{t.name}/{f.file}: FAILED ({f.error_type}): {f.error}" for f in t.failures]
        notes += [f"{t.name}: skipped {s}" for s in t.skipped]
        for a in t.artifacts:
            notes += [f"{t.name}/{a.file}: {n}" for n in a.notes]
            summary = a.preflight.get("summary") or {}
            if summary.get("fully_delegated") is False and summary.get("verdict"):
                notes.append(f"{t.name}/{a.file}: pre-flight: {summary['verdict']}")
    return ConvertResult(
        header=ReportHeader.now("convert"),
        source=src.to_dict(),
        source_model=ModelInfo(path=str(src.path), format=src.format, precision="float32",
                               size_bytes=_size_of(src.path), sha256=src.sha256,
                               inputs=tuple(s.to_dict() for s in src.inputs),
                               outputs=tuple(s.to_dict() for s in src.outputs)),
        calibration={**calib.to_manifest(), "warnings": list(calib.warnings),
                     "ranges": {k: list(v) for k, v in calib.ranges.items()},
                     "statistics": calib.stats_dict()},
        data=samples.info(warnings=False),
        settings=settings,
        targets=tuple(targets),
        gates=gates,
        notes=tuple(notes),
        synthetic_calibration=calib.synthetic,
        wall_seconds=round(time.perf_counter() - started, 3),
    )


def _size_of(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


class _CallableModule(types.ModuleType):
    """Lets ``edgeopt.convert(...)`` call the pipeline even when the attribute is this module."""

    def __call__(self, *args: Any, **kwargs: Any) -> ConvertReport:
        return convert(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
