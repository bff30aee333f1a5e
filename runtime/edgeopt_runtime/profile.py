"""``profile()``: load time, latency distribution, memory and per-op time of one model.

The result is a versioned JSON document (schema ``edgeopt.profile/1``, see ``ProfileResult``);
every memory figure states how it was measured, and per-op time says where it came from or why
the backend cannot give it.

Order of a profile, and why:
1. the backend library is imported first, so "RSS before load" and the load time describe the
   model, not the one-off import of LiteRT / ONNX Runtime (reported separately);
2. load (timed, RSS before/after, kernel peak during load);
3. first inference (timed on its own: it includes lazy allocations), then ``warmup`` untimed runs;
4. the timed runs, with a background RSS sampler and a reset kernel peak;
5. per-op time in a *separate* profiled ONNX Runtime session, so profiling never slows step 4.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import backends, memory
from .errors import EdgeOptError, InputError
from .feeds import FLOAT_RANGE, OTHER_INT_RANGE, random_feeds
from .host import host_info
from .memory import MemValue
from .model import Model, load
from .npz import read_npz

SCHEMA = "edgeopt.profile/1"
MAX_RUNS = 10_000_000  # a run count beyond this is a typo, not a benchmark
MAX_DURATION_S = 7 * 24 * 3600.0
MAX_WARMUP = 1_000_000
OP_PROFILE_RUNS = 20  # runs traced for per-op time (after 2 untraced warm-up runs)
_OP_PROFILE_WARMUP = 2

Progress = Callable[[str, int, int | None], None]  # (phase, done, total or None)


@dataclass
class ProfileResult:
    """The outcome of ``profile()``; ``to_dict()`` is the ``edgeopt.profile/1`` document.

    Sections: ``model``, ``runtime``, ``host``, ``inputs``, ``timing`` (import/load/first
    inference/warm-up), ``latency`` (stats in ms, throughput, raw samples), ``memory`` (each
    value ``{"bytes", "mib", "method"}``), ``op_profile`` and ``notes``.
    """

    model: dict[str, Any]
    runtime: dict[str, Any]
    host: dict[str, Any]
    inputs: dict[str, Any]
    timing: dict[str, Any]
    latency: dict[str, Any]
    memory: dict[str, Any]
    op_profile: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    created: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")  # noqa: UP017 (3.10)
    )

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready document (schema ``edgeopt.profile/1``)."""
        return {
            "schema": SCHEMA,
            "created": self.created,
            "model": self.model,
            "runtime": self.runtime,
            "host": self.host,
            "inputs": self.inputs,
            "timing": self.timing,
            "latency": self.latency,
            "memory": self.memory,
            "op_profile": self.op_profile,
            "notes": list(self.notes),
        }

    def to_json(self, indent: int | None = None) -> str:
        """``to_dict()`` as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent)


# -- public entry point ------------------------------------------------------------------------
def profile(
    model_or_path: Model | str | os.PathLike[str],
    *,
    runs: int = 100,
    duration: float | None = None,
    warmup: int = 10,
    threads: int | None = None,
    delegate: str | None = None,
    providers: list[str] | None = None,
    inputs: Mapping[str, np.ndarray] | str | os.PathLike[str] | None = None,
    seed: int = 0,
    op_profile: bool = True,
    progress: Progress | None = None,
    isolate: bool = False,
    input_shapes: Mapping[str, Sequence[int]] | Sequence[str] | None = None,
) -> ProfileResult:
    """Profile a model: load time, latency distribution, memory and per-op time.

    Args:
        model_or_path: a model file / artifact directory (load time is measured), or a loaded
            ``Model`` (no load time or RSS-before-load: the result says so).
        runs: timed runs (ignored when ``duration`` is given).
        duration: time budget in seconds for the timed runs instead of a run count.
        warmup: untimed runs after the (separately timed) first inference.
        threads / delegate / providers: passed to ``load`` (only with a path).
        inputs: ``{name: array}`` or a ``.npz`` path (keys = input names; any single key for
            single-input models). Default: seeded random data matching the input spec.
        seed: seed of the random inputs.
        op_profile: also measure per-op time (ONNX Runtime) / list the ops (TFLite).
        progress: called as ``progress(phase, done, total)`` while running.
        isolate: probe the model in a child process before loading it (``load(isolate=True)``);
            the probe's time is reported as ``timing.probe_ms``, not in ``load_ms``.
        input_shapes: shapes of the random inputs for dynamic dims (``{name: dims}`` or
            ``["name=1,224,224,3"]``; default: dynamic dims 1). With ``inputs`` given, unused.

    Returns:
        ``ProfileResult``.

    Raises:
        EdgeOptError: bad arguments; ModelLoadError / DelegateError from loading; InputError for
            inputs that do not match the model (the message names the ``.npz`` file).
    """
    _check_args(runs, duration, warmup, seed)
    notes: list[str] = []
    model, timing, mem = _load_measured(model_or_path, threads, delegate, providers, notes, isolate)
    feeds, inputs_info = _feeds(model, inputs, seed, input_shapes)
    source = inputs_info.get("path")
    timing["first_inference_ms"] = _ms(_timed_call(model, feeds, source))
    for i in range(warmup):
        model.run(feeds)
        _report(progress, "warmup", i + 1, warmup)
    timing["warmup_runs"] = warmup
    samples, wall_s, sampler = _timed_runs(model, feeds, runs, duration, progress)
    latency = latency_stats(samples, wall_s)
    latency["mode"] = "duration" if duration is not None else "runs"
    _memory_runs(mem, sampler, model)
    ops = _op_profile(model, feeds, op_profile, progress)
    notes = [*model.notes, *notes]
    return ProfileResult(
        model=_model_info(model),
        runtime=runtime_info(model),
        host=host_info(),
        inputs=inputs_info,
        timing=timing,
        latency=latency,
        memory={k: v.to_dict() if isinstance(v, MemValue) else v for k, v in mem.items()},
        op_profile=ops,
        notes=notes,
    )


def _check_args(runs: int, duration: float | None, warmup: int, seed: int) -> None:
    def is_int(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if duration is None and (not is_int(runs) or not 1 <= runs <= MAX_RUNS):
        raise EdgeOptError(f"runs must be an integer in 1..{MAX_RUNS:,}, got {runs!r}")
    if duration is not None and (
        isinstance(duration, bool)
        or not isinstance(duration, (int, float))
        or not 0 < duration <= MAX_DURATION_S
    ):
        raise EdgeOptError(
            f"duration must be a number of seconds in (0, {MAX_DURATION_S:g}], got {duration!r}"
        )
    if not is_int(warmup) or not 0 <= warmup <= MAX_WARMUP:
        raise EdgeOptError(f"warmup must be an integer in 0..{MAX_WARMUP:,}, got {warmup!r}")
    if not is_int(seed) or not 0 <= seed < 2**63:
        raise EdgeOptError(f"seed must be an integer in 0..2^63-1, got {seed!r}")


def _report(progress: Progress | None, phase: str, done: int, total: int | None) -> None:
    if progress is not None:
        progress(phase, done, total)


def _ms(ns: int | float) -> float:
    return round(ns / 1e6, 6)


# -- load --------------------------------------------------------------------------------------
def _load_measured(
    model_or_path: Model | str | os.PathLike[str],
    threads: int | None,
    delegate: str | None,
    providers: list[str] | None,
    notes: list[str],
    isolate: bool,
) -> tuple[Model, dict[str, Any], dict[str, Any]]:
    """Load with timing and RSS around it; a ``Model`` passed in has neither (said so)."""
    if isinstance(model_or_path, Model):
        if threads is not None or delegate is not None or providers is not None:
            raise EdgeOptError(
                "threads/delegate/providers apply when loading: pass them to load(), or pass "
                "profile() a path instead of a loaded Model"
            )
        why = "not measured: a loaded Model was passed to profile()"
        notes.append("a loaded Model was passed: load time and RSS before load are not measured")
        timing = {"backend_import_ms": None, "load_ms": None, "load_method": why}
        mem = {
            "rss_before_load": MemValue(None, why),
            "rss_after_load": _at_start(memory.rss()),
            "peak_during_load": MemValue(None, why),
        }
        return model_or_path, timing, mem
    path = Path(model_or_path)
    import_ms, imported = _import_backends(path)
    before = memory.rss()
    reset = memory.reset_peak()
    t0 = time.perf_counter_ns()
    model = load(path, threads=threads, delegate=delegate, providers=providers, isolate=isolate)
    load_ns = time.perf_counter_ns() - t0 - (model.probe_ns or 0)
    after, peak = memory.rss(), memory.peak_rss()
    if not reset:
        peak = MemValue(peak.bytes, f"{peak.method}: process-lifetime peak, could not be reset")
    else:
        peak = MemValue(peak.bytes, f"{peak.method} after reset via /proc/self/clear_refs")
    timing = {
        "backend_import_ms": import_ms,
        "backend_imported": imported,
        "load_ms": _ms(load_ns),
        "load_method": "wall time of edgeopt_runtime.load() (read, verify, create interpreter/"
        "session, allocate tensors); first load in this process, OS file cache not dropped",
        "probe_ms": _ms(model.probe_ns) if model.probe_ns is not None else None,
        "probe_method": "isolated child-process probe (load + one run), not part of load_ms"
        if model.probe_ns is not None
        else "not probed (isolate=False / --no-isolate)",
    }
    mem = {"rss_before_load": before, "rss_after_load": after, "peak_during_load": peak}
    return model, timing, mem


def _at_start(value: MemValue) -> MemValue:
    return MemValue(value.bytes, f"{value.method} when profile() started (model already loaded)")


def _formats_of(path: Path) -> list[str]:
    """Formats the path will load (best effort: ``load`` reports the real errors)."""
    backend = backends.for_extension(path.suffix)
    if backend is not None:
        return [backend.format]
    if path.is_dir():
        from .manifest import read_manifest

        try:
            return sorted({m.format for m in read_manifest(path).models})
        except EdgeOptError:
            return []
    return []


def _import_backends(path: Path) -> tuple[float | None, list[str]]:
    """Import the backend library before measuring the load, and time that import."""
    fmts = _formats_of(path)
    if not fmts:
        return None, []
    t0 = time.perf_counter_ns()
    for fmt in fmts:
        backends.get(fmt).import_engine()
    return _ms(time.perf_counter_ns() - t0), fmts


# -- inputs ------------------------------------------------------------------------------------
def _feeds(
    model: Model,
    inputs: Mapping[str, np.ndarray] | str | os.PathLike[str] | None,
    seed: int,
    input_shapes: Mapping[str, Sequence[int]] | Sequence[str] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    shapes = None
    if input_shapes:
        from .spec import parse_input_shapes

        items = (
            [f"{k}={','.join(map(str, v))}" for k, v in input_shapes.items()]
            if isinstance(input_shapes, Mapping)
            else list(input_shapes)
        )
        shapes = parse_input_shapes(items, model.inputs)
    if inputs is None:
        feeds = random_feeds(model.inputs, seed, shapes)
        info: dict[str, Any] = {
            "source": "random",
            "path": None,
            "seed": seed,
            "float_range": list(FLOAT_RANGE),
            "quantized_int_range": "the input dtype's full range",
            "other_int_range": list(OTHER_INT_RANGE),
        }
    elif isinstance(inputs, Mapping):
        feeds = {k: np.asarray(v) for k, v in inputs.items()}
        info = {"source": "arrays", "path": None, "seed": None}
    else:
        feeds = read_npz(inputs, model.inputs)
        info = {"source": "npz", "path": str(inputs), "seed": None}
    info["arrays"] = [
        {"name": k, "shape": list(v.shape), "dtype": v.dtype.name} for k, v in feeds.items()
    ]
    return feeds, info


def run_checked(
    model: Model, feeds: Any, source: str | None, *, raw: bool = False, batch: bool = False
) -> Any:
    """``model.run`` (``run_batch`` when ``batch``) whose InputError names the feeds' file."""
    try:
        return model.run_batch(feeds, raw=raw) if batch else model.run(feeds, raw=raw)
    except InputError as exc:
        if source:
            raise InputError(f"{source}: {exc}") from None
        raise


def _timed_call(model: Model, feeds: Any, source: str | None) -> int:
    t0 = time.perf_counter_ns()
    run_checked(model, feeds, source)
    return time.perf_counter_ns() - t0


# -- timed runs --------------------------------------------------------------------------------
def _timed_runs(
    model: Model,
    feeds: dict[str, np.ndarray],
    runs: int,
    duration: float | None,
    progress: Progress | None,
) -> tuple[array, float, memory.PeakSampler]:
    """Per-run wall times in ns (perf_counter around ``Model.run``) under the RSS sampler.

    Samples go to a compact ``array('q')`` (8 bytes each) so the profiler's own bookkeeping
    barely moves the RSS it is measuring.
    """
    run, clock = model.run, time.perf_counter_ns
    samples = array("q")
    total = None if duration is not None else runs
    next_report = 0
    with memory.PeakSampler() as sampler:
        start = clock()
        deadline = None if duration is None else start + int(duration * 1e9)
        while True:
            t0 = clock()
            run(feeds)
            t1 = clock()
            samples.append(t1 - t0)
            if progress is not None and t1 >= next_report:  # at most ~10 updates per second
                progress("runs", len(samples), total)
                next_report = t1 + 100_000_000
            if (deadline is not None and t1 >= deadline) or (
                deadline is None and len(samples) >= runs
            ):
                break
        wall_s = (clock() - start) / 1e9
    _report(progress, "runs", len(samples), len(samples))
    return samples, wall_s, sampler


def latency_stats(samples_ns: Sequence[int], wall_s: float | None = None) -> dict[str, Any]:
    """Latency statistics in ms from per-run ns samples.

    ``std_ms`` is the sample standard deviation (ddof=1); percentiles interpolate linearly;
    ``throughput_ips`` = 1000 / mean (one sequential stream, ``wall_s`` includes loop overhead).
    """
    a = np.asarray(samples_ns, dtype=np.float64) / 1e6
    p50, p90, p95, p99 = np.percentile(a, [50, 90, 95, 99])
    mean = float(a.mean())
    return {
        "runs": int(a.size),
        "wall_s": None if wall_s is None else round(wall_s, 6),
        "mean_ms": _r(mean),
        "std_ms": _r(a.std(ddof=1)) if a.size > 1 else 0.0,
        "min_ms": _r(a.min()),
        "max_ms": _r(a.max()),
        "p50_ms": _r(p50),
        "p90_ms": _r(p90),
        "p95_ms": _r(p95),
        "p99_ms": _r(p99),
        "throughput_ips": round(1000.0 / mean, 3) if mean > 0 else None,
        "clock": "time.perf_counter_ns around each Model.run call (IO conversion included)",
        "samples_ms": [_r(x) for x in a],
    }


def _r(x: float | np.floating) -> float:
    return round(float(x), 6)  # ns resolution in ms; keeps the JSON free of float noise


# -- memory ------------------------------------------------------------------------------------
def _memory_runs(mem: dict[str, Any], sampler: memory.PeakSampler, model: Model) -> None:
    """Add the run-window peaks, the model file size and the deltas to ``mem``."""
    mem["peak_during_runs"] = sampler.best()
    mem["peak_during_runs_sampled"] = sampler.sampled()
    mem["peak_during_runs_kernel"] = sampler.kernel_peak()
    mem["model_file"] = MemValue(model.path.stat().st_size, f"os.stat size of {model.path.name}")
    before, after = mem["rss_before_load"].bytes, mem["rss_after_load"].bytes
    peaks = [v.bytes for v in (mem["peak_during_load"], mem["peak_during_runs"]) if v.bytes]
    if before is None or after is None:
        why = mem["rss_before_load"].method if before is None else "RSS unavailable"
        mem["model_delta_after_load"] = MemValue(None, why)
        mem["model_delta_peak"] = MemValue(None, why)
        return
    mem["model_delta_after_load"] = MemValue(after - before, "rss_after_load - rss_before_load")
    mem["model_delta_peak"] = MemValue(
        max(peaks) - before if peaks else None,
        "max(peak_during_load, peak_during_runs) - rss_before_load",
    )


# -- per-op time -------------------------------------------------------------------------------
def _op_profile(
    model: Model, feeds: dict[str, np.ndarray], enabled: bool, progress: Progress | None
) -> dict[str, Any]:
    base: dict[str, Any] = {
        "available": False,
        "source": None,
        "reason": None,
        "runs": 0,
        "by_op_type": [],
        "by_node": [],
        "node_total_ms_per_run": None,
        "model_run_ms_per_run": None,
        "ops": [],
    }
    if not enabled:
        return {**base, "reason": "disabled (op_profile=False / --no-op-profile)"}
    arrays = model.prepare(feeds)
    measured = model.runner.op_profile(arrays, OP_PROFILE_RUNS, _OP_PROFILE_WARMUP, progress)
    return {**base, **measured}


# -- facts -------------------------------------------------------------------------------------
def _model_info(model: Model) -> dict[str, Any]:
    info = model.info()
    return {
        "path": info["path"],
        "file": model.path.name,
        "format": model.format,
        "precision": info.get("precision"),
        "size_bytes": info.get("size_bytes"),
        "artifact_dir": str(model.manifest.directory) if model.manifest else None,
        "target": model.manifest.target_name if model.manifest else None,
        "inputs": [s.to_dict() for s in model.inputs],
        "outputs": [s.to_dict() for s in model.outputs],
    }


def runtime_info(model: Model) -> dict[str, Any]:
    """Backend name and version, delegate / providers and threads of a loaded model."""
    from . import __version__

    name, _, version = model.backend.partition(" ")
    info = model.runner.info()
    effective = model.runner.threads_effective()
    return {
        "backend": name,
        "backend_version": version or None,
        "format": model.format,
        "delegate": model.delegate,
        "providers": info.get("providers"),
        "threads": model.threads,
        "threads_effective": effective,
        "edgeopt_runtime": __version__,
    }


__all__ = [
    "SCHEMA",
    "ProfileResult",
    "host_info",
    "latency_stats",
    "profile",
    "random_feeds",
    "read_npz",
    "run_checked",
]
