"""The benchmark suite: convert each model for each target with edgeopt, then measure latency,
drift, size and compute roof of every artifact against its float reference in the same run.

The measuring process never imports TensorFlow: models are built and converted in a child
process (``benchmarks.conversion``), which is also what makes its per-stage peak RSS figures
those of a fresh ``edgeopt convert`` run rather than of a process that already holds other
models. Timing uses only ``edgeopt_runtime`` (the product's runtime path, manifest included).

The result is one JSON document (schema ``edgeopt.bench/1``) — see ``run()``.
"""

from __future__ import annotations

import datetime as _dt
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import conversion, host, models, timing
from .macs import count_macs

SCHEMA = "edgeopt.bench/1"
TARGETS = ("arm-cpu", "edgetpu", "mobile-gpu")

Log = Callable[[str], None]


@dataclass(frozen=True)
class Config:
    """What to run. ``quick()`` / ``full()`` are the two presets the CLI offers."""

    models: tuple[str, ...]
    targets: tuple[str, ...] = TARGETS
    threads: tuple[int, ...] = (1, 2)
    plan: timing.Plan = field(default_factory=timing.Plan)
    calib_samples: int = 64
    drift_samples: int = 16
    seed: int = 0
    quick: bool = False
    probe_host: bool = True  # compile and run peak_probe.c
    overhead: bool = True  # runtime wrapper overhead and import cost (benchmarks.runtime_overhead)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["plan"] = asdict(self.plan)
        return d


def quick(**overrides: Any) -> Config:
    """The ``--quick`` preset: tiny CNN + MobileNetV2, every target, 1 and 2 threads."""
    base = dict(
        models=models.QUICK_MODELS,
        plan=timing.Plan(rounds=12, block_s=0.12),
        calib_samples=16,
        drift_samples=8,
        quick=True,
    )
    return Config(**{**base, **overrides})


def full(**overrides: Any) -> Config:
    """The full preset: every model, every target, 1 and 2 threads."""
    base = dict(models=models.FULL_MODELS, plan=timing.Plan(rounds=20, block_s=0.12))
    return Config(**{**base, **overrides})


# --------------------------------------------------------------------------- run


def run(config: Config, workdir: Path, log: Log = lambda s: None) -> dict[str, Any]:
    """Run the suite.

    Args:
        config: models, targets, threads, timing plan.
        workdir: where models, calibration data and artifacts are written.
        log: progress lines (stderr in the CLI).

    Returns:
        The ``edgeopt.bench/1`` document: ``config``, ``host``, ``versions``, ``startup``
        (import / CLI cost), ``models`` (per model: MACs, conversions, artifacts with size and
        drift, latency groups with speed-ups and roof), ``checks`` (the issue's targets) and
        ``duration_s``.
    """
    t0 = time.perf_counter()
    created = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    log("host: reading /proc/cpuinfo and probing the vector units")
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "created": created,
        "config": config.to_dict(),
        "host": host.describe(run_probe_too=config.probe_host),
        "versions": versions(),
        "startup": startup_costs(log) if config.overhead else None,
        "models": [],
    }
    peak = doc["host"]["peak"]
    peak_per_core = {"fp32": peak["fp32_gmacs_per_core"], "int8": peak["int8_gmacs_per_core"]}
    for name in config.models:
        doc["models"].append(bench_model(name, config, workdir, log, peak_per_core))
    from .checks import evaluate

    doc["checks"] = evaluate(doc)
    doc["duration_s"] = round(time.perf_counter() - t0, 1)
    return doc


def versions() -> dict[str, str | None]:
    """Versions of Python and of every package whose speed the numbers depend on."""
    from importlib import metadata

    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("edgeopt", "edgeopt-runtime", "numpy", "ai-edge-litert", "onnxruntime",
                "tensorflow", "tf2onnx", "onnx", "keras"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def startup_costs(log: Log) -> dict[str, Any]:
    """``import edgeopt_runtime`` time / RSS and ``edgeopt --help`` time in fresh processes
    (``runtime_overhead.startup``)."""
    from . import runtime_overhead

    log("startup: import edgeopt_runtime and edgeopt --help in fresh processes")
    return runtime_overhead.startup()


# --------------------------------------------------------------------------- one model


def bench_model(name: str, config: Config, workdir: Path, log: Log,
                peak: dict[str, float | None]) -> dict[str, Any]:
    """Convert one model for every target, then measure all its artifacts.

    Args:
        peak: the host's peak GMAC/s per core, ``{"fp32": ..., "int8": ...}``.
    """
    spec = models.get(name)
    log(f"{name}: building and converting for {', '.join(config.targets)} (child process)")
    conv = conversion.convert_model(name, config, workdir / name, log)
    floats = conv["float"]  # {"tflite": path, "onnx": path}: the files convert measured against
    macs = count_macs(floats["tflite"])
    artifacts = _artifacts(conv["artifacts"], floats)
    inputs = spec.inputs(config.drift_samples, seed=config.seed + 1)
    log(f"{name}: output drift on {len(inputs)} held-out inputs")
    drift_all(artifacts, floats, inputs)
    result = {
        "name": name,
        "description": spec.description,
        "input_shape": [1, *spec.input_shape],
        "macs": macs.to_dict(),
        "float": {k: {"path": str(v), "size_bytes": Path(v).stat().st_size,
                      **({"xnnpack": xnnpack_placement(Path(v))} if k == "tflite" else {})}
                  for k, v in floats.items()},
        "build": conv["build"],
        "conversion": conv["conversion"],
        "artifacts": artifacts,
        "latency": [
            latency_group(fmt, floats[fmt], members, inputs[0], threads, config, macs, peak)
            for threads in config.threads
            for fmt, members in _by_format(artifacts, floats, log, name, threads)
        ],
        "notes": _notes(conv["conversion"]),
    }
    profile = onnx_profile(floats, artifacts, inputs[0], config, log, name)
    if profile is not None:
        result["onnx_op_profile"] = profile
    if config.overhead and name in OVERHEAD_MODELS:
        result["overhead"] = wrapper_overhead(floats, artifacts, inputs[0], log, name, config)
    return result


def _artifacts(converted: list[dict[str, Any]], floats: dict[str, str]) -> list[dict[str, Any]]:
    """Deduplicated artifacts with their size ratio and (TFLite) measured XNNPACK placement."""
    artifacts = dedupe(converted)
    for a in artifacts:
        a["size_ratio"] = round(a["size_bytes"] / Path(floats[a["format"]]).stat().st_size, 4)
        if a["format"] == "tflite":
            a["xnnpack"] = xnnpack_placement(Path(a["artifact_dir"]) / a["file"])
    return artifacts


def _by_format(artifacts: list[dict[str, Any]], floats: dict[str, str], log: Log, name: str,
               threads: int) -> list[tuple[str, list[dict[str, Any]]]]:
    """(format, its artifacts) for each format with a float reference and artifacts."""
    out = []
    for fmt in ("tflite", "onnx"):
        members = [a for a in artifacts if a["format"] == fmt]
        if fmt in floats and members:
            log(f"{name}: latency, {fmt}, {threads} thread(s), {len(members) + 1} models")
            out.append((fmt, members))
    return out


def _notes(conv: dict[str, Any]) -> list[str]:
    notes = [f"{fmt}: float reference differs from the one in the converter's report"
             for fmt, ref in conv["float_refs"].items() if ref["matches_report"] is False]
    return notes + [f"{t}: conversion refused: {why}" for t, why in conv["refused"].items()]


def onnx_profile(floats: dict[str, str], artifacts: list[dict[str, Any]], x: np.ndarray,
                 config: Config, log: Log, name: str) -> dict[str, Any] | None:
    """ORT per-op-class time of the float model vs the arm-cpu int8 ONNX artifact (if any)."""
    art = next((a for a in artifacts if a["format"] == "onnx" and a["precision"] == "int8"
                and "arm-cpu" in a["targets"]), None)
    if art is None or "onnx" not in floats:
        return None
    from .opprofile import op_classes

    log(f"{name}: ONNX Runtime per-op-class profile, float vs int8")
    return op_classes(Path(floats["onnx"]), Path(art["artifact_dir"]) / art["file"], x,
                      runs=10 if config.quick else 20)


def dedupe(artifacts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merge byte-identical artifacts (same sha256), keeping every target that produced them.

    Targets often ask for the same file (arm-cpu's int8 TFLite and mobile-gpu's int8 variant):
    it is timed once and listed under all of them.
    """
    by_sha: dict[str, dict[str, Any]] = {}
    for a in artifacts:
        kept = by_sha.get(a["sha256"])
        if kept is None:
            by_sha[a["sha256"]] = {**a, "targets": [a["target"]]}
        else:
            kept["targets"].append(a["target"])
    out = list(by_sha.values())
    for a in out:
        a["id"] = f"{a['format']}/{a['precision']}@{'+'.join(a['targets'])}"
    return out


def xnnpack_placement(path: Path) -> dict[str, Any]:
    """Which ops XNNPACK takes, measured (``edgeopt.inspect.xnnpack``: LiteRT's DELEGATE nodes
    mapped back to the ops they replaced).

    Returns:
        ``partitions`` (DELEGATE nodes: each boundary between XNNPACK and TFLite's own kernels
        costs a hand-over), ``ops_total`` and ``outside`` ({op name: count} of the ops left on
        TFLite's built-in kernels), or ``error``.
    """
    from collections import Counter

    from edgeopt.inspect.tflite_graph import read_tflite
    from edgeopt.inspect.xnnpack import covered_ops, measure

    measured = measure(str(path))
    if not measured.get("available"):
        return {"error": measured.get("error")}
    graph = read_tflite(path)
    nodes = measured["delegate_nodes"]
    covered = covered_ops(graph, nodes)
    outside = Counter(op.name for op in graph.ops if op.index not in covered)
    return {"partitions": len(nodes), "ops_total": len(graph.ops),
            "outside": dict(outside.most_common())}


# --------------------------------------------------------------------------- drift


def drift_all(artifacts: list[dict[str, Any]], floats: dict[str, Path],
              inputs: list[np.ndarray]) -> None:
    """Add ``drift`` (SQNR dB, cosine, max abs error, top-1 agreement) to each artifact.

    The reference is the float model of the same format run through the same runtime, so the
    numbers are quantization error only (not TFLite-vs-ONNX kernel differences).
    """
    import edgeopt_runtime

    from edgeopt.drift import compare_outputs

    refs: dict[str, list[np.ndarray]] = {}
    for fmt in sorted({a["format"] for a in artifacts}):
        refs[fmt] = _run_all(edgeopt_runtime.load(floats[fmt], threads=1), inputs)
    for a in artifacts:
        m = edgeopt_runtime.load(a["artifact_dir"], format=a["format"], precision=a["precision"],
                                 threads=1)
        outs = _run_all(m, inputs)
        names = [s.name for s in m.outputs]
        # scatter_points=0 is rejected by drift.scatter_sample; a few points cost nothing.
        per_output = compare_outputs(refs[a["format"]], outs, names, scatter_points=8)
        a["drift"] = [_drift_summary(o) for o in per_output]


def _run_all(model: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Outputs stacked over samples: one array per model output."""
    per_sample = [model.run(x) for x in inputs]
    return [np.concatenate([o[i] for o in per_sample], axis=0)
            for i in range(len(per_sample[0]))]


def _drift_summary(o: dict[str, Any]) -> dict[str, Any]:
    keep = ("sqnr_db", "cosine", "max_abs_error", "top1_agreement")
    m = o["metrics"]
    return {"output": o["name"], **{k: _finite(m[k]) for k in keep if k in m}}


def _finite(x: float) -> float | str:
    x = float(x)
    return round(x, 5) if np.isfinite(x) else str(x)


# --------------------------------------------------------------------------- latency


def latency_group(
    fmt: str,
    float_path: Path,
    members: list[dict[str, Any]],
    x: np.ndarray,
    threads: int,
    config: Config,
    macs: Any,
    peak: dict[str, float | None],
) -> dict[str, Any]:
    """Time the float model and every artifact of one format in the same interleaved rounds.

    Returns:
        ``format``, ``threads``, ``reference`` (the float model's id) and ``results``: per model
        id the latency summary, ``speedup`` vs float (within-round ratios) and ``roof``.
    """
    import edgeopt_runtime

    ref_id = f"{fmt}/float32"
    loaded = {ref_id: edgeopt_runtime.load(float_path, threads=threads)}
    for a in members:
        loaded[a["id"]] = edgeopt_runtime.load(
            a["artifact_dir"], format=fmt, precision=a["precision"], threads=threads
        )
    fns = {k: (lambda m=m: m.run(x)) for k, m in loaded.items()}
    # 1 thread: the engine computes on this thread, so its CPU time is meaningful (see timing).
    cpu = threads == 1
    samples = timing.interleaved(fns, config.plan, cpu=cpu)
    results: dict[str, Any] = {}
    for key, s in samples.items():
        summary = s.summary()
        precision = "float32" if key == ref_id else _precision_of(key, members)
        kind = "int8" if precision in ("int8", "uint8") else "fp32"
        results[key] = {
            **summary,
            "precision": precision,
            "delegate": loaded[key].delegate,
            "notes": loaded[key].notes,
            "speedup": None if key == ref_id else timing.ratio(samples[ref_id], s),
            "cpu_speedup": None if key == ref_id or not cpu
            else timing.ratio(samples[ref_id], s, cpu=True),
            "roof": roof(macs.total, summary["p50_ms"], peak[kind], threads, kind),
        }
    return {"format": fmt, "threads": threads, "reference": ref_id, "results": results}


def _precision_of(key: str, members: list[dict[str, Any]]) -> str:
    return next(a["precision"] for a in members if a["id"] == key)


def roof(macs: int, p50_ms: float, peak_gmacs_per_core: float | None, threads: int,
         kind: str) -> dict[str, Any]:
    """Achieved MAC rate against the host's peak for this precision and thread count.

    Args:
        macs: MACs of one inference.
        p50_ms: median latency.
        peak_gmacs_per_core: the host's peak (``host.peak``) for ``kind``.
        threads: threads used (the peak scales with them).
        kind: ``"int8"`` or ``"fp32"`` (float16-weight models compute in fp32 on x86).
    """
    achieved = macs / (p50_ms * 1e-3) / 1e9 if p50_ms > 0 else None
    peak = peak_gmacs_per_core * threads if peak_gmacs_per_core else None
    return {
        "gmacs": None if achieved is None else round(achieved, 2),
        "peak_kind": kind,
        "peak_gmacs": None if peak is None else round(peak, 2),
        "pct_of_peak": None if not (achieved and peak) else round(100 * achieved / peak, 2),
    }


# --------------------------------------------------------------------------- overhead


OVERHEAD_MODELS = ("tiny_cnn", "mobilenet_v2")  # the overhead targets are set on these


def wrapper_overhead(floats: dict[str, Path], artifacts: list[dict[str, Any]], x: np.ndarray,
                     log: Log, name: str, config: Config) -> dict[str, Any]:
    """``Model.run`` vs the raw interpreter / session (``runtime_overhead.measure_overhead``),
    1 thread, for the float models and every artifact (IO quantization included)."""
    from . import runtime_overhead

    formats = {a["format"] for a in artifacts}
    paths = {f"{fmt}/float32": Path(p) for fmt, p in floats.items() if fmt in formats}
    paths.update({a["id"]: Path(a["artifact_dir"]) / a["file"] for a in artifacts})
    log(f"{name}: runtime wrapper overhead on {len(paths)} models")
    rounds = 9 if config.quick else 15
    return {
        key: runtime_overhead.wrapper_overhead(path, x, threads=1, rounds=rounds, block_s=0.1)
        for key, path in paths.items()
    }


def main_log(msg: str) -> None:
    """Default progress printer: stderr, with a timestamp."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
