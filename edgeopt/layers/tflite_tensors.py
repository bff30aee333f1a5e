"""TFLite per-layer analysis of an artifact: float and quantized ``.tflite`` matched by tensor name.

The TFLite converter names an op's output tensor after the TF ops it fused
(``functional_1/dense_1/MatMul;functional_1/dense_1/Relu``) in the float and in the quantized
conversion of the same SavedModel alike, so the two files can be compared tensor by tensor
without the source model: LiteRT keeps every intermediate tensor of one ``invoke`` when asked
(``experimental_preserve_all_tensors``, no delegate), integer tensors are dequantized with their
own scale / zero point, and each sample is folded into running sums (``stats.TensorError``)
before the next one runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .names import map_to_source, tflite_regex
from .stats import TensorError, local_sqnr

Sample = Mapping[str, np.ndarray]
_IO_OPS = {"QUANTIZE", "DEQUANTIZE"}


class _Interp:
    """A LiteRT interpreter keeping all tensors, with signature-name inputs."""

    def __init__(self, path: Path) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        self.it = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True,
                              experimental_op_resolver_type=(
                                  OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES),
                              num_threads=1)
        self.it.allocate_tensors()
        self.details = {d["index"]: d for d in self.it.get_tensor_details()}
        self.by_name = {d["name"]: i for i, d in self.details.items()}
        sigs = self.it._get_full_signature_list()  # noqa: SLF001 - names -> tensor indices
        self.inputs = (next(iter(sigs.values()))["inputs"] if len(sigs) == 1 else
                       {d["name"]: d["index"] for d in self.it.get_input_details()})
        self.outputs = [d["index"] for d in self.it.get_output_details()]

    def run(self, sample: Sample) -> None:
        for name, idx in self.inputs.items():
            x = sample.get(name)
            if x is None:
                x = next(v for k, v in sample.items() if _base(k) == _base(name))
            d = self.details[idx]
            if tuple(d["shape"]) != tuple(np.shape(x)):
                self.it.resize_tensor_input(idx, list(np.shape(x)))
                self.it.allocate_tensors()
            self.it.set_tensor(idx, _to_dtype(np.asarray(x), d))
        self.it.invoke()

    def value(self, idx: int) -> np.ndarray | None:
        d = self.details[idx]
        try:
            v = self.it.get_tensor(idx)
        except ValueError:  # freed or never allocated
            return None
        if v is None or v.dtype.kind not in "fiu":
            return None
        q = d.get("quantization_parameters") or {}
        scales = np.asarray(q.get("scales", []), np.float64)
        if v.dtype.kind in "iu" and scales.size:
            zps = np.asarray(q.get("zero_points", []), np.float64)
            if scales.size > 1:
                shape = [1] * v.ndim
                shape[int(q.get("quantized_dimension", 0))] = -1
                scales, zps = scales.reshape(shape), zps.reshape(shape)
            return (v.astype(np.float64) - zps) * scales
        return v if v.dtype.kind == "f" else None


def _base(name: str) -> str:
    return name.split(":")[0].removeprefix("serving_default_")


def _to_dtype(x: np.ndarray, d: Mapping[str, Any]) -> np.ndarray:
    from edgeopt_runtime.spec import QuantParams, quantize

    want = np.dtype(d["dtype"])
    if want.kind in "iu" and x.dtype.kind == "f":
        scale, zp = d["quantization"]
        if scale:
            return quantize(x, QuantParams(scale=(float(scale),), zero_point=(int(zp),)),
                            want.name)
    return x.astype(want)


def tflite_artifact_rows(float_path: Path, quant_path: Path, samples: Sequence[Sample],
                         source_layers: Sequence[str] = ()) -> tuple[list[dict[str, Any]], Any]:
    """Rows of matched tensors and the per-sample model outputs (for the output quality).

    Returns:
        (rows, (float outputs per sample, quantized outputs per sample)).
    """
    from edgeopt_runtime.tflite_reader import read_tflite

    graph = read_tflite(Path(float_path).read_bytes(), str(float_path)).subgraphs[0]
    names = {t.index: t.name for t in graph.tensors}
    producers: dict[str, Any] = {}
    for op in graph.operators:
        for o in op.outputs:
            if o >= 0:
                producers[names[o]] = op
    fi, qi = _Interp(float_path), _Interp(quant_path)
    pairs = []
    for order, op in enumerate(graph.operators):
        if op.name in _IO_OPS:
            continue
        for o in op.outputs:
            n = names.get(o)
            if n in fi.by_name and n in qi.by_name:
                pairs.append((n, fi.by_name[n], qi.by_name[n], op, order))
    errors = {p[0]: TensorError() for p in pairs}
    ref_out, cand_out = [], []
    for i, s in enumerate(samples):
        fi.run(s)
        qi.run(s)
        for n, a, b, _op, _o in pairs:
            fv, qv = fi.value(a), qi.value(b)
            if fv is not None and qv is not None:
                errors[n].add(i, fv, qv)
        ref_out.append([fi.value(k) for k in fi.outputs])
        cand_out.append([qi.value(k) for k in qi.outputs])
    cumulative = {n: e.sqnr_db for n, e in errors.items() if e.samples}
    rows = []
    matched = set(cumulative)
    for n, _a, _b, op, order in pairs:
        e = errors[n]
        if not e.samples:
            continue
        ups = _upstream(n, producers, names, matched)
        bad_up = sorted(t for t in ups if errors[t].nonfinite_samples)
        row = {"tensor": n, "node": n, "layer": map_to_source(n, source_layers), "op": op.name,
               "kind": "activation", "order": order,
               "sqnr_db": local_sqnr(n, cumulative, sorted(ups)),
               "sqnr_db_cumulative": e.sqnr_db, "mse": e.mse, "max_abs_error": e.max_abs,
               "num_elements": e.elements // max(1, e.samples),
               "nonfinite": e.nonfinite_samples,
               "origin": bool(e.nonfinite_samples) and not bad_up, "gain_db": None,
               "keep_float": tflite_regex(n)}
        q = qi.details[qi.by_name[n]].get("quantization_parameters") or {}
        if len(q.get("scales", [])):
            row["scale"] = float(q["scales"][0])
            row["zero_point"] = int(q["zero_points"][0]) if len(q["zero_points"]) else 0
            if e.elements and row["scale"]:
                row["rmse_steps"] = float(np.sqrt(e.mse)) / row["scale"]
        if bad_up:
            row["cause"] = bad_up[0]
        rows.append(row)
    return rows, (ref_out, cand_out)


def _upstream(name: str, producers: Mapping[str, Any], names: Mapping[int, str],
              matched: set[str]) -> set[str]:
    found: set[str] = set()
    op = producers.get(name)
    stack = [names[i] for i in op.inputs if i >= 0] if op else []
    seen: set[str] = set()
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        if t in matched:
            found.add(t)
        elif t in producers:
            stack.extend(names[i] for i in producers[t].inputs if i >= 0)
    return found
