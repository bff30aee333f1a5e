"""ONNX sources (PyTorch exports) to TFLite: onnx2tf to a SavedModel, then edgeopt's own
TFLite backend, so calibration, ``--keep-float``, pre-flight and the Edge TPU compiler work
the same as for Keras sources.

Steps, all on a copy in the staging folder (the user's file is never written; onnx2tf and
onnxsim rewrite the file they are given):

1. the cleaned source graph with the target's static shapes (``onnx_rewrites.static_inputs``;
   every TFLite artifact of an ONNX source has batch 1, see ``static_shapes``);
2. in a child process with the network cut (``_onnx2tf_child``): onnxsim (installed as a
   dependency, called in-process — onnx2tf itself looks for an ``onnxsim`` command on PATH and
   silently skips it when there is none), the exact rewrites of ``onnx_rewrites`` (MaxPool
   padding, scalar-index Gather), onnx2tf's TF path (SavedModel), and a re-export with the ONNX
   IO names;
3. the layouts: each input / output whose shape onnx2tf moved to channels-last is recorded
   (``edgeopt_runtime.layout``); calibration samples are transposed on the fly;
4. **float first**: the float TFLite must reproduce the ONNX model (run by ONNX Runtime) on
   the calibration samples before anything is quantized; otherwise ``ConversionError`` — a
   converter bug, not a quantization loss — naming the first diverging tensor from onnx2tf's
   own per-tensor check (run again in diagnosis mode).

Why onnx2tf 1.28.8 and its TF path (measured 2026-12 on this host, Python 3.11):
onnx2tf 2.x (TF-free ``flatbuffer_direct`` writer) requires Python >= 3.12, which this project
does not run on. 1.29.x pins exact versions of everything it touches (tensorflow==2.19.0,
numpy==1.26.4, onnx==1.19.1, onnxruntime==1.23.0, protobuf==4.25.5, ...), so pip resolves
it only by downgrading this project's whole stack — or, when another pin forbids that,
backtracks to 1.28.x, the newest release that declares no dependencies (what an earlier
environment saw). 1.28.8 runs with TF 2.21 / Keras 3 / numpy 2.4; its helpers are
dependencies of edgeopt. A SavedModel is also what the TFLite backend quantizes from, so the
TF path is the one that keeps every feature; a direct flatbuffer writer would bypass it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from edgeopt_runtime.errors import MissingDependencyError, UnsupportedOpError
from edgeopt_runtime.layout import IOLayouts, infer

from ..sources import ModelSource
from . import BuildRequest, Sample, Shapes
from ._frameworks import import_onnx, stdout_to_stderr

TESTED_VERSION = "1.28.8"
HELPERS = ("onnx2tf", "onnxsim", "onnx_graphsurgeon", "sng4onnx", "tf_keras", "psutil")
CHILD_TIMEOUT_S = 3600.0
MIN_OPSET = 13
FLOAT_CHECK_SAMPLES = 16
# float TFLite vs ONNX: relative L2 error above this (SQNR < 60 dB) is a conversion error;
# measured agreement of correct conversions here is 1e-7..1e-6.
FLOAT_MAX_RELATIVE_ERROR = 1e-3
FLOAT_MAX_ABS_ERROR_ZERO_REF = 1e-4
SAMPLE_IMAGES = 20  # onnx2tf slices its (downloaded) sample to the batch size, <= 20
REWRITES = ("edgetpu",)


class ConversionError(UnsupportedOpError):
    """The converted float model does not compute what the source does (a converter error,
    found before quantization: not a quantization loss)."""


@dataclass
class Converted:
    """An ONNX source as a SavedModel: the TF source, its shapes, layouts and what was done."""

    source: ModelSource
    shapes: Shapes
    layouts: dict[str, dict[str, Any]]
    reference: Path  # the staged ONNX with static shapes: the float reference
    details: dict[str, Any] = field(default_factory=dict)
    # onnx2tf's (sanitized) ONNX node name -> the Keras layers it built for that node
    node_layers: dict[str, list[str]] = field(default_factory=dict)


def missing_helpers() -> str | None:
    """Why ONNX -> TFLite is unavailable here (a missing package), or None."""
    absent = [m for m in HELPERS if importlib.util.find_spec(m) is None]
    if not absent:
        return None
    return (f"ONNX sources need onnx2tf and its helpers for TFLite targets ({', '.join(absent)} "
            f"not installed); reinstall edgeopt (pip install edgeopt) or pip install "
            f"onnx2tf=={TESTED_VERSION} onnxsim onnx-graphsurgeon sng4onnx tf-keras psutil")


def static_shapes(source: ModelSource, shapes: Shapes) -> Shapes:
    """Every dynamic dim of an ONNX input fixed for TFLite: batch -> 1, others as ``shapes``
    already has them (static targets) or 1.

    onnx2tf keeps a dynamic batch as SHAPE / GATHER / CAST / int64 ops (the Edge TPU cannot
    take them, XNNPACK leaves them out); the runtime's ``run_batch`` runs batch-1 models on N
    samples, so nothing is lost.
    """
    return {s.name: tuple(1 if d is None else d for d in shapes.get(s.name, s.shape))
            for s in source.inputs}


def _key(shapes: Shapes, rewrites: Iterable[str]) -> str:
    text = repr((sorted(shapes.items()), sorted(rewrites), TESTED_VERSION))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def convert_onnx(
    source: ModelSource, shapes: Shapes, workdir: Path, *, rewrites: Iterable[str] = (),
    calib: Iterable[Sample] | None = None,
) -> Converted:
    """The ONNX source as a SavedModel for ``shapes`` (cached per shapes and rewrites).

    Raises:
        MissingDependencyError: onnx2tf or a helper is not installed.
        UnsupportedOpError: onnx2tf cannot convert the graph (its own error line).
    """
    why = missing_helpers()
    if why:
        raise MissingDependencyError("onnx2tf", f"onnx2tf=={TESTED_VERSION}", why)
    rewrites = tuple(sorted(set(rewrites)))
    shapes = static_shapes(source, shapes)
    folder = workdir / f"onnx2tf_{_key(shapes, rewrites)}"
    done = folder / "converted.json"
    if not done.is_file():
        _stage(source, shapes, folder, rewrites, calib)
        result = _run_child(source, folder)
        done.write_text(json.dumps(result))
    result = json.loads(done.read_text())
    return _converted(source, shapes, folder, result)


def _stage(source: ModelSource, shapes: Shapes, folder: Path, rewrites: tuple[str, ...],
           calib: Iterable[Sample] | None) -> None:
    """Write the job: the staged ONNX copy, a local sample for onnx2tf's check, options."""
    from .onnx_rewrites import EDGETPU_PSEUDO, edgetpu_rewrites, static_inputs

    onnx = import_onnx()
    folder.mkdir(parents=True, exist_ok=True)
    model = onnx.ModelProto()
    model.CopyFrom(source.handle)  # the loaded, cleaned graph; the user's file is not touched
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        model = onnx.version_converter.convert_version(model, MIN_OPSET)
    static_inputs(model, shapes)
    model = onnx.shape_inference.infer_shapes(model)
    onnx.save(model, str(folder / "reference.onnx"))
    onnx.save(model, str(folder / "model.onnx"))
    options: dict[str, Any] = {}
    pseudo = edgetpu_rewrites(model) if "edgetpu" in rewrites else {}
    if pseudo:
        # onnx2tf's API compares lower-case names (only its CLI lower-cases them)
        options["replace_to_pseudo_operators"] = sorted(op.lower() for op in pseudo)
    job = {
        "onnx": "model.onnx", "out": "savedmodel_onnx2tf", "named": "savedmodel",
        "inputs": [s.name for s in source.inputs], "outputs": [s.name for s in source.outputs],
        "sample": _write_sample(source, shapes, folder, calib), "options": options,
        "rewrites": {op: {"count": n, "as": EDGETPU_PSEUDO[op]} for op, n in pseudo.items()},
    }
    (folder / "job.json").write_text(json.dumps(job, indent=1))


def _write_sample(source: ModelSource, shapes: Shapes, folder: Path,
                  calib: Iterable[Sample] | None) -> str | None:
    """onnx2tf's output check downloads 20 sample images for single-or-multi 3-channel image
    inputs with a fixed batch; feed it the first calibration samples (NHWC) instead."""
    spec = source.inputs[0]
    shape = shapes[spec.name]
    if calib is None or len(source.inputs) != 1 or len(shape) != 4 or shape[1] != 3:
        return None
    rows = []
    for sample in calib:
        rows.append(np.asarray(sample[spec.name], np.float32).transpose(0, 2, 3, 1))
        if sum(len(r) for r in rows) >= SAMPLE_IMAGES:
            break
    if not rows:
        return None
    np.save(folder / "sample_nhwc.npy", np.concatenate(rows)[:SAMPLE_IMAGES])
    return "sample_nhwc.npy"


def _check_data(folder: Path, job: dict[str, Any]) -> str:
    """What onnx2tf's own output check ran on (never its downloaded sample)."""
    if job.get("sample"):
        n = len(np.load(folder / job["sample"], mmap_mode="r", allow_pickle=False))
        return f"{n} calibration samples"
    return "seeded random images or ones (no downloaded sample)"


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="0", CUDA_VISIBLE_DEVICES="-1",
               PYTHONUNBUFFERED="1")
    return env


def _run_child(source: ModelSource, folder: Path, job: str = "job.json") -> dict[str, Any]:
    """Run ``_onnx2tf_child`` on ``folder/job``; its result, or a one-line error.

    Raises:
        UnsupportedOpError: the child failed or died (its error line, or the log's last one).
    """
    (folder / "result.json").unlink(missing_ok=True)
    log = folder / f"{Path(job).stem}.log"
    with open(log, "wb") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "edgeopt.backends._onnx2tf_child", job], cwd=folder,
            env=_child_env(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            timeout=CHILD_TIMEOUT_S, check=False,
        )
    result_path = folder / "result.json"
    result = json.loads(result_path.read_text()) if result_path.is_file() else {}
    if proc.returncode == 0 and result.get("ok"):
        return result
    why = result.get("error") or (
        f"the onnx2tf process died with signal {-proc.returncode}" if proc.returncode < 0
        else f"the onnx2tf process exited with {proc.returncode}")
    detail = _log_error(log)
    raise UnsupportedOpError(
        f"{source.path}: onnx2tf could not convert the model to TFLite: {why}"
        + (f" ({detail})" if detail and detail not in why else "")
    )


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _log_error(log: Path) -> str | None:
    """The last ``ERROR:`` line onnx2tf printed (colour codes removed)."""
    try:
        lines = _ANSI.sub("", log.read_text(errors="replace")).splitlines()
    except OSError:
        return None
    errors = [ln.split("ERROR:", 1)[1].strip() for ln in lines if "ERROR:" in ln]
    errors = [e for e in errors if e]
    return errors[-1][:300] if errors else None


def _converted(source: ModelSource, shapes: Shapes, folder: Path,
               result: dict[str, Any]) -> Converted:
    from ..sources import load_source

    with stdout_to_stderr():
        tf_source = load_source(folder / "savedmodel")
    layouts: dict[str, dict[str, Any]] = {"inputs": {}, "outputs": {}}
    pairs = (("inputs", source.inputs, tf_source.inputs, shapes),
             ("outputs", source.outputs, tf_source.outputs, None))
    for which, onnx_specs, tf_specs, fixed in pairs:
        tf_by_name = {s.name: s for s in tf_specs}
        for spec in onnx_specs:
            got = tf_by_name[spec.name]
            want = fixed[spec.name] if fixed else spec.shape
            try:
                lay = infer(want, got.shape) if fixed else _output_layout(want, got.shape)
            except ValueError as exc:
                raise UnsupportedOpError(
                    f"{source.path}: onnx2tf changed {which[:-1]} '{spec.name}' in a way edgeopt "
                    f"cannot map back: {exc}") from None
            if lay is not None:
                layouts[which][spec.name] = lay.to_dict()
    job = json.loads((folder / "job.json").read_text())
    details = {
        "converter": f"onnx2tf {result.get('onnx2tf')} (TF path: SavedModel -> TFLite backend)",
        "simplifier": result.get("simplifier"),
        "maxpool_padding": result.get("maxpool_padding"),
        "gather_as_slice": result.get("gather_as_slice", 0),
        "rewrites": job.get("rewrites") or {},
        "network_blocked": result.get("network_blocked") or [],
        "static_shapes": {k: list(v) for k, v in shapes.items()},
        "output_check_data": _check_data(folder, job),
    }
    return Converted(tf_source, {s.name: tuple(s.shape) for s in tf_source.inputs}, layouts,
                     folder / "reference.onnx", details, result.get("node_layers") or {})


def _output_layout(onnx_shape: tuple[int | None, ...],
                   tf_shape: tuple[int | None, ...]) -> Any:
    """Output layouts: ONNX output dims may be symbolic; compare where both are known."""
    if len(onnx_shape) != len(tf_shape):
        raise ValueError(f"rank {len(onnx_shape)} became {len(tf_shape)}")
    known = [d if d is not None else t for d, t in zip(onnx_shape, tf_shape, strict=True)]
    return infer(known, tf_shape)


# ------------------------------------------------------------------------------ calibration


class TransposedSamples:
    """Re-iterable view of calibration samples in the model's layout (NCHW -> NHWC)."""

    def __init__(self, samples: Iterable[Sample], layouts: Mapping[str, Any]) -> None:
        from edgeopt_runtime.layout import Layout

        self._samples = samples
        self._perms = {name: Layout.from_dict(d, len(d["perm"]), name).perm
                       for name, d in (layouts.get("inputs") or {}).items()}

    def __len__(self) -> int:
        return len(self._samples)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for sample in self._samples:
            yield {k: np.ascontiguousarray(np.asarray(v).transpose(self._perms[k]))
                   if k in self._perms else v for k, v in sample.items()}


# ------------------------------------------------------------------------------ float check


def _first(samples: Iterable[Sample], n: int) -> list[dict[str, np.ndarray]]:
    out = []
    for sample in samples:
        out.append({k: np.asarray(v) for k, v in sample.items()})
        if len(out) >= n:
            break
    return out


def float_check(source: ModelSource, conv: Converted, float_tflite: Path,
                samples: Iterable[Sample] | None) -> dict[str, Any]:
    """Compare the float TFLite with the ONNX model (ONNX Runtime) on calibration samples.

    Returns:
        ``{"samples": n, "passed": bool, "outputs": [{name, max_abs_error, relative_error,
        cosine}], "first_diverging_tensor": ...}`` (cached per conversion).

    Raises:
        ConversionError: the float TFLite does not reproduce the ONNX model.
    """
    cache = conv.reference.parent / f"float_check_{float_tflite.stem}.json"
    if cache.is_file():
        check = json.loads(cache.read_text())
    else:
        check = _measure(source, conv, float_tflite, samples)
        if not check["passed"] and not check.get("source_nonfinite"):
            check["first_diverging_tensor"] = _diagnose(source, conv)
        cache.write_text(json.dumps(check))
    if not check["passed"] and check.get("source_nonfinite"):
        raise UnsupportedOpError(_source_message(source, conv, check))
    if not check["passed"]:
        raise ConversionError(_failure_message(source, check))
    return check


def _source_hint(conv: Converted) -> str:
    """Names the largest weight of the staged ONNX when it is absurd (a damaged file)."""
    from .onnx import LARGE_WEIGHT, _largest_weight

    name, value = _largest_weight(conv.reference)
    return (f"; the model holds a weight of magnitude {value:.3g} ({name!r}): is the source "
            "corrupt?" if value > LARGE_WEIGHT else "")


def _source_message(source: ModelSource, conv: Converted, check: dict[str, Any]) -> str:
    worst = next(o for o in check["outputs"] if not o["passed"])
    return (f"{source.path}: the ONNX model itself gives {worst['reference_nonfinite']} "
            f"non-finite values in output {worst['name']!r} on {check['samples']} calibration "
            f"samples (the float TFLite: {worst['candidate_nonfinite']}, not at the same "
            f"places), so its conversion cannot be checked{_source_hint(conv)}; nothing was "
            "quantized")


class _Head:
    """The first calibration samples, in memory, as the evaluator reads a data source."""

    def __init__(self, samples: list[dict[str, np.ndarray]]) -> None:
        self._samples = samples
        self.count = len(samples)
        h = hashlib.sha256()
        for sample in samples:
            for name in sorted(sample):
                a = np.ascontiguousarray(sample[name])
                h.update(f"{name}{a.dtype}{a.shape}".encode())
                h.update(a.tobytes())
        self.sha256 = h.hexdigest()
        self.source = f"the first {self.count} calibration samples"
        self.format, self.synthetic, self.warnings = "memory", False, []

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return iter(self._samples)


def _measure(source: ModelSource, conv: Converted, float_tflite: Path,
             samples: Iterable[Sample] | None) -> dict[str, Any]:
    """The float TFLite (fed in the source layout) against the staged ONNX, through the one
    evaluator (``edgeopt.evaluate``: same pairing, per-sample outputs and drift metrics as
    ``convert`` and ``compare``), without latency."""
    from ..evaluate import EvalData, EvalOptions, EvalSamples, ModelRef, evaluate

    batch = _first(samples or (), FLOAT_CHECK_SAMPLES)
    if not batch:
        return {"samples": 0, "passed": True, "outputs": [], "note": "no samples to compare"}
    ref = ModelRef.host_cpu(conv.reference).load()
    plain = ModelRef.host_cpu(float_tflite).load()
    cand = plain.with_layouts(IOLayouts.from_dict(conv.layouts, plain.inputs, plain.outputs))
    head = _Head(batch)
    data = EvalSamples(EvalData(None, max_samples=FLOAT_CHECK_SAMPLES, role="float check"),
                       head, None, None, None)  # type: ignore[arg-type]
    evaluation = evaluate(ref, cand, data, options=EvalOptions(latency_runs=0, keep_outputs=True),
                          data_warnings=False)
    assert evaluation.outputs is not None
    stacks = zip(evaluation.outputs.reference.stacked(), evaluation.outputs.candidate.stacked(),
                 strict=True)
    outputs = [_output_check(d, r, c) for d, (r, c) in zip(evaluation.drift, stacks, strict=True)]
    check = {"samples": len(batch), "passed": all(o["passed"] for o in outputs),
             "outputs": outputs, "reference": "ONNX Runtime on the staged ONNX (static shapes)",
             "evaluator": "edgeopt.evaluate", "data_sha256": head.sha256,
             "threshold_relative_error": FLOAT_MAX_RELATIVE_ERROR}
    if any(o.get("reference_nonfinite") for o in outputs):
        check["source_nonfinite"] = True  # the ONNX model itself: not onnx2tf's doing
    return check


def _output_check(d: Any, ref: np.ndarray, cand: np.ndarray) -> dict[str, Any]:
    """One output of the float check: the evaluator's metrics; where outputs are non-finite
    (a damaged source can overflow), the same non-finite values at the same places and the
    finite rest compared the same way."""
    m = dict(d.metrics)
    row: dict[str, Any] = {"name": d.name}
    if d.nonfinite:
        r, c = ref.astype(np.float64).ravel(), cand.astype(np.float64).ravel()
        r_bad, c_bad = ~np.isfinite(r), ~np.isfinite(c)
        same = bool(np.array_equal(r_bad, c_bad)
                    and np.array_equal(r[r_bad], c[r_bad], equal_nan=True))
        ok = ~(r_bad | c_bad)
        m = _errors(r[ok], c[ok])
        row.update(reference_nonfinite=int(r_bad.sum()), candidate_nonfinite=int(c_bad.sum()),
                   nonfinite_agree=same)
    row.update(max_abs_error=m.get("max_abs_error"), relative_error=m.get("relative_error"),
               cosine=m.get("cosine"))
    if row.get("nonfinite_agree") is False:
        passed = False
    elif m.get("relative_error") is None:  # reference all zeros (or nothing finite left)
        passed = (m.get("max_abs_error") or 0.0) <= FLOAT_MAX_ABS_ERROR_ZERO_REF
    else:
        passed = m["relative_error"] <= FLOAT_MAX_RELATIVE_ERROR
    row["passed"] = bool(passed)
    return row


def _errors(ref: np.ndarray, cand: np.ndarray) -> dict[str, float | None]:
    """Max abs / relative L2 error and cosine of the finite values (``edgeopt.drift``'s
    definitions)."""
    if not ref.size:
        return {"max_abs_error": None, "relative_error": None, "cosine": None}
    diff = ref - cand
    norm_r, norm_c = float(np.linalg.norm(ref)), float(np.linalg.norm(cand))
    return {"max_abs_error": float(np.max(np.abs(diff))),
            "relative_error": float(np.linalg.norm(diff)) / norm_r if norm_r else None,
            "cosine": float(ref @ cand) / (norm_r * norm_c) if norm_r and norm_c else None}


def _diagnose(source: ModelSource, conv: Converted) -> dict[str, Any] | None:
    """Re-run onnx2tf with its per-tensor ONNX-vs-TF check; the first unmatched tensor."""
    folder = conv.reference.parent
    job = json.loads((folder / "job.json").read_text())
    job.update(out="diagnose_onnx2tf", named="diagnose_named", validate=True)
    job["onnx"] = "diagnose.onnx"
    (folder / "diagnose.onnx").write_bytes((folder / "reference.onnx").read_bytes())
    job["options"] = {**job.get("options", {}),
                      "check_onnx_tf_outputs_elementwise_close_full": True}
    (folder / "diagnose.json").write_text(json.dumps(job))
    try:
        result = _run_child(source, folder, "diagnose.json")
    except UnsupportedOpError:
        return None
    for row in result.get("validation") or []:
        if row["matched"] == 0:
            return {"tensor": re.sub("^wa/", "/", row["tensor"]),
                    "max_abs_error": row["max_abs_error"],
                    "checked": len(result["validation"])}
    return {"tensor": None, "checked": len(result.get("validation") or [])}


def _failure_message(source: ModelSource, check: dict[str, Any]) -> str:
    worst = next(o for o in check["outputs"] if not o["passed"])
    def num(key: str, spec: str) -> str:
        return "n/a" if worst.get(key) is None else format(worst[key], spec)

    what = (f"{worst['candidate_nonfinite']} non-finite values" if worst.get(
        "candidate_nonfinite") else f"max abs error {num('max_abs_error', '.3g')}, relative error "
            f"{num('relative_error', '.3g')}, cosine {num('cosine', '.6f')}")
    first = check.get("first_diverging_tensor") or {}
    where = (f"; first diverging tensor (onnx2tf's per-tensor check): {first['tensor']!r} "
             f"(max abs error {first['max_abs_error']:.3g})" if first.get("tensor") else
             "; onnx2tf's per-tensor check found no single diverging tensor")
    return (f"{source.path}: conversion error, not a quantization loss: the float TFLite made by "
            f"onnx2tf does not reproduce the ONNX model on {check['samples']} calibration "
            f"samples (output {worst['name']!r}: {what}){where}; nothing was quantized")


# ------------------------------------------------------------------------------ backend hook


def build_via_onnx2tf(backend: Any, req: BuildRequest) -> Any:
    """``TFLiteBackend.build`` for an ONNX source: convert, check in float, then quantize the
    SavedModel with the TFLite backend itself (so every TFLite feature applies unchanged).

    On an Edge TPU target the ONNX ops that a ``--rewrite edgetpu`` replacement exists for are
    either rewritten (when asked: the plain model is built too, and both are pre-flighted so
    the report holds the mapped-op count before and after) or named in a note offering it.

    Returns:
        The backend's ``Built`` with ``details["onnx2tf"]`` (converter, simplifier, rewrites,
        float check), ``details["layouts"]`` and ``float_path`` (the checked float TFLite).

    Raises:
        ConversionError: the float TFLite does not reproduce the ONNX model.
        UnsupportedOpError: onnx2tf or the TFLite converter failed (named by the source path).
    """
    from .onnx_rewrites import EDGETPU_PSEUDO, edgetpu_rewrites

    tpu = req.profile.runtime.tflite_delegate.value == "edgetpu"
    rewritable = edgetpu_rewrites(req.source.handle) if tpu else {}
    if not (rewritable and "edgetpu" in req.rewrites):
        built = _build_one(backend, replace(req, rewrites=()))
        if rewritable:
            ops = ", ".join(f"{op} x{n} -> {EDGETPU_PSEUDO[op]}" for op, n in rewritable.items())
            built.notes.append(f"the Edge TPU lacks ops this graph uses; --rewrite edgetpu "
                               f"replaces them exactly ({ops})")
        return built
    before = _build_one(backend, replace(
        req, rewrites=(), out_path=req.workdir / f"norewrite_{req.out_path.name}"))
    after = _build_one(backend, req)
    after.details["rewrite"] = {
        "rewrite": "edgetpu", "replaced": rewritable,
        "before": _mapped(before.path, req), "after": _mapped(after.path, req),
    }
    b, a = after.details["rewrite"]["before"], after.details["rewrite"]["after"]
    after.notes.append(f"--rewrite edgetpu: {b.get('delegated')} of {b.get('ops')} ops mapped "
                       f"to the Edge TPU before, {a.get('delegated')} of {a.get('ops')} after")
    return after


def _mapped(path: Path, req: BuildRequest) -> dict[str, Any]:
    """Pre-flight op counts of one model for the request's target."""
    from edgeopt_runtime.errors import EdgeOptError

    from ..inspect import preflight

    try:
        summary = preflight(path, req.profile).get("summary") or {}
    except EdgeOptError as exc:
        return {"error": str(exc)}
    return {k: summary.get(k) for k in ("ops", "delegated", "cpu", "verdict")}


def _build_one(backend: Any, req: BuildRequest) -> Any:
    conv = convert_onnx(req.source, req.input_shapes, req.workdir, rewrites=req.rewrites,
                        calib=req.calib)
    float_path = backend.build_float(conv.source, conv.shapes, req.workdir)
    check = float_check(req.source, conv, float_path, req.calib)
    calib = TransposedSamples(req.calib, conv.layouts) if req.calib is not None else None
    recipe = req.resolved(backend.name)
    keep = keep_float_map(req.source, conv, float_path, recipe.keep_float)
    inner = replace(req, source=conv.source, input_shapes=conv.shapes, calib=calib,
                    recipe=replace(recipe, keep_float=tuple(keep["tflite_patterns"])),
                    keep_float=())
    try:
        built = backend.build(inner)
    except UnsupportedOpError as exc:  # name the user's file, not the staging SavedModel
        shown = f"{req.source.path} (converted by onnx2tf)"
        raise type(exc)(str(exc).replace(str(conv.source.path), shown)) from None
    _check_loads(req.source, built.path, conv)
    # the recipe as the caller gave it (its key names the candidate in tune / sweep)
    built.details.update(recipe=recipe.to_dict(), recipe_key=recipe.key())
    if recipe.keep_float and not built.details.get("keep_float"):
        built.details["keep_float_unmatched"] = list(recipe.keep_float)
    built.details["onnx2tf"] = {**conv.details, "float_check": check,
                                **({"keep_float": keep} if recipe.keep_float else {})}
    built.details["layouts"] = conv.layouts
    if check.get("source_nonfinite"):
        n = sum(o.get("reference_nonfinite", 0) for o in check["outputs"])
        built.notes.append(f"the ONNX model itself gives {n} non-finite output values on the "
                           f"first {check['samples']} calibration samples (the float TFLite "
                           f"gives the same){_source_hint(conv)}")
    if keep["not_converted"]:
        built.notes.append(f"--keep-float: ONNX node(s) {', '.join(keep['not_converted'][:5])} "
                           "are not in the converted graph (folded away by onnxsim)")
    built.float_path = float_path
    return built


def _sanitized(name: str) -> str:
    """An ONNX node name as onnx2tf's converter renames it (TF scope names cannot hold ':'
    or start with '/')."""
    return re.sub("^/", "wa/", name.replace(":", "__"))


def keep_float_map(source: ModelSource, conv: Converted, float_tflite: Path,
                   patterns: Iterable[str]) -> dict[str, Any]:
    """``--keep-float`` regexes on the ONNX node names, as patterns on the converted model's
    TFLite tensor names.

    onnx2tf names TF ops after Keras layers (``model/tf.math.add_3/Add``), not ONNX nodes, so
    each ONNX node the pattern finds (``re.search``) becomes the layers onnx2tf built for it
    (recorded in its child) and, for a node producing a model output, that output's TFLite
    tensor. A pattern that finds no ONNX node is kept as it is: it then matches TFLite tensor
    names, as for Keras sources.

    Returns:
        ``{"patterns", "onnx_nodes": {node: [layers]}, "not_converted": [nodes onnxsim folded
        away], "tflite_patterns"}``.
    """
    patterns = list(patterns)
    graph = source.handle.graph
    outputs = {o.name for o in graph.output}
    out_tensors = _signature_output_tensors(float_tflite) if patterns else {}
    by_node: dict[str, list[str]] = {}
    for name, layers in conv.node_layers.items():
        base = re.sub(r"_edgeopt_[a-z]+$", "", name)  # Pad / Slice nodes of onnx_rewrites
        by_node.setdefault(base, []).extend(layers)
    found: dict[str, list[str]] = {}
    gone: list[str] = []
    tflite: list[str] = []
    for pattern in patterns:
        rx = re.compile(pattern)
        nodes = [n for n in graph.node if n.name and rx.search(n.name)]
        if not nodes:
            tflite.append(pattern)  # no ONNX node: a TFLite tensor-name pattern
            continue
        for node in nodes:
            layers = by_node.get(_sanitized(node.name), [])
            if not layers:
                gone.append(node.name)
                continue
            found[node.name] = layers
            tflite += [f"(^|[/;]){re.escape(layer)}/" for layer in layers]
            tflite += [f"^{re.escape(out_tensors[o])}$" for o in node.output
                       if o in outputs and o in out_tensors]
    return {"patterns": patterns, "onnx_nodes": found,
            "not_converted": list(dict.fromkeys(gone)),
            "tflite_patterns": list(dict.fromkeys(tflite))}


def _signature_output_tensors(path: Path) -> dict[str, str]:
    """Signature output name -> TFLite tensor name (``output`` -> ``PartitionedCall:0``): the
    last op's tensor is named after the function output, not after its layer."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=path.read_bytes())
    names = {d["index"]: d["name"] for d in interp.get_tensor_details()}
    sigs = interp._get_full_signature_list()  # noqa: SLF001 - {key: {"outputs": {name: index}}}
    return {name: names[i] for sig in sigs.values()
            for name, i in (sig.get("outputs") or {}).items() if i in names}


def _check_loads(source: ModelSource, path: Path, conv: Converted) -> None:
    """The runtime's structural check of the produced file, reported against the user's model.

    Absurd weights in a damaged source (a byte run can make a weight 1e25) still convert, but
    can quantize into scales the runtime refuses; say so naming the source and the weight, not
    a staging path.

    Raises:
        UnsupportedOpError: the runtime refuses the produced model.
    """
    import edgeopt_runtime as rt
    from edgeopt_runtime.errors import ModelLoadError

    try:
        with stdout_to_stderr():
            rt.load(path, threads=1, delegate="none")
    except ModelLoadError as exc:
        why = str(exc).split(": ", 1)[-1]
        raise UnsupportedOpError(f"{source.path}: the TFLite model converted from it is "
                                 f"unusable ({why[:200]}){_source_hint(conv)}") from None
