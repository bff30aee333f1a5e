"""Compare a candidate model with its float reference: ``run_compare(...) -> CompareResult``.

The measurement is ``edgeopt.evaluate`` (the same evaluator ``convert`` uses, so both report the
same drift and task metrics for the same models and data); this module adds what only compare
has: the reference (below), labels from a separate file, budget gates, and the per-layer
section (ONNX: the two files; TFLite: the float source re-quantized by the
QuantizationDebugger).

The reference may be (``resolve_reference``):

* a ``.tflite`` / ``.onnx`` file in the candidate's format: used as it is;
* the source model (``.keras``, ``.h5``, a SavedModel folder, or an ``.onnx`` for a TFLite
  candidate): converted to the candidate's format in float32 by the very backend call
  ``convert`` measures against (``backend.build_float``), with the candidate's input shapes;
* nothing, when the candidate is a ``convert`` output folder that kept its float reference
  (``edgeopt.reference``).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeopt_runtime.errors import CalibrationError, EdgeOptError, ModelLoadError

from . import progress
from .evaluate import (
    DEFAULT_LATENCY_RUNS,
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


@dataclass(frozen=True)
class Reference:
    """The float model a candidate is compared with, and where it came from."""

    model: rt.Model
    origin: str  # "file" | "source" | "kept"
    shown_path: str  # what the report names (the user's path, not a scratch file)
    source: Path | None = None  # a TF source (TFLite per-layer analysis re-quantizes it)
    notes: tuple[str, ...] = ()


_DIRECT = {".tflite": "tflite", ".onnx": "onnx"}


def resolve_reference(reference: Path | None, candidate: rt.Model, candidate_path: Path,
                      workdir: Path, *, threads: int | None = HOST_THREADS,
                      isolate: bool = True, input_shapes: Sequence[str] = (),
                      trust_model: bool = False) -> Reference:
    """The float reference for ``candidate`` (see the module docstring).

    Raises:
        ModelLoadError: no reference given and none kept in the candidate folder; an
            unreadable model. TargetError / UnsupportedOpError: the source cannot be
            converted to the candidate's format.
    """
    from . import reference as kept_refs

    fmt = candidate.format
    if reference is None:
        if not candidate_path.is_dir():
            raise ModelLoadError(
                f"{candidate_path}: no reference given: pass the float model first "
                f"(`edgeopt compare MODEL.keras {candidate_path} --data ...`), or compare a "
                "convert output folder (OUT/<target>) that kept its float reference")
        path = kept_refs.find(candidate_path, fmt)
        model = _candidate_layouts(ModelRef(path, threads=threads, isolate=isolate).load(),
                                   candidate)
        return Reference(model, "kept", str(path), notes=(
            f"reference: the float {fmt} model this artifact was measured against when it was "
            f"converted ({path.relative_to(candidate_path)}, sha256-checked)",))
    suffix = reference.suffix.lower()
    # A .tflite is a float model as it is; an .onnx is one for an ONNX candidate and a source
    # to convert for a TFLite candidate; anything else is a source model.
    if not reference.is_dir() and (suffix == ".tflite" or _DIRECT.get(suffix) == fmt):
        model = ModelRef(reference, threads=threads, isolate=isolate).load()
        return Reference(model, "file", str(reference))
    return _from_source(reference, candidate, candidate_path, workdir, threads=threads,
                        input_shapes=input_shapes, trust_model=trust_model)


def _from_source(reference: Path, candidate: rt.Model, candidate_path: Path, workdir: Path, *,
                 threads: int | None, input_shapes: Sequence[str],
                 trust_model: bool) -> Reference:
    """Convert a source model to the candidate's format, float32, the way convert does."""
    from edgeopt_runtime.errors import TargetError

    from .backends import get_backend
    from .sources import load_source

    fmt = candidate.format
    progress.info(f"loading {reference}")
    source = load_source(reference, trust_model=trust_model)
    backend = get_backend(fmt)
    why = backend.refuses(source)
    if why:
        raise TargetError(f"{reference}: cannot make a float {fmt} reference for "
                          f"{candidate_path}: {why}")
    shapes = reference_shapes(source, candidate, input_shapes)
    with progress.task(f"converting {reference.name} to float32 {fmt}", unit="step"):
        float_path = backend.build_float(source, shapes, workdir)
    from edgeopt_runtime.manifest import sha256_file

    notes = [f"reference: {reference} converted to float32 {fmt} the way `edgeopt convert` "
             f"does (input shapes {_shapes_text(shapes)})"]
    notes += _same_as_measured(candidate_path, fmt, sha256_file(float_path))
    model = ModelRef(float_path, threads=threads).load()  # our own output: no probe needed
    model = _candidate_layouts(model, candidate)
    return Reference(model, "source", str(reference),
                     source=reference if source.is_tensorflow else None, notes=tuple(notes))


def _candidate_layouts(model: rt.Model, candidate: rt.Model) -> rt.Model:
    """A float TFLite made from an NCHW (ONNX) source is NHWC inside, like the candidate, whose
    manifest says how apps feed it in the source's layout: feed the reference the same way
    (as convert measured it, ``convert._in_source_layout``)."""
    layouts = getattr(candidate, "layouts", None)
    if layouts is None or getattr(model, "layouts", None) is not None:
        return model
    return model.with_layouts(layouts)


def reference_shapes(source: Any, candidate: rt.Model,
                     input_shapes: Sequence[str] = ()) -> dict[str, tuple[int | None, ...]]:
    """The source's input shapes as the candidate was built with them: dims the source leaves
    dynamic take the candidate's value (matched by name, else by position), then
    ``--input-shape`` overrides.

    Raises:
        InputError: a bad ``--input-shape``.
    """
    from edgeopt_runtime.spec import parse_input_shapes

    by_name = {s.name: s for s in candidate.inputs}
    shapes: dict[str, tuple[int | None, ...]] = {}
    for i, spec in enumerate(source.inputs):
        cand = by_name.get(spec.name) or (
            candidate.inputs[i] if len(candidate.inputs) == len(source.inputs) else None)
        dims = list(spec.shape)
        if cand is not None and len(cand.shape) == len(dims):
            dims = [c if d is None else d for d, c in zip(dims, cand.shape, strict=True)]
        shapes[spec.name] = tuple(dims)
    fixed = parse_input_shapes(list(input_shapes), source.inputs) if input_shapes else {}
    return {k: tuple(fixed.get(k, v)) for k, v in shapes.items()}


def _shapes_text(shapes: dict[str, tuple[int | None, ...]]) -> str:
    return ", ".join(f"{k}=[{','.join('?' if d is None else str(d) for d in v)}]"
                     for k, v in shapes.items())


def _same_as_measured(candidate_path: Path, fmt: str, sha256: str) -> list[str]:
    """Whether the float model made here is the one convert measured the artifact against."""
    if not candidate_path.is_dir():
        return []
    from edgeopt_runtime.manifest import read_manifest

    try:
        block = read_manifest(candidate_path).data.get("reference") or {}
    except EdgeOptError:
        return []
    entry = next((m for m in block.get("models") or [] if m.get("format") == fmt), None)
    if entry is None:
        return []
    if entry.get("sha256") == sha256:
        return ["reference: byte-identical to the float model the artifact was measured "
                "against at conversion (sha256)"]
    return ["reference: differs from the float model the artifact was measured against at "
            "conversion (sha256; another source file or TensorFlow version?): drift numbers "
            "can differ from the convert report's"]


def _artifact_preprocessing(candidate: Path) -> Any:
    """The preprocessing a convert output folder recorded (so --data images get the same)."""
    if not candidate.is_dir():
        return None
    from edgeopt_runtime.manifest import read_manifest

    from .calibration import Preprocessing

    try:
        pre = read_manifest(candidate).data.get("preprocessing")
    except EdgeOptError:
        return None
    return Preprocessing.from_dict(dict(pre)) if isinstance(pre, dict) else None


@contextlib.contextmanager
def _scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="edgeopt-compare-") as d:
        yield Path(d)


def run_compare(
    reference: Path | None, candidate: Path, data: Path, *, labels_path: Path | None = None,
    num: int | None = None, seed: int = 0, threads: int | None = HOST_THREADS,
    max_eval: int | None = None, latency_runs: int = DEFAULT_LATENCY_RUNS,
    per_layer: bool = True, source: Path | None = None, calib: Path | None = None,
    layer_samples: int = DEFAULT_LAYER_SAMPLES, gates: GateOptions = GateOptions(),
    isolate: bool = True, output_kinds: tuple[tuple[str, str], ...] = (),
    input_shapes: Sequence[str] = (), preprocessing: Any = None,
    fmt: str | None = None, precision: str | None = None, trust_model: bool = False,
) -> CompareResult:
    """Compare two models on the same data.

    Args:
        reference: the float model: a ``.tflite`` / ``.onnx`` file, the source model
            (``.keras``, ``.h5``, SavedModel folder, ``.onnx``; converted to the candidate's
            format as convert does), or None for the float reference a convert output folder
            kept.
        candidate: ``.tflite`` / ``.onnx`` file or artifact directory (``fmt`` / ``precision``
            choose among its models).
        data: evaluation inputs; ``num`` / ``seed`` choose a subset, ``max_eval`` caps it
            (None: every sample, streamed; the rule convert uses).
        labels_path: class ids aligned with the data's rows (default: its ``labels``/``y``).
        threads: threads of both models.
        latency_runs: timed runs per model (0: no latency).
        per_layer / source / calib / layer_samples: the per-layer analysis (``source``
            defaults to a TF source given as ``reference``).
        gates: budgets.
        isolate: probe each model file in a child process first (a corrupt one is refused,
            not a crash of this process).
        output_kinds: ``(output name or "*", kind)`` overrides of the inferred output kinds.
        input_shapes: ``NAME=D0,D1,...`` shapes for a source reference's dynamic dims.
        preprocessing: how raw ``data`` becomes input (default: the one an artifact folder
            recorded, else none for arrays / the image default).
        trust_model: let Keras run code stored in a source reference (Lambda layers).

    Returns:
        The result record (``to_dict()`` is the ``edgeopt.report/1`` document).

    Raises:
        EdgeOptError: unreadable models, different signatures, data that does not fit,
            labels whose count does not match, bad gate values, no reference.
    """
    with _scratch() as work:
        return _run_compare(
            reference, candidate, data, work, labels_path=labels_path, num=num, seed=seed,
            threads=threads, max_eval=max_eval, latency_runs=latency_runs,
            per_layer=per_layer, source=source, calib=calib, layer_samples=layer_samples,
            gates=gates, isolate=isolate, input_shapes=input_shapes,
            preprocessing=preprocessing, fmt=fmt, precision=precision,
            trust_model=trust_model, output_kinds=output_kinds)


def _run_compare(
    reference: Path | None, candidate: Path, data: Path, work: Path, *,
    labels_path: Path | None, num: int | None, seed: int, threads: int | None,
    max_eval: int | None, latency_runs: int, per_layer: bool, source: Path | None,
    calib: Path | None, layer_samples: int, gates: GateOptions, isolate: bool,
    input_shapes: Sequence[str], preprocessing: Any, fmt: str | None, precision: str | None,
    trust_model: bool, output_kinds: tuple[tuple[str, str], ...] = (),
) -> CompareResult:
    from .drift import evaluate_gates, validity_gates
    from .validation import validate

    cand = ModelRef(candidate, threads=threads, isolate=isolate, format=fmt,
                    precision=precision).load()
    ref_info = resolve_reference(reference, cand, candidate, work, threads=threads,
                                 isolate=isolate, input_shapes=input_shapes,
                                 trust_model=trust_model)
    ref = ref_info.model
    if preprocessing is None:
        preprocessing = _artifact_preprocessing(candidate)
    spec = EvalData(str(data), num=num, seed=seed, max_samples=max_eval,
                    preprocessing=preprocessing, labels=str(labels_path) if labels_path else None)
    samples = spec.open(ref.inputs)
    for w in samples.source.warnings:
        progress.warn(w)
    drop = _parse_drop(gates.max_drop, samples.labels is not None)
    log.info("running %d samples through both models", samples.count)
    ev = evaluate(ref, cand, samples, options=EvalOptions(latency_runs=latency_runs,
                                                           output_kinds=output_kinds),
                  label="compare")
    notes = list(ev.notes)  # the reference's own notes stay with it (informational)
    layers = _per_layer_section(ref, cand, samples, source or ref_info.source, calib,
                                layer_samples, seed, notes, per_layer)
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
    ref_model = model_info(ref)
    if ref_info.origin != "file":
        ref_model = replace(ref_model, path=ref_info.shown_path,
                            notes=ref_model.notes + ref_info.notes)
    return CompareResult(
        header=ReportHeader.now("compare"), reference=ref_model,
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
    with progress.task("per-layer analysis", unit="step"):
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
        log.debug("per-layer analysis failed", exc_info=True)  # the full text: --log-file
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
