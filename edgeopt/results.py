"""Typed result records and the one place they become the ``edgeopt.report/1`` document.

Every command that measures something (``convert``, ``compare``, and the tuning loop and sweeps
built on ``edgeopt.evaluate``) returns these frozen dataclasses; ``to_dict()`` on each record is
the only code that writes report JSON, so two commands cannot describe the same artifact in two
ways. The renderers (``edgeopt.report``) and ``edgeopt diff`` read the JSON these produce.

Layout of the records (JSON keys in brackets)::

    CompareResult ── header, models [reference, candidate], data, evaluation
                     (drift, task, latency), per_layer, gates, notes
    ConvertResult ── header, source, calibration, data, settings, gates, notes,
                     targets: TargetResult [status ok | failed, error, artifacts]
                                 └── ArtifactResult ── evaluation (drift, task, latency),
                                                       preflight, runtime, post_build, ...

Deep payloads owned by other modules stay plain mappings inside the records: the pre-flight
block (``edgeopt.inspect``), the Edge TPU compiler block, the per-layer section
(``edgeopt.layers``), backend ``details``. Everything here is picklable (plain values and numpy
arrays only), so an executor can ship records between processes.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from importlib import metadata
from typing import Any

SCHEMA = "edgeopt.report/1"
KINDS = ("compare", "convert")
TOOLS = ("edgeopt", "edgeopt-runtime", "numpy", "onnxruntime", "ai-edge-litert", "onnx",
         "tensorflow", "tf2onnx", "keras")


class Status(StrEnum):
    """Outcome of one target of a convert run (values appear verbatim in the JSON).

    ``partial``: some formats / precisions of the target were built, others failed (the
    target's ``failures``). Readers treat a status they do not know like any non-``ok`` one.
    """

    OK = "ok"
    PARTIAL = "partial"
    # built and kept, but its numbers cannot be trusted (e.g. the float reference is
    # constant, so drift measures nothing): the reason is the target's ``error``
    DEGRADED = "degraded"
    FAILED = "failed"


def _opt(record: Any) -> Any:
    return None if record is None else record.to_dict()


# ------------------------------------------------------------------------------ header


def tool_versions() -> dict[str, str | None]:
    """Installed versions of the tools that shape the numbers (from package metadata only)."""
    out: dict[str, str | None] = {}
    for name in TOOLS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def host_info() -> dict[str, Any]:
    """Facts about the machine the numbers were measured on (the runtime's own description,
    so a convert report and an on-device profile describe hosts the same way)."""
    from edgeopt_runtime.host import host_info as runtime_host_info

    return runtime_host_info()


@dataclass(frozen=True)
class ReportHeader:
    """``schema``, ``kind``, ``created``, ``host``, ``tools`` of every report."""

    kind: str
    created: str
    host: Mapping[str, Any]
    tools: Mapping[str, str | None]

    @classmethod
    def now(cls, kind: str) -> ReportHeader:
        """A header stamped with the current time, this host and the installed tools.

        Raises:
            ValueError: ``kind`` is not ``compare`` or ``convert`` (a programming error).
        """
        if kind not in KINDS:
            raise ValueError(f"report kind must be one of {KINDS}, got {kind!r}")
        created = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        return cls(kind, created, host_info(), tool_versions())

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "kind": self.kind, "created": self.created,
                "host": dict(self.host), "tools": dict(self.tools)}


# ------------------------------------------------------------------------------ models and data


@dataclass(frozen=True)
class ModelInfo:
    """One model as a report names it (``models.reference`` / ``models.candidate``)."""

    path: str
    format: str
    precision: str
    size_bytes: int
    sha256: str
    backend: str | None = None
    delegate: str | None = None
    threads: int | None = None
    providers: tuple[str, ...] | None = None
    inputs: tuple[Mapping[str, Any], ...] = ()
    outputs: tuple[Mapping[str, Any], ...] = ()
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": self.path, "format": self.format, "precision": self.precision,
            "size_bytes": self.size_bytes, "sha256": self.sha256, "backend": self.backend,
            "delegate": self.delegate, "threads": self.threads,
            "inputs": [dict(s) for s in self.inputs], "outputs": [dict(s) for s in self.outputs],
            "notes": list(self.notes),
        }
        if self.providers is not None:
            out["providers"] = list(self.providers)
        return out


@dataclass(frozen=True)
class LabelsInfo:
    source: str
    count: int

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "count": self.count}


@dataclass(frozen=True)
class DataInfo:
    """The samples an evaluation ran on (the report's ``data`` block).

    ``rows`` are the selected row indices when a subset was evaluated (sample indices in drift,
    e.g. ``flipped_top1``, count evaluated samples; ``rows`` maps them back to the data).
    """

    source: str
    format: str
    count: int
    sha256: str
    synthetic: bool
    num: int | None
    seed: int
    max_samples: int | None
    role: str
    labels: LabelsInfo | None = None
    rows: tuple[int, ...] | None = None
    warnings: tuple[str, ...] = ()
    # per input: value statistics before preprocessing (None: none applied) and as model input
    statistics: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"role": self.role, "source": self.source, "format": self.format,
               "count": self.count, "sha256": self.sha256, "synthetic": self.synthetic,
               "num": self.num, "seed": self.seed, "max_samples": self.max_samples,
               "labels": _opt(self.labels), "warnings": list(self.warnings)}
        if self.rows is not None:
            out["rows"] = list(self.rows)
        if self.statistics is not None:
            out["statistics"] = {k: dict(v) for k, v in self.statistics.items()}
        return out


# ------------------------------------------------------------------------------ measurements


@dataclass(frozen=True)
class LatencyStats:
    """One model's timings: ``edgeopt_runtime.profile.latency_stats`` as a record."""

    runs: int
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    throughput_ips: float | None
    clock: str
    samples_ms: tuple[float, ...] = field(default=(), repr=False)

    @classmethod
    def from_ns(cls, samples_ns: Sequence[int]) -> LatencyStats:
        from edgeopt_runtime.profile import latency_stats

        d = latency_stats(samples_ns)
        return cls(**{k: d[k] for k in _LATENCY_KEYS}, samples_ms=tuple(d["samples_ms"]))

    def to_dict(self) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in _LATENCY_KEYS},
                "samples_ms": list(self.samples_ms)}


_LATENCY_KEYS = ("runs", "mean_ms", "std_ms", "min_ms", "max_ms", "p50_ms", "p90_ms", "p95_ms",
                 "p99_ms", "throughput_ips", "clock")


@dataclass(frozen=True)
class LatencyPair:
    """Reference and candidate timed the one way ``edgeopt.evaluate.measure_latency`` does:
    interleaved on the same feed, same threads, after untimed warm-up pairs."""

    reference: LatencyStats
    candidate: LatencyStats
    threads: int | None
    backend: str
    delegate: str
    warmup: int
    where: str
    method: str
    host_notes: tuple[str, ...] = ()

    @property
    def speedup_p50(self) -> float | None:
        """Reference p50 / candidate p50 (> 1: the candidate is faster)."""
        cand = self.candidate.p50_ms
        return round(self.reference.p50_ms / cand, 3) if cand else None

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference.to_dict(), "candidate": self.candidate.to_dict(),
                "speedup_p50": self.speedup_p50, "threads": self.threads,
                "backend": self.backend, "delegate": self.delegate, "warmup": self.warmup,
                "where": self.where, "method": self.method, "host_notes": list(self.host_notes)}


@dataclass(frozen=True)
class OutputDrift:
    """Drift of one output (``edgeopt.drift.compare_outputs``; metrics by name).

    ``kind`` is the output kind (classifier / embedding / regression / detection) and
    ``kind_source`` how it was decided; ``per_sample`` the per-sample summaries (and the
    values the gates read); ``degenerate`` why the reference cannot be compared against;
    ``nonfinite_samples`` the samples with NaN/inf outputs.
    """

    name: str
    shape: tuple[int, ...]
    metrics: Mapping[str, float]
    skipped: Mapping[str, str]
    classifier: Mapping[str, Any] | None = None
    scatter: Mapping[str, Sequence[float]] | None = field(default=None, repr=False)
    nonfinite: int | None = None
    kind: str | None = None
    kind_source: str | None = None
    per_sample: Mapping[str, Any] | None = field(default=None, repr=False)
    degenerate: str | None = None
    nonfinite_samples: tuple[int, ...] = ()
    nonfinite_in: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OutputDrift:
        return cls(name=d["name"], shape=tuple(d["shape"]), metrics=dict(d["metrics"]),
                   skipped=dict(d["skipped"]), classifier=d.get("classifier"),
                   scatter=d.get("scatter"), nonfinite=d.get("nonfinite"),
                   kind=d.get("kind"), kind_source=d.get("kind_source"),
                   per_sample=d.get("per_sample"), degenerate=d.get("degenerate"),
                   nonfinite_samples=tuple(d.get("nonfinite_samples") or ()),
                   nonfinite_in=d.get("nonfinite_in"))

    def sample_stat(self, metric: str, on: str = "min") -> float | None:
        """A per-sample statistic (``cosine`` / ``sqnr_db`` / errors; ``min``, ``p5``,
        ``mean``, ``median``, ``max``), e.g. the worst sample's cosine for a budget."""
        from .drift import sample_stat

        return sample_stat(self.to_dict(), metric, on)

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "shape": list(self.shape), "kind": self.kind,
               "kind_source": self.kind_source, "metrics": dict(self.metrics),
               "per_sample": self.per_sample, "skipped": dict(self.skipped),
               "classifier": self.classifier, "degenerate": self.degenerate,
               "nonfinite_samples": list(self.nonfinite_samples), "scatter": self.scatter}
        if self.nonfinite is not None:
            out["nonfinite"] = self.nonfinite
            out["nonfinite_in"] = self.nonfinite_in
        return out


@dataclass(frozen=True)
class TaskMetrics:
    """Float vs quantized task metrics against labels (``edgeopt.drift.task_metrics``).

    When no output can be read as class scores only ``skipped`` is set (``{"all": why}``).
    """

    skipped: Mapping[str, str]
    output: int | None = None
    num_samples: int | None = None
    num_classes: int | None = None
    metrics: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    bootstrap: Mapping[str, Any] | None = None
    changed: Mapping[str, int] | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TaskMetrics:
        return cls(skipped=dict(d["skipped"]), output=d.get("output"),
                   num_samples=d.get("num_samples"), num_classes=d.get("num_classes"),
                   metrics={k: dict(v) for k, v in (d.get("metrics") or {}).items()},
                   bootstrap=d.get("bootstrap"), changed=d.get("changed"))

    def to_dict(self) -> dict[str, Any]:
        if self.output is None:
            return {"skipped": dict(self.skipped)}
        return {"output": self.output, "num_samples": self.num_samples,
                "num_classes": self.num_classes,
                "metrics": {k: dict(v) for k, v in self.metrics.items()},
                "bootstrap": self.bootstrap, "changed": self.changed,
                "skipped": dict(self.skipped)}


@dataclass(frozen=True)
class Evaluation:
    """One candidate measured against one reference on the same samples.

    The same record is the body of a compare report and of every convert artifact, so both
    report identical drift and task metrics for the same models and data. ``outputs`` (the
    per-sample outputs, ``edgeopt.evaluate.EvaluatedOutputs``) is kept only when asked for and
    never written to JSON.
    """

    data: DataInfo
    drift: tuple[OutputDrift, ...]
    task: TaskMetrics | None
    latency: LatencyPair | None
    notes: tuple[str, ...] = ()
    outputs: Any = field(default=None, repr=False, compare=False)

    def without_outputs(self) -> Evaluation:
        """The same record without the per-sample outputs (small enough to ship anywhere)."""
        return replace(self, outputs=None)

    def metrics_dict(self) -> dict[str, Any]:
        """The ``drift`` / ``task`` / ``latency`` keys, as both report kinds write them."""
        return {"drift": [o.to_dict() for o in self.drift], "task": _opt(self.task),
                "latency": _opt(self.latency)}


# ------------------------------------------------------------------------------ gates


@dataclass(frozen=True)
class GateResult:
    """One budget or accelerator check. ``facts`` holds the kind's own keys (``output``,
    ``metric``, ``threshold``, ``value``, ``target``, ``artifact``, ``source``, ...)."""

    gate: str
    passed: bool
    message: str
    facts: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GateResult:
        facts = {k: v for k, v in d.items() if k not in ("gate", "passed", "message")}
        return cls(str(d["gate"]), bool(d["passed"]), str(d["message"]), facts)

    def to_dict(self) -> dict[str, Any]:
        return {"gate": self.gate, **self.facts, "passed": self.passed, "message": self.message}


@dataclass(frozen=True)
class Gates:
    """The report's ``gates`` block.

    ``strict`` is None for compare gates (they always decide the exit code); for convert's
    accelerator checks it says whether ``--strict`` made them binding.
    """

    results: tuple[GateResult, ...] = ()
    strict: bool | None = None
    not_gated: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failed(self) -> tuple[GateResult, ...]:
        return tuple(r for r in self.results if not r.passed)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Gates:
        return cls(tuple(GateResult.from_dict(r) for r in d["results"]), d.get("strict"),
                   tuple(d.get("not_gated") or ()))

    def to_dict(self) -> dict[str, Any]:
        return {"strict": self.strict, "passed": self.passed,
                "results": [r.to_dict() for r in self.results],
                "not_gated": list(self.not_gated)}


# ------------------------------------------------------------------------------ compare


@dataclass(frozen=True)
class CompareResult:
    """``edgeopt compare``: one evaluation of a candidate against its float reference."""

    header: ReportHeader
    reference: ModelInfo
    candidate: ModelInfo
    evaluation: Evaluation
    per_layer: Mapping[str, Any]
    gates: Gates
    notes: tuple[str, ...] = ()
    validation: Mapping[str, Any] | None = None  # edgeopt.validation of the candidate file

    def to_dict(self) -> dict[str, Any]:
        return {**self.header.to_dict(),
                "models": {"reference": self.reference.to_dict(),
                           "candidate": self.candidate.to_dict()},
                "data": self.evaluation.data.to_dict(),
                **self.evaluation.metrics_dict(),
                "per_layer": dict(self.per_layer),
                "validation": None if self.validation is None else dict(self.validation),
                "gates": self.gates.to_dict(),
                "notes": list(self.notes)}


# ------------------------------------------------------------------------------ convert


@dataclass(frozen=True)
class RuntimeInfo:
    """How an artifact was really run on the host that wrote the report."""

    target_delegate: str | None
    host_delegate: str
    host_backend: str
    loaded_file: str
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"target_delegate": self.target_delegate, "host_delegate": self.host_delegate,
                "host_backend": self.host_backend, "loaded_file": self.loaded_file,
                "notes": list(self.notes)}


@dataclass(frozen=True)
class ArtifactResult:
    """One produced model file of one target, measured and checked."""

    target: str
    file: str
    path: str  # relative to the output folder
    format: str
    precision: str
    sha256: str
    size_bytes: int
    float_size_bytes: int
    float_sha256: str
    io: Mapping[str, Any]
    evaluation: Evaluation
    details: Mapping[str, Any]
    preflight: Mapping[str, Any]
    calibration_method: str | None
    conversion_seconds: float
    runtime: RuntimeInfo | None = None
    # what the accelerator's post-build step (the Edge TPU compiler) said; None when it has none
    post_build: Mapping[str, Any] | None = None
    post_build_key: str | None = None  # the JSON key of that block (``edgetpu_compiler``)
    notes: tuple[str, ...] = ()
    # what artifact validation found (``edgeopt.validation.Validation.to_dict()``); None: not run
    validation: Mapping[str, Any] | None = None
    # the bounded per-layer section (``edgeopt.layers``); None: not run
    per_layer: Mapping[str, Any] | None = None
    # the memory headline (``edgeopt.memory.MemoryHeadline.to_dict``); None: not measured
    memory: Mapping[str, Any] | None = None

    @property
    def size_ratio(self) -> float:
        return round(self.size_bytes / self.float_size_bytes, 4)

    def to_dict(self) -> dict[str, Any]:
        out = {"target": self.target, "file": self.file, "path": self.path,
               "format": self.format, "precision": self.precision, "sha256": self.sha256,
               "size_bytes": self.size_bytes, "float_size_bytes": self.float_size_bytes,
               "float_sha256": self.float_sha256, "size_ratio": self.size_ratio,
               "io": dict(self.io), **self.evaluation.metrics_dict(),
               "details": dict(self.details), "preflight": dict(self.preflight),
               "calibration_method": self.calibration_method,
               "conversion_seconds": self.conversion_seconds,
               "runtime": _opt(self.runtime), "notes": list(self.notes),
               "validation": None if self.validation is None else dict(self.validation),
               "memory": dict(self.memory) if self.memory is not None else None}
        if self.per_layer is not None:
            out["per_layer"] = dict(self.per_layer)
        if self.post_build is not None and self.post_build_key:
            out[self.post_build_key] = dict(self.post_build)
        return out


@dataclass(frozen=True)
class ArtifactFailure:
    """One format / precision of a target that could not be built or measured."""

    file: str
    format: str
    precision: str
    error: str
    error_type: str

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "format": self.format, "precision": self.precision,
                "status": Status.FAILED.value, "error": self.error,
                "error_type": self.error_type}


@dataclass(frozen=True)
class TargetResult:
    """One target of a convert run: ``ok`` with its artifacts, or ``failed`` with the error."""

    name: str
    status: Status
    description: str
    profile_path: str | None
    directory: str | None
    artifacts: tuple[ArtifactResult, ...] = ()
    skipped: tuple[str, ...] = ()
    input_shapes: Mapping[str, Sequence[int | None]] = field(default_factory=dict)
    wall_seconds: float = 0.0
    error: str | None = None
    error_type: str | None = None
    failures: tuple[ArtifactFailure, ...] = ()  # formats / precisions that failed
    # ``edgeopt tune`` / ``convert --auto``: the search record of each format (every candidate
    # tried, the chosen one and why; ``edgeopt.tune.driver.record``); None for plain convert
    tune: tuple[Mapping[str, Any], ...] | None = None

    @classmethod
    def failed(cls, name: str, description: str, profile_path: str | None, error: str, *,
               error_type: str, skipped: Sequence[str] = (), wall_seconds: float = 0.0,
               failures: Sequence[ArtifactFailure] = ()) -> TargetResult:
        """A target that produced nothing usable: no directory, no artifacts, the reason."""
        return cls(name, Status.FAILED, description, profile_path, None, (), tuple(skipped),
                   {}, wall_seconds, error, error_type, tuple(failures))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status.value, "error": self.error,
                "error_type": self.error_type, "description": self.description,
                "profile_path": self.profile_path, "directory": self.directory,
                "artifacts": [a.to_dict() for a in self.artifacts],
                "skipped": list(self.skipped),
                "input_shapes": {k: list(v) for k, v in self.input_shapes.items()},
                "wall_seconds": self.wall_seconds,
                "failures": [f.to_dict() for f in self.failures],
                **({"tune": [dict(r) for r in self.tune]} if self.tune is not None else {})}


@dataclass(frozen=True)
class ConvertResult:
    """``edgeopt convert``: the run's inputs, settings and one ``TargetResult`` per target."""

    header: ReportHeader
    source: Mapping[str, Any]  # ModelSource.to_dict()
    source_model: ModelInfo
    calibration: Mapping[str, Any]
    data: DataInfo
    settings: Mapping[str, Any]
    targets: tuple[TargetResult, ...]
    gates: Gates
    notes: tuple[str, ...]
    synthetic_calibration: bool
    wall_seconds: float

    @property
    def artifacts(self) -> tuple[ArtifactResult, ...]:
        return tuple(a for t in self.targets for a in t.artifacts)

    @property
    def failed_targets(self) -> tuple[TargetResult, ...]:
        return tuple(t for t in self.targets if t.status is Status.FAILED)

    @property
    def invalid_targets(self) -> tuple[TargetResult, ...]:
        """Targets whose artifacts were built but failed validation or are degraded."""
        return tuple(t for t in self.targets
                     if t.status in (Status.FAILED, Status.DEGRADED) and t.artifacts)

    def any_failed(self) -> bool:
        """Whether any target or any format of a target failed (the CLI then exits 1)."""
        return any(t.status is Status.FAILED or t.failures for t in self.targets)

    def to_dict(self) -> dict[str, Any]:
        return {**self.header.to_dict(),
                "synthetic_calibration": self.synthetic_calibration,
                "models": {"source": self.source_model.to_dict()},
                "source": dict(self.source),
                "calibration": dict(self.calibration),
                "data": self.data.to_dict(),
                "settings": dict(self.settings),
                "targets": [t.to_dict() for t in self.targets],
                "gates": self.gates.to_dict(),
                "notes": list(self.notes),
                "wall_seconds": self.wall_seconds}
