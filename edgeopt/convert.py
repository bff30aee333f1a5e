"""The conversion pipeline: ``edgeopt.convert(model, targets, calib, ...) -> ConvertReport``.

Order of work, cheapest refusals first: options and target profiles, the output directory, the
source model, the plan (which formats and precisions each target gets), the calibration data
(shapes, dtypes and values checked by ``open_calibration``) — all before the first conversion.
Then, inside a staging folder next to ``OUT``, per target: build each artifact, load it through
``edgeopt_runtime`` (the IO spec with scale / zero point in the manifest comes from the produced
file), measure drift and latency against the float model converted to the same format and run
through the same runtime path, run the target's pre-flight analysis on it (and, for the Edge
TPU, ``edgetpu_compiler`` when installed: see ``edgeopt.accelerator``), write
``manifest.json``; finally ``report.json`` / ``.md`` / ``.html`` and one rename into place.
With ``strict=True`` a target not fully on its accelerator raises ``StrictError`` afterwards.

Note: the module itself is callable (``edgeopt.convert(...)`` works even after
``import edgeopt.convert`` replaced the package attribute with this module).
"""

from __future__ import annotations

import re
import sys
import time
import types
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import edgeopt_runtime as rt
import numpy as np
from edgeopt_runtime.errors import EdgeOptError, TargetError
from edgeopt_runtime.manifest import ModelEntry, sha256_file
from edgeopt_runtime.profile import latency_stats

from . import accelerator as acc
from .accelerator import StrictError
from .artifact import model_entry, write_target_manifest
from .backends import Backend, BuildRequest, Built, Shapes, get_backend
from .calibration import CalibrationSource, Preprocessing, open_calibration
from .limits import OptionError, check_numbers
from .output import Staging, claim_output, source_bytes
from .sources import ModelSource, load_source
from .targets import (
    CalibrationMethod,
    Format,
    Scheme,
    TargetProfile,
    builtin_dir,
    load_target,
)

DEFAULT_LATENCY_RUNS = 50
LATENCY_WARMUP = 5
MAX_EVAL_SAMPLES = 256  # drift is measured on at most this many validation samples
HOST_THREADS = 1  # latency is measured single-threaded: stable on a shared host, comparable
WORK_DIR = "_work"  # scratch inside the staging folder (float models, exports); not shipped

Progress = Callable[[str], None]


@dataclass
class ConvertReport:
    """The result of ``convert``: the ``edgeopt.report/1`` document and where it was written."""

    data: dict[str, Any]
    out: Path

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


@dataclass
class _Plan:
    profile: TargetProfile
    jobs: list[_Job]
    skipped: list[str]
    shapes: Shapes = field(default_factory=dict)


@dataclass
class _Context:
    source: ModelSource
    calib: CalibrationSource
    evaluation: CalibrationSource
    method: CalibrationMethod | None
    keep_float: tuple[re.Pattern[str], ...]
    work: Path
    say: Progress
    latency_runs: int
    out: Path  # the final output folder (report paths and hints name it, not the staging one)


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

    Returns:
        The report (also written to ``out/report.json``, ``.md`` and ``.html``).

    Raises:
        EdgeOptError: (subclasses) bad model, data, target, options or output directory, or a
            conversion the target forbids. Nothing is left under ``out`` in that case.
        StrictError: ``strict`` and an accelerator check failed; ``out`` is complete and the
            exception's ``report`` holds the ``ConvertReport``.
    """
    say = progress or (lambda _msg: None)
    wanted = _formats(formats)
    patterns = _patterns(keep_float)
    method = _method(calib_method)
    check_numbers(latency_runs=latency_runs, num_calib=num_calib, seed=seed)
    profiles = _profiles(targets)
    out = Path(out)
    with claim_output(out, force):  # OUT usable, and no other run writing it (lock file)
        return _convert_claimed(
            model, profiles, calib, val=val, wanted=wanted, patterns=patterns, method=method,
            calib_method=calib_method, num_calib=num_calib, seed=seed, out=out,
            allow_synthetic=allow_synthetic, trust_model=trust_model, say=say,
            preprocessing=preprocessing, latency_runs=latency_runs, strict=strict,
        )


def _convert_claimed(
    model: str | Path, profiles: list[TargetProfile], calib: str | Path | None, *,
    val: str | Path | None, wanted: set[str] | None, patterns: tuple[re.Pattern[str], ...],
    method: CalibrationMethod | None, calib_method: str | None, num_calib: int | None,
    seed: int, out: Path, allow_synthetic: bool, trust_model: bool, say: Progress,
    preprocessing: Preprocessing | None, latency_runs: int, strict: bool,
) -> ConvertReport:
    """``convert`` once OUT is claimed: load, plan, check the data, build, swap into place."""
    say(f"loading {model}")
    source = load_source(model, trust_model=trust_model)
    plans = [_plan(source, p, wanted, patterns) for p in profiles]
    say("checking calibration data")
    calib_src = open_calibration(
        calib, list(source.inputs), num=num_calib, seed=seed,
        preprocessing=preprocessing, allow_synthetic=allow_synthetic,
    )
    eval_src = calib_src
    if val is not None:
        eval_src = open_calibration(
            val, list(source.inputs), num=MAX_EVAL_SAMPLES, seed=seed, preprocessing=preprocessing
        )
    for plan in plans:
        plan.shapes = _target_shapes(source, plan.profile, calib_src)
    started = time.perf_counter()
    with Staging(out) as stage:
        stage.need(source_bytes(source), "the float model is copied once per format")
        work = stage.path(WORK_DIR)
        work.mkdir()

        def step(message: str) -> None:
            stage.check()  # stop at the next step when a library swallowed Ctrl-C
            say(message)

        ctx = _Context(
            source, calib_src, eval_src, method, patterns, work, step, latency_runs, out
        )
        results = [_convert_target(ctx, plan, stage.path(plan.profile.name)) for plan in plans]
        report = _report(ctx, results, settings={
            "formats": sorted(wanted) if wanted else "all", "calib_method": calib_method,
            "num_calib": num_calib, "seed": seed, "keep_float": [p.pattern for p in patterns],
            "latency_runs": latency_runs, "host_threads": HOST_THREADS, "strict": strict,
        })
        report["gates"] = acc.accelerator_gates(results, strict)
        report["wall_seconds"] = round(time.perf_counter() - started, 3)
        from .report import write_report

        step("writing report")
        write_report(report, stage.path())
        stage.commit(drop=(WORK_DIR,))
    result = ConvertReport(report, out)
    if strict and not report["gates"]["passed"]:
        raise StrictError(acc.strict_message(report["gates"]), result)
    return result


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


def _target_shapes(
    source: ModelSource, profile: TargetProfile, calib: CalibrationSource
) -> Shapes:
    """Input shapes after the target's shape rules.

    Batch-one / static targets get batch 1; static targets take any other dynamic dim from the
    first calibration sample (the data the model will really see).

    Raises:
        TargetError: a fixed batch > 1 on a batch-one target.
    """
    rules = profile.shapes
    first: dict[str, np.ndarray] | None = None
    shapes: Shapes = {}
    for spec in source.inputs:
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


# ------------------------------------------------------------------------------ per target


def _convert_target(ctx: _Context, plan: _Plan, tdir: Path) -> dict[str, Any]:
    """Build, check and measure every artifact of one target; write its manifest."""
    profile = plan.profile
    tdir.mkdir()
    started = time.perf_counter()
    artifacts, entries = [], []
    for job in plan.jobs:
        name = f"model_{job.precision}{job.backend.extension}"
        ctx.say(f"{profile.name}: converting {job.backend.name} {job.precision}")
        method = ctx.method or profile.quantization.calibration_method
        t0 = time.perf_counter()
        built = job.backend.build(BuildRequest(
            source=ctx.source, profile=profile, precision=job.precision,
            input_shapes=plan.shapes, workdir=ctx.work, out_path=tdir / name,
            calib=ctx.calib, calib_method=method, keep_float=ctx.keep_float,
        ))
        seconds = time.perf_counter() - t0
        float_path = job.backend.build_float(ctx.source, plan.shapes, ctx.work)
        ctx.say(f"{profile.name}: measuring {name} against the float model")
        art, entry, prediction = _evaluate(ctx, profile, built, float_path)
        art["conversion_seconds"] = round(seconds, 3)
        art["calibration_method"] = _used_method(job, method)
        artifacts.append(art)
        entries.append(entry)
        if acc.wants_edgetpu_compile(profile.runtime.tflite_delegate.value, built.format,
                                     built.precision):
            ctx.say(f"{profile.name}: compiling {name} with edgetpu_compiler (if installed)")
            entries += _edgetpu_compile(art, entry, built.path, tdir, prediction)
    write_target_manifest(
        tdir, profile, entries,
        source={"path": str(ctx.source.path), "format": ctx.source.format,
                "sha256": ctx.source.sha256},
        calibration={**ctx.calib.to_manifest(),
                     "method": (ctx.method or profile.quantization.calibration_method).value,
                     # what each calibrated model really used (TFLite: always min/max)
                     "methods": {a["file"]: a["calibration_method"] for a in artifacts
                                 if a["calibration_method"]}},
        preprocessing=ctx.calib.preprocessing,
        tools=_tools(),
    )
    rt.load(tdir, threads=HOST_THREADS)  # the artifact dir must load as shipped
    for art in artifacts:
        _record_runtime(art, tdir, profile)
    return {
        "name": profile.name,
        "status": "ok",  # a failing target fails the whole run (nothing half-written)
        "error": None,
        "description": profile.description,
        "profile_path": profile.path,
        "directory": profile.name,
        "artifacts": artifacts,
        "skipped": plan.skipped,
        "input_shapes": {k: list(v) for k, v in plan.shapes.items()},
        "wall_seconds": round(time.perf_counter() - started, 3),
    }


def _edgetpu_compile(
    art: dict[str, Any], entry: ModelEntry, model: Path, tdir: Path,
    prediction: dict[str, Any] | None,
) -> list[ModelEntry]:
    """Compile the int8 model for the Edge TPU when the compiler is installed.

    The compiled ``*_edgetpu.tflite`` is listed after the plain model, so the plain model stays
    the manifest's default; the runtime picks the compiled one only where libedgetpu is present.

    Returns:
        The manifest entries to add (none when the compiler is missing or failed).
    """
    if prediction is None:  # pre-flight failed: nothing to compare with, still compile
        prediction = {"ops": [], "summary": {"verdict": "no prediction"}}
    block, compiled = acc.compile_edgetpu(model, tdir, prediction, shown_dir=tdir.name)
    art["edgetpu_compiler"] = block
    if block["status"] == "not_available":
        art["notes"].append(acc.COMPILER_MISSING)
        return []
    if compiled is None:
        art["notes"].append(f"edgetpu_compiler failed: {block.get('error')}")
        return []
    found, why = acc.compiled_entry(compiled, entry)
    if found is None:
        art["notes"].append(str(why))
        return []
    return [found]


def _record_runtime(art: dict[str, Any], tdir: Path, profile: TargetProfile) -> None:
    """Load the artifact as the runtime would on this host and keep what it says.

    The latency numbers were taken on this host's CPU; when the target's accelerator is not
    here (no GPU delegate, no libedgetpu) the runtime says so in ``Model.notes``.
    """
    from .backends._frameworks import stdout_to_stderr

    with stdout_to_stderr():
        model = rt.load(tdir, threads=HOST_THREADS, format=art["format"],
                        precision=art["precision"])
    notes = list(model.notes)
    wanted = profile.runtime.tflite_delegate.value if art["format"] == "tflite" else None
    on_cpu = model.delegate in ("xnnpack", "none")
    if wanted == "edgetpu" and on_cpu and not notes:
        # the runtime says nothing when there is no compiled model to prefer
        notes.append(f"no compiled *_edgetpu.tflite in this artifact: timings are host-CPU "
                     f"timings ({model.delegate}) of the uncompiled int8 model, not Edge TPU")
    elif wanted == "gpu" and on_cpu and not notes:
        notes.append(f"no GPU delegate on this host: timings are host-CPU timings "
                     f"({model.delegate}), not mobile GPU")
    art["runtime"] = {"target_delegate": wanted or (profile.runtime.onnx_providers or [None])[0],
                      "host_delegate": model.delegate, "host_backend": model.backend,
                      "loaded_file": model.path.name, "notes": notes}
    art["latency"]["host_notes"] = notes
    art["notes"] += [n for n in notes if n not in art["notes"]]


def _used_method(job: _Job, method: CalibrationMethod) -> str | None:
    if job.precision not in (Scheme.INT8.value, Scheme.INT16X8.value):
        return None
    return method.value if job.backend.name == "onnx" else "minmax"


def _host_load(path: Path) -> rt.Model:
    """Load for measuring on this host: CPU (XNNPACK for TFLite), fixed thread count."""
    from .backends._frameworks import stdout_to_stderr

    delegate = "xnnpack" if path.suffix == ".tflite" else None
    with stdout_to_stderr():  # LiteRT prints "INFO: Created ... XNNPACK delegate" on stderr
        return rt.load(path, threads=HOST_THREADS, delegate=delegate)


def _evaluate(
    ctx: _Context, profile: TargetProfile, built: Built, float_path: Path
) -> tuple[dict[str, Any], ModelEntry, dict[str, Any] | None]:
    """Report entry and manifest entry of one artifact: size, drift, latency, pre-flight.

    Returns:
        (report entry, manifest entry, the full pre-flight result or None when it failed).
    """
    from .drift import compare_outputs, task_metrics

    quant = _host_load(built.path)
    ref_model = _host_load(float_path)
    entry = model_entry(built.path, built.format, built.precision, quant)
    names = [s.name for s in quant.outputs]
    ref, cand = _run_outputs(ctx.evaluation, ref_model, quant, names)
    drift = compare_outputs(ref, cand, names)
    labels = ctx.evaluation.labels
    task = task_metrics(ref, cand, labels) if labels is not None else None
    feeds = next(iter(ctx.evaluation))
    latency = _latency_pair(ref_model, quant, feeds, ctx.latency_runs)
    size, float_size = entry.size_bytes, float_path.stat().st_size
    notes = list(built.notes)
    if built.details.get("keep_float_unmatched"):
        notes.append(f"--keep-float {built.details['keep_float_unmatched']} matched no "
                     f"{'tensor' if built.format == 'tflite' else 'node'} name in this model")
    shown = f"{profile.name}/{built.path.name}"
    prediction = _preflight(built.path, profile)
    target_arg = _target_arg(profile)
    art = {
        "target": profile.name,
        "file": built.path.name,
        "path": shown,
        "format": built.format,
        "precision": built.precision,
        "sha256": entry.sha256,
        "size_bytes": size,
        "float_size_bytes": float_size,
        "float_sha256": sha256_file(float_path),
        "size_ratio": round(size / float_size, 4),
        "io": {"inputs": entry.inputs, "outputs": entry.outputs},
        "latency": latency,
        "drift": drift,
        "details": built.details,
        "preflight": acc.compact_preflight(prediction, str(ctx.out / shown), str(target_arg)),
        "notes": notes,
    }
    if task is not None:
        art["task"] = task
    return art, entry, (prediction if "summary" in prediction else None)


def _run_outputs(
    data: CalibrationSource, ref_model: rt.Model, quant: rt.Model, names: list[str]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Outputs of the float and the quantized model on every sample, stacked per output."""
    ref: dict[str, list[np.ndarray]] = {n: [] for n in names}
    cand: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for sample in data:
        r, c = ref_model.run(sample), quant.run(sample)
        for i, n in enumerate(names):
            ref[n].append(r[n] if n in r else r[i])  # same names by construction; else order
            cand[n].append(c[n])
    return ([np.concatenate(ref[n]) for n in names], [np.concatenate(cand[n]) for n in names])


def _latency_pair(
    ref_model: rt.Model, quant: rt.Model, feeds: dict[str, np.ndarray], runs: int
) -> dict[str, Any]:
    """p50 etc. of the float and the quantized model, timed interleaved (run f, run q, ...)
    so that load from other processes hits both alike."""
    for _ in range(LATENCY_WARMUP):
        ref_model.run(feeds)
        quant.run(feeds)
    # Keys as in docs/report-schema.md: reference = the float model, candidate = the artifact.
    samples: dict[str, list[int]] = {"reference": [], "candidate": []}
    for _ in range(runs):
        for key, model in (("reference", ref_model), ("candidate", quant)):
            t0 = time.perf_counter_ns()
            model.run(feeds)
            samples[key].append(time.perf_counter_ns() - t0)
    result: dict[str, Any] = {k: latency_stats(v) for k, v in samples.items()}
    ref_p50, cand_p50 = result["reference"]["p50_ms"], result["candidate"]["p50_ms"]
    result["speedup_p50"] = round(ref_p50 / cand_p50, 3)
    result["threads"] = HOST_THREADS
    result["backend"] = quant.backend
    result["delegate"] = quant.delegate
    result["where"] = "this host's CPU (not the target device)"
    return result


def _target_arg(profile: TargetProfile) -> str:
    """How a user names ``profile`` on the command line: built-in name, else its TOML path."""
    builtin = profile.path is None or Path(profile.path).parent == builtin_dir()
    return profile.name if builtin else str(profile.path)


def _preflight(path: Path, profile: TargetProfile) -> dict[str, Any]:
    """The full pre-flight result of the produced file (``edgeopt.inspect/1``), or
    ``{"error": ...}`` when the analysis refused the file."""
    from .inspect import preflight

    try:
        return preflight(path, profile)
    except EdgeOptError as exc:
        return {"error": str(exc)}


def _tools() -> dict[str, Any]:
    from .report import tool_versions

    return tool_versions()


# ------------------------------------------------------------------------------ report


def _report(
    ctx: _Context, targets: list[dict[str, Any]], settings: dict[str, Any]
) -> dict[str, Any]:
    from .report import new_report

    report = new_report("convert")
    src = ctx.source
    calib, ev = ctx.calib, ctx.evaluation
    notes = []
    if calib.synthetic:
        notes.append(
            "WARNING: SYNTHETIC CALIBRATION — calibrated on seeded random data "
            "(--allow-synthetic), not real inputs: quantization ranges and every drift number "
            "below do not reflect real data. Do not ship these artifacts."
        )
    notes += [f"calibration: {w}" for w in calib.warnings]
    if ev is not calib:
        notes += [f"validation: {w}" for w in ev.warnings]
    notes += list(src.notes)
    for t in targets:
        notes += [f"{t['name']}: skipped {s}" for s in t["skipped"]]
        for a in t["artifacts"]:
            notes += [f"{t['name']}/{a['file']}: {n}" for n in a["notes"]]
            summary = (a.get("preflight") or {}).get("summary") or {}
            if summary.get("fully_delegated") is False and summary.get("verdict"):
                notes.append(f"{t['name']}/{a['file']}: pre-flight: {summary['verdict']}")
    report.update({
        "synthetic_calibration": calib.synthetic,
        "models": {"source": {
            "path": str(src.path), "format": src.format, "precision": "float32",
            "size_bytes": _size_of(src.path), "sha256": src.sha256,
        }},
        "source": src.to_dict(),
        "calibration": {**calib.to_manifest(), "warnings": list(calib.warnings),
                        "ranges": {k: list(v) for k, v in calib.ranges.items()}},
        "data": {
            "role": "validation" if ev is not calib else "calibration",
            "source": ev.source, "format": ev.format, "count": ev.count, "sha256": ev.sha256,
            "synthetic": ev.synthetic, "num": settings["num_calib"] if ev is calib else
            MAX_EVAL_SAMPLES, "seed": settings["seed"],
            "labels": {"source": ev.source, "count": int(len(ev.labels))}
            if ev.labels is not None else None,
            "warnings": [],
        },
        "settings": settings,
        "targets": targets,
        "notes": notes,
    })
    return report


def _size_of(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


class _CallableModule(types.ModuleType):
    """Lets ``edgeopt.convert(...)`` call the pipeline even when the attribute is this module."""

    def __call__(self, *args: Any, **kwargs: Any) -> ConvertReport:
        return convert(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
