"""Artifact validation: is a quantized model file sound, and did it behave on the validation run?

Run by ``convert`` on every artifact it builds (and by ``compare`` on its candidate) after
quantization, for every format:

* **quantization parameters** — scales must be finite, positive and neither absurd (one int8 step
  above ``MAX_SCALE``: every ordinary value quantizes to the zero point; a −inf attention mask
  calibrated with min/max gives scale = inf) nor vanishing (below ``MIN_SCALE``: requantization
  multipliers underflow); zero points must lie in their integer type's range and have one value
  per scale;
* **weights and biases** — no NaN / inf in any float constant a weight-carrying op reads (conv,
  matmul, fully-connected filters and their biases), and no NaN constant anywhere;
* **outputs** (``edgeopt.drift`` of the validation run) — NaN / inf on any sample where the float
  model's outputs are finite; a float reference that is itself non-finite or constant.

A finding is ``failed`` (the artifact is broken: do not ship it) or ``degraded`` (it runs, but its
numbers cannot be trusted); each names the tensor or node, the cause and what to do. ONNX is read
with ``onnx`` (a converter-side module), TFLite with the runtime's own checked flatbuffer reader.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from edgeopt_runtime.errors import EdgeOptError

from .recipes.ranges import ABSURD
from .results import OutputDrift, Status

MAX_SCALE = ABSURD / 255.0  # an int8 step of ~3.9e5: the range rule of edgeopt.recipes.ranges
MIN_SCALE = 1e-30  # below float32's normal range once multiplied by another scale
MAX_FINDINGS = 50  # per artifact: a broken model repeats one cause on every layer
# Median per-sample SQNR below this: the quantization noise carries more energy than the signal
# on most samples — the output no longer says what the float one does (0 dB: noise = signal).
NOISE_FLOOR_DB = 0.0

_INT_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767),
               "uint16": (0, 65535), "int4": (-8, 7), "uint4": (0, 15),
               "int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
# ONNX ops whose float initializer inputs are all quantization scales.
_ONNX_QLINEAR = {"QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul", "QLinearSigmoid",
                 "QLinearLeakyRelu", "QLinearSoftmax", "QLinearGlobalAveragePool",
                 "QLinearAveragePool", "QLinearConcat", "QLinearWhere", "QGemm", "QAttention",
                 "QLinearReduceMean"}
# (op, input position) pairs that hold a weight or a bias.
_ONNX_WEIGHTS = {("MatMul", 0), ("MatMul", 1), ("Gemm", 1), ("Gemm", 2), ("Conv", 1),
                 ("Conv", 2), ("ConvTranspose", 1), ("ConvTranspose", 2),
                 ("QuantizeLinear", 0), ("MatMulNBits", 5)}
_ONNX_BIAS_AFTER = {"MatMul", "Gemm", "Conv", "MatMulInteger", "ConvInteger", "Mul",
                    "MatMulNBits", "QLinearMatMul"}
_TFLITE_WEIGHTS = {("CONV_2D", 1), ("CONV_2D", 2), ("DEPTHWISE_CONV_2D", 1),
                   ("DEPTHWISE_CONV_2D", 2), ("FULLY_CONNECTED", 1), ("FULLY_CONNECTED", 2),
                   ("TRANSPOSE_CONV", 1), ("TRANSPOSE_CONV", 3), ("BATCH_MATMUL", 1),
                   ("CONV_3D", 1), ("CONV_3D", 2)}


class ValidationFailed(EdgeOptError):
    """An artifact of a convert run failed validation or is degraded.

    Raised after the report and every artifact were written (``report`` holds the
    ``ConvertReport``); exit code 1, like a failed gate (``--allow-invalid`` exits 0).
    """

    exit_code = 1

    def __init__(self, message: str, report: Any) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class Finding:
    """One problem: what was checked, where, why it matters and what to do."""

    status: Status  # FAILED (broken) or DEGRADED (runs, numbers untrustworthy)
    check: str  # "scale" | "zero-point" | "weights" | "outputs" | "reference" | "file" | "drift"
    where: str  # tensor / node / output name
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status.value, "check": self.check, "where": self.where,
                "message": self.message}


@dataclass(frozen=True)
class Validation:
    """Every finding of one artifact, and what was looked at."""

    findings: tuple[Finding, ...]
    checked: Mapping[str, int]  # e.g. {"scales": 120, "weights": 40, "outputs": 1}
    more: int = 0  # findings beyond MAX_FINDINGS, counted only

    @property
    def status(self) -> Status:
        states = {f.status for f in self.findings}
        if Status.FAILED in states:
            return Status.FAILED
        return Status.DEGRADED if states else Status.OK

    @property
    def reason(self) -> str | None:
        """The first finding of the worst status, with a count of the others."""
        worst = [f for f in self.findings if f.status is self.status]
        if not worst:
            return None
        rest = len(self.findings) + self.more - 1
        return worst[0].message + (f" (+{rest} more finding(s))" if rest else "")

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status.value, "reason": self.reason,
                "findings": [f.to_dict() for f in self.findings], "more": self.more,
                "checked": dict(self.checked)}


def validate(path: Path, drift: Sequence[OutputDrift] = (), *,
             first_nonfinite: str | None = None) -> Validation:
    """Check one model file (``.onnx`` / ``.tflite``) and its validation-run drift.

    Args:
        path: the quantized model file.
        drift: the evaluation's drift records (empty: outputs not checked).
        first_nonfinite: where the per-layer analysis saw NaN/inf first (named in the message
            about non-finite outputs).

    Returns:
        The findings (at most ``MAX_FINDINGS``, the rest counted).
    """
    checked: dict[str, int] = {}
    if path.suffix == ".onnx":
        found = check_onnx(path, checked)
    elif path.suffix == ".tflite":
        found = check_tflite(path, checked)
    else:
        found = []
    found += check_outputs(drift, first_nonfinite=first_nonfinite)
    checked["outputs"] = len(drift)
    found.sort(key=lambda f: f.status is not Status.FAILED)  # broken first, stable otherwise
    return Validation(tuple(found[:MAX_FINDINGS]), checked, max(0, len(found) - MAX_FINDINGS))


# ------------------------------------------------------------------------------ scales


def scale_problem(scale: np.ndarray) -> str | None:
    """Why a quantization scale tensor is unusable, or None."""
    s = np.asarray(scale, dtype=np.float64).ravel()
    if s.size == 0:
        return "is empty"
    if not np.all(np.isfinite(s)):
        bad = s[~np.isfinite(s)]
        return (f"is {bad[0]:g} on {bad.size} of {s.size} channel(s): the tensor's calibration "
                "range is non-finite (a -inf mask or padding)")
    if np.any(s <= 0):
        return f"is {float(s[s <= 0][0]):g} (scales must be > 0)"
    if np.any(s > MAX_SCALE):
        return (f"is {float(s.max()):.3g} (> {MAX_SCALE:.3g}): one quantization step swallows "
                "every ordinary value (an absurd calibration range: a masking constant?)")
    if np.any(s < MIN_SCALE):
        return (f"is {float(s.min()):.3g} (< {MIN_SCALE:g}): requantization multipliers "
                "underflow (a calibration range of ~0 or a -FLT_MAX padding)")
    return None


def zero_point_problem(zp: np.ndarray, dtype: str, scale_size: int | None) -> str | None:
    """Why a zero point tensor does not fit its integer type (or its scale), or None."""
    z = np.asarray(zp).ravel()
    bounds = _INT_RANGES.get(dtype)
    if bounds is not None and z.size:
        lo, hi = bounds
        if int(z.min()) < lo or int(z.max()) > hi:
            worst = int(z.min()) if int(z.min()) < lo else int(z.max())
            return f"is {worst}, outside the {dtype} range [{lo}, {hi}]"
    if scale_size is not None and z.size not in (0, 1, scale_size):
        return f"has {z.size} values for {scale_size} scale(s)"
    return None


def _nonfinite(values: np.ndarray) -> str | None:
    v = np.asarray(values)
    if v.dtype.kind not in "fc" or not v.size:
        return None
    nan, inf = int(np.isnan(v).sum()), int(np.isinf(v).sum())
    if not (nan or inf):
        return None
    return f"holds {nan} NaN and {inf} inf of {v.size} values"


# ------------------------------------------------------------------------------ ONNX


def check_onnx(path: Path, checked: dict[str, int] | None = None) -> list[Finding]:
    """Quantization parameters and weights of an ONNX model (see the module docstring)."""
    import onnx
    from onnx import numpy_helper

    checked = {} if checked is None else checked
    graph = onnx.load(str(path)).graph
    inits = {i.name: i for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    arrays: dict[str, np.ndarray] = {}

    def arr(name: str) -> np.ndarray:
        if name not in arrays:
            arrays[name] = numpy_helper.to_array(inits[name])
        return arrays[name]

    out: list[Finding] = []
    scales = weights = 0
    seen_weights: set[str] = set()
    for node in graph.node:
        label = f"{node.op_type} {node.name!r}" if node.name else node.op_type
        for scale_name, zp_name in _onnx_params(node, inits):
            scales += 1
            why = scale_problem(arr(scale_name))
            tensor = node.input[0] if node.input else scale_name
            if why:
                out.append(Finding(Status.FAILED, "scale", node.name or scale_name,
                                   f"{label}: scale {scale_name!r} of {tensor!r} {why}; "
                                   "keep it float (--keep-float "
                                   f"'{_onnx_regex(node, producers)}')"))
            if zp_name:
                zp = arr(zp_name)
                zwhy = zero_point_problem(zp, str(zp.dtype), arr(scale_name).size)
                if zwhy:
                    out.append(Finding(Status.FAILED, "zero-point", node.name or zp_name,
                                       f"{label}: zero point {zp_name!r} {zwhy}"))
        for pos, name in enumerate(node.input):
            if name not in inits or name in seen_weights:
                continue
            if not _is_onnx_weight(node, pos, inits, producers):
                continue
            seen_weights.add(name)
            weights += 1
            why = _nonfinite(arr(name))
            if why:
                out.append(Finding(Status.FAILED, "weights", name,
                                   f"weight {name!r} of {label} {why}: the model computes "
                                   "garbage there (is the float source damaged?)"))
    for name, init in inits.items():  # NaN is never a meaningful constant
        if name in seen_weights or init.data_type not in (1, 10, 11, 16):
            continue
        values = arr(name) if name in arrays else numpy_helper.to_array(init)
        if values.dtype.kind == "f" and values.size and np.isnan(values).any():
            out.append(Finding(Status.FAILED, "weights", name,
                               f"constant {name!r} holds {int(np.isnan(values).sum())} NaN "
                               "values"))
    checked.update(scales=scales, weights=weights)
    return out


def _onnx_params(node: Any, inits: Mapping[str, Any]) -> Iterable[tuple[str, str | None]]:
    """(scale initializer, zero-point initializer or None) of a node's quantization
    parameters (constants only: a scale computed at run time is checked by the output run)."""
    ins = list(node.input)
    if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
        if len(ins) > 1 and ins[1] in inits:
            zp = ins[2] if len(ins) > 2 and ins[2] in inits else None
            yield ins[1], zp
    elif node.op_type in _ONNX_QLINEAR:
        for pos, name in enumerate(ins):
            if name in inits and inits[name].data_type in (1, 10, 11, 16):  # float: a scale
                nxt = ins[pos + 1] if pos + 1 < len(ins) else ""
                zp = nxt if nxt in inits and inits[nxt].data_type not in (1, 10, 11, 16) else None
                yield name, zp
    elif node.op_type == "MatMulNBits" and len(ins) > 2 and ins[2] in inits:
        yield ins[2], None


def _is_onnx_weight(node: Any, pos: int, inits: Mapping[str, Any],
                    producers: Mapping[str, Any]) -> bool:
    if (node.op_type, pos) in _ONNX_WEIGHTS:
        return inits[node.input[pos]].data_type in (1, 10, 11, 16)
    if node.op_type == "Add" and len(node.input) == 2:  # a bias after a weight op
        other = node.input[1 - pos]
        prod = producers.get(other)
        return prod is not None and prod.op_type in _ONNX_BIAS_AFTER
    return False


def _onnx_regex(node: Any, producers: Mapping[str, Any]) -> str:
    """The ``--keep-float`` regex that keeps the tensor a Q/DQ node quantizes float: its
    producer's name (ORT excludes a node's output quantization with the node)."""
    import re

    target = node
    if node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.input:
        src = node.input[0]
        prod = producers.get(src)
        if node.op_type == "DequantizeLinear" and prod is not None and prod.input:
            prod = producers.get(prod.input[0], prod)  # DQ <- Q <- producer
        target = prod or node
    return f"^{re.escape(target.name)}(/|$)" if target.name else target.op_type


# ------------------------------------------------------------------------------ TFLite


def check_tflite(path: Path, checked: dict[str, int] | None = None) -> list[Finding]:
    """Quantization parameters and float weights of a TFLite model (the runtime's reader)."""
    from edgeopt_runtime.errors import ModelLoadError
    from edgeopt_runtime.tflite_reader import read_tflite

    checked = {} if checked is None else checked
    try:
        model = read_tflite(path.read_bytes(), str(path))
    except ModelLoadError as exc:  # the runtime's own checks (e.g. a requantization scale)
        return [Finding(Status.FAILED, "file", path.name,
                        f"the runtime refuses the file: {str(exc).removeprefix(f'{path}: ')}")]
    out: list[Finding] = []
    scales = weights = 0
    for sg in model.subgraphs:
        readers: dict[int, list[tuple[str, int]]] = {}
        for op in sg.operators:
            for pos, t in enumerate(op.inputs):
                if t >= 0:
                    readers.setdefault(t, []).append((op.name, pos))
        for t in sg.tensors:
            q = t.quantization
            if q and q.get("scale"):
                scales += 1
                why = scale_problem(np.asarray(q["scale"]))
                if why:
                    out.append(Finding(Status.FAILED, "scale", t.name,
                                       f"tensor {t.name!r} ({t.dtype}): scale {why}; keep its "
                                       f"producer float (--keep-float '^{_re(t.name)}$')"))
                zwhy = zero_point_problem(np.asarray(q.get("zero_point") or [], np.int64),
                                          t.dtype, len(q["scale"]))
                if zwhy:
                    out.append(Finding(Status.FAILED, "zero-point", t.name,
                                       f"tensor {t.name!r}: zero point {zwhy}"))
            if t.constant_bytes and t.dtype in ("float32", "float16"):
                data = np.frombuffer(model.buffer_data(t), dtype=np.dtype(t.dtype))
                is_weight = any((op, pos) in _TFLITE_WEIGHTS
                                for op, pos in readers.get(t.index, []))
                weights += int(is_weight)
                why = _nonfinite(data)
                if why and (is_weight or np.isnan(data).any()):
                    user = ", ".join(sorted({op for op, _ in readers.get(t.index, [])}))
                    out.append(Finding(Status.FAILED, "weights", t.name,
                                       f"constant {t.name!r} read by {user or 'no op'} {why}: "
                                       "the model computes garbage there (is the float source "
                                       "damaged?)"))
    checked.update(scales=scales, weights=weights)
    return out


def _re(name: str) -> str:
    import re

    return re.escape(name)


# ------------------------------------------------------------------------------ outputs


def check_outputs(drift: Sequence[OutputDrift], *,
                  first_nonfinite: str | None = None) -> list[Finding]:
    """Findings from one evaluation's drift: non-finite outputs, a reference that cannot be
    compared against."""
    out: list[Finding] = []
    for d in drift:
        bad = list(d.nonfinite_samples)
        n = (d.per_sample or {}).get("count") or (d.shape[0] if d.shape else 0)
        if bad or (d.nonfinite and not bad):
            shown = ", ".join(map(str, bad[:10])) + (" …" if len(bad) > 10 else "")
            count = f"{len(bad)} of {n} validation samples" if bad else "the validation run"
            if d.nonfinite_in == "reference":
                out.append(Finding(Status.DEGRADED, "reference", d.name,
                                   f"output {d.name!r}: the float model itself gives NaN/inf on "
                                   f"{count} ({shown}): fix the float model or the data first"))
            else:
                cause = (f"; NaN/inf first appears at {first_nonfinite!r} (per-layer)"
                         if first_nonfinite else "")
                out.append(Finding(Status.FAILED, "outputs", d.name,
                                   f"output {d.name!r} is NaN/inf on {count} ({shown}) where the "
                                   f"float model's is finite{cause}"))
        if d.degenerate:
            out.append(Finding(Status.DEGRADED, "reference", d.name,
                               f"output {d.name!r}: {d.degenerate}; drift cannot be measured "
                               "against it"))
            continue
        median = d.sample_stat("sqnr_db", "median")
        if not bad and median is not None and np.isfinite(median) and median < NOISE_FLOOR_DB:
            cos = d.sample_stat("cosine", "mean")
            out.append(Finding(Status.DEGRADED, "drift", d.name,
                               f"output {d.name!r}: quantization noise exceeds the signal on "
                               f"most samples (median per-sample SQNR {median:.1f} dB, mean "
                               f"cosine {cos:.3f}): the quantized model does not compute what "
                               "the float one does; the per-layer section ranks the causes, "
                               "`edgeopt tune` searches a recipe that meets a budget"))
    return out


def summary_line(v: Validation) -> str:
    """``ok (120 scales, 40 weights checked)`` or the reason."""
    if v.status is Status.OK:
        parts = ", ".join(f"{n} {k}" for k, n in v.checked.items())
        return f"ok ({parts} checked)"
    return f"{v.status.value}: {v.reason}"
