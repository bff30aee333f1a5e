"""Compare a candidate model with its float reference: ``run_compare(...) -> CompareResult``.

The measurement is ``edgeopt.evaluate`` (the same evaluator ``convert`` uses, so both report the
same drift and task metrics for the same models and data); this module adds what only compare
has: labels from a separate file, budget gates, and the per-layer section (ONNX: the two files;
TFLite: the float source re-quantized by the QuantizationDebugger).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeopt_runtime.errors import CalibrationError, EdgeOptError

from .evaluate import (
    DEFAULT_LATENCY_RUNS,
    DEFAULT_MAX_EVAL,
    HOST_THREADS,
    EvalData,
    EvalOptions,
    ModelRef,
    evaluate,
)
from .results import CompareResult, GateResult, Gates, ModelInfo, ReportHeader

if TYPE_CHECKING:
    import edgeopt_runtime as rt

log = logging.getLogger("edgeopt.compare")

DEFAULT_LAYER_SAMPLES = 32
CALIB_SAMPLES_FOR_LAYERS = 200  # TFLite per-layer: the debugger re-quantizes with these


@dataclass(frozen=True)
class GateOptions:
    """Budgets that decide compare's exit code (None: not checked)."""

    max_drop: str | None = None  # "1.5" accuracy points or "2%" of the float value
    drop_metric: str = "accuracy"
    min_sqnr: float | None = None
    min_cosine: float | None = None
    gate_on: str = "min"  # per-sample statistic the drift gates compare: min | p5 | mean


def model_info(m: rt.Model) -> ModelInfo:
    """A loaded model as a report names it."""
    from edgeopt_runtime.manifest import sha256_file

    info = m.info()
    providers = info.get("providers")
    return ModelInfo(
        path=str(m.path), format=m.format, precision=str(info["precision"]),
        size_bytes=int(info["size_bytes"]), sha256=sha256_file(m.path), backend=m.backend,
        delegate=m.delegate, threads=m.threads,
        providers=tuple(providers) if providers is not None else None,
        inputs=tuple(s.to_dict() for s in m.inputs), outputs=tuple(s.to_dict() for s in m.outputs),
        notes=tuple(m.notes),
    )


def _parse_drop(max_drop: str | None, has_labels: bool) -> tuple[float, bool] | None:
    from .drift import parse_max_drop

    if max_drop is None:
        return None
    parsed = parse_max_drop(max_drop)
    if not has_labels:
        raise CalibrationError("--max-drop needs labels: pass --labels PATH or a 'labels'/'y' "
                               "array in the --data .npz")
    return parsed


def run_compare(
    reference: Path, candidate: Path, data: Path, *, labels_path: Path | None = None,
    num: int | None = None, seed: int = 0, threads: int | None = HOST_THREADS,
    max_eval: int | None = DEFAULT_MAX_EVAL, latency_runs: int = DEFAULT_LATENCY_RUNS,
    per_layer: bool = True, source: Path | None = None, calib: Path | None = None,
    layer_samples: int = DEFAULT_LAYER_SAMPLES, gates: GateOptions = GateOptions(),
    isolate: bool = True, output_kinds: tuple[tuple[str, str], ...] = (),
) -> CompareResult:
    """Compare two models on the same data.

    Args:
        reference / candidate: ``.tflite`` / ``.onnx`` files or artifact directories.
        data: evaluation inputs; ``num`` / ``seed`` choose a subset, ``max_eval`` caps it.
        labels_path: class ids aligned with the data's rows (default: its ``labels``/``y``).
        threads: threads of both models.
        latency_runs: timed runs per model (0: no latency).
        per_layer / source / calib / layer_samples: the per-layer analysis.
        gates: budgets.
        isolate: probe each model file in a child process first (a corrupt one is refused,
            not a crash of this process).
        output_kinds: ``(output name or "*", kind)`` overrides of the inferred output kinds.

    Returns:
        The result record (``to_dict()`` is the ``edgeopt.report/1`` document).

    Raises:
        EdgeOptError: unreadable models, different signatures, data that does not fit,
            labels whose count does not match, bad gate values.
    """
    from .drift import evaluate_gates, validity_gates
    from .validation import validate

    ref = ModelRef(reference, threads=threads, isolate=isolate).load()
    cand = ModelRef(candidate, threads=threads, isolate=isolate).load()
    spec = EvalData(str(data), num=num, seed=seed, max_samples=max_eval,
                    labels=str(labels_path) if labels_path else None)
    samples = spec.open(ref.inputs)
    drop = _parse_drop(gates.max_drop, samples.labels is not None)
    log.info("running %d samples through both models", samples.count)
    ev = evaluate(ref, cand, samples, options=EvalOptions(latency_runs=latency_runs,
                                                           output_kinds=output_kinds))
    notes = list(ev.notes)
    layers = _per_layer_section(ref, cand, samples, source, calib, layer_samples, seed, notes,
                                per_layer)
    from .layers import first_nonfinite

    checked = validate(Path(cand.path), ev.drift, first_nonfinite=first_nonfinite(layers))
    gate_dict = evaluate_gates([o.to_dict() for o in ev.drift],
                               ev.task.to_dict() if ev.task else None, max_drop=drop,
                               drop_metric=gates.drop_metric, min_sqnr=gates.min_sqnr,
                               min_cosine=gates.min_cosine, gate_on=gates.gate_on)
    results = [*validity_gates([o.to_dict() for o in ev.drift]), *gate_dict["results"]]
    results += [{"gate": "artifact-validation", "where": f.where, "check": f.check,
                 "passed": False, "message": f"artifact-validation: {f.message}"}
                # drift below the noise floor is reported, not gated: compare has budgets
                for f in checked.findings if f.check not in ("outputs", "reference", "drift")]
    return CompareResult(
        header=ReportHeader.now("compare"), reference=model_info(ref),
        candidate=model_info(cand), evaluation=ev, per_layer=layers,
        gates=Gates(tuple(GateResult.from_dict(r) for r in results)),
        notes=tuple(notes + [f"candidate: {n}" for n in cand.notes]),
        validation=checked.to_dict(),
    )


def _per_layer_section(ref: rt.Model, cand: rt.Model, samples: Any, source: Path | None,
                       calib: Path | None, layer_samples: int, seed: int, notes: list[str],
                       enabled: bool) -> dict[str, Any]:
    from . import layers

    if not enabled:
        return layers.unavailable("--no-per-layer")
    first = list(itertools.islice(samples, layer_samples))
    calib_samples = None
    if calib is not None:
        calib_samples = list(EvalData(str(calib), num=CALIB_SAMPLES_FOR_LAYERS, seed=seed,
                                      max_samples=None).open(ref.inputs))
    return per_layer(ref, cand, source, first, calib_samples, notes)


def per_layer(ref: rt.Model, cand: rt.Model, source: Path | None, samples: list[dict[str, Any]],
              calib: list[dict[str, Any]] | None, notes: list[str]) -> dict[str, Any]:
    """The per-layer section: ONNX from the two files, TFLite from ``source``; else why not."""
    from . import layers

    try:
        if cand.format == "onnx" and ref.format == "onnx":
            return layers.onnx_layer_report(ref.path, cand.path, samples)
        if cand.format == "tflite" and ref.format == "tflite" and source is None:
            return layers.tflite_artifact_layer_report(ref.path, cand.path, samples)
        if cand.format == "tflite" and source is not None:
            section = layers.tflite_layer_report(source, samples, calibration=calib)
            # The debugger re-quantizes the source: its ranges come from this data, not from
            # the candidate file, so say which data calibrated it.
            section["calibration"] = ("--calib data" if calib is not None else
                                      "the --data samples (pass --calib with the candidate's "
                                      "calibration set to reproduce its ranges)")
            return section
    except EdgeOptError:
        raise
    except Exception as exc:  # a diagnostic must not sink the comparison; say why it failed
        log.debug("per-layer analysis failed", exc_info=True)
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        notes.append(f"per-layer analysis failed: {type(exc).__name__}: {first}")
        return layers.unavailable(f"{type(exc).__name__}: {first}")
    if cand.format == "tflite":
        return layers.unavailable(
            "TFLite per-layer analysis needs the float source model and data "
            "(QuantizationDebugger): pass --source MODEL.keras or a SavedModel directory",
            layers.TFLITE_METHOD)
    return layers.unavailable(
        f"ONNX per-layer analysis needs a float .onnx reference and its QDQ candidate; got "
        f"{ref.format} reference and {cand.format} candidate", layers.ONNX_METHOD)
