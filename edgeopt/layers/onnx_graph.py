"""ONNX per-layer analysis: float and quantized graphs matched tensor by tensor, streamed.

Works for every ONNX quantization edgeopt makes — static QDQ, dynamic (``DynamicQuantizeLinear``
/ ``MatMulInteger``), weight-only (``MatMulNBits``) — because it compares *values at the same
tensor names*: ORT's quantizers keep the float graph's tensor names (a QDQ graph adds
``X -> QuantizeLinear -> DequantizeLinear`` after ``X``; the dynamic quantizer gives its integer
chain the original MatMul's output name). For a tensor with a Q/DQ pair the value its consumers
see (after the DequantizeLinear) is compared.

Memory: both graphs expose their intermediate tensors as extra outputs, but only for one *group*
of tensors at a time (sized from ONNX shape inference to ``PASS_BYTES`` per sample), and every
sample's values are folded into running sums (``stats.TensorError``) and dropped before the next
sample. Peak memory is the models plus one sample's activations of one group, whatever the
number of samples.

Keep-float gain: for the rows most likely to matter (NaN/inf origins first, then the lowest own
SQNR) the quantized graph is edited to run that layer in float — its float node spliced in with
float inputs and weights, its output's Q/DQ pair bypassed, dead quantization nodes pruned — and
the model output is measured again: ``gain_db`` is the improvement of the output SQNR. That is
what ``--keep-float`` on that layer would buy, measured without rebuilding.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .names import map_to_source, onnx_regex
from .stats import TensorError, local_sqnr, sqnr_from_power

log = logging.getLogger(__name__)

PASS_BYTES = 256 * 2**20  # intermediate values one pass may hold per model and sample
DEFAULT_BYTES = 4 * 2**20  # assumed size of a tensor shape inference could not size
QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger",
             "ConvInteger", "MatMulNBits", "QLinearConv", "QLinearMatMul", "QLinearAdd",
             "QLinearMul", "QGemm", "QAttention", "DynamicQuantizeMatMul"}
Sample = Mapping[str, np.ndarray]


# ------------------------------------------------------------------------------ models


class Graph:
    """One ONNX file: its graph (weights not loaded) and ORT sessions with extra outputs."""

    def __init__(self, path: Path, scratch: Path) -> None:
        import onnx

        self.path = Path(path)
        self.model = onnx.load(str(path), load_external_data=False)
        self.graph = self.model.graph
        self.producers = {o: n for n in self.graph.node for o in n.output if o}
        self.consumers: dict[str, list[Any]] = {}
        for n in self.graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.inits = {i.name for i in self.graph.initializer}
        self.outputs = [o.name for o in self.graph.output]
        self.inputs = [i.name for i in self.graph.input if i.name not in self.inits]
        self._scratch = scratch
        self._external = sorted({e.value for t in self.graph.initializer for e in t.external_data
                                 if e.key == "location"})
        if self._external:  # ORT refuses external data outside the model's folder: link it in
            for loc in self._external:
                _link_or_copy(self.path.parent / loc, scratch / loc)

    def session(self, extra: Sequence[str] = (), model: Any = None) -> Any:
        """An ORT session of this graph (or ``model``, an edited copy) with ``extra`` outputs."""
        import onnx
        import onnxruntime as ort

        proto = model if model is not None else self.model
        have = {o.name for o in proto.graph.output}
        added = [onnx.ValueInfoProto(name=n) for n in dict.fromkeys(extra) if n not in have]
        proto.graph.output.extend(added)
        options = ort.SessionOptions()
        options.log_severity_level = 4
        options.intra_op_num_threads = 1
        try:
            if self._external:
                path = self._scratch / f"{self.path.stem}.{os.getpid()}.onnx"
                onnx.save(proto, str(path))
                return ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])
            return ort.InferenceSession(proto.SerializeToString(), options,
                                        providers=["CPUExecutionProvider"])
        finally:
            for _ in added:
                proto.graph.output.pop()

    def initializer(self, name: str) -> Any:
        """A copy of initializer ``name`` with its data loaded (external data read)."""
        from onnx import TensorProto
        from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

        t = next(i for i in self.graph.initializer if i.name == name)
        out = TensorProto()
        out.CopyFrom(t)
        if uses_external_data(out):
            load_external_data_for_tensor(out, str(self.path.parent))
            del out.external_data[:]
            out.data_location = TensorProto.DEFAULT
        return out


def _link_or_copy(src: Path, dst: Path) -> None:
    if dst.exists():
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def is_quantized(graph: Any) -> bool:
    return any(n.op_type in QUANT_OPS for n in graph.node)


def scheme_of(graph: Any) -> str:
    """``static`` (Q/DQ or QOperator), ``dynamic``, ``weight-only`` or ``float``."""
    ops = {n.op_type for n in graph.node}
    if ops & {"DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul"}:
        return "dynamic"
    if "MatMulNBits" in ops:
        return "weight-only"
    return "static" if ops & QUANT_OPS else "float"


# ------------------------------------------------------------------------------ matching


@dataclass(frozen=True)
class Match:
    """One float tensor and where its quantized value is read."""

    tensor: str  # name in the float graph
    cand: str  # tensor of the quantized graph holding its value (the DQ output if paired)
    pre: str | None  # the quantized graph's value before its Q/DQ pair (None: no pair)
    node: Any  # the float graph's producer
    order: int  # position of the producer in the float graph


def dq_twin(q: Graph, tensor: str) -> str | None:
    """The DequantizeLinear output that stands for ``tensor`` in a QDQ graph, if any."""
    for node in q.consumers.get(tensor, []):
        if node.op_type != "QuantizeLinear":
            continue
        for dq in q.consumers.get(node.output[0], []):
            if dq.op_type == "DequantizeLinear":
                return dq.output[0]
    return None


def matches(f: Graph, q: Graph) -> list[Match]:
    """Every float node output whose value the quantized graph also computes, graph order."""
    out = []
    q_tensors = set(q.producers) | set(q.inputs)
    for order, node in enumerate(f.graph.node):
        for t in node.output:
            if not t:
                continue
            twin = dq_twin(q, t)
            if twin is not None:
                out.append(Match(t, twin, t if t in q_tensors else None, node, order))
            elif t in q_tensors:
                out.append(Match(t, t, None, node, order))
    return out


def estimate_bytes(f: Graph, sample: Sample) -> dict[str, int]:
    """Bytes of each float tensor for ``sample``'s input shapes (ONNX shape inference; tensors
    it cannot size get ``DEFAULT_BYTES``)."""
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(f.model)
    del model.graph.initializer[:]  # shapes only: keep the copy small
    for inp in model.graph.input:
        if inp.name in sample and inp.type.HasField("tensor_type"):
            dims = inp.type.tensor_type.shape.dim
            for d, size in zip(dims, np.shape(sample[inp.name]), strict=False):
                d.Clear()
                d.dim_value = int(size)
    for t in f.graph.initializer:  # shape inference needs the constants' types and dims
        vi = model.graph.input.add()
        vi.CopyFrom(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    sizes: dict[str, int] = {}
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
        for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
            tt = vi.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
            if tt.elem_type and None not in dims and tt.HasField("shape"):
                width = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).itemsize
                sizes[vi.name] = int(np.prod(dims, dtype=np.int64)) * width
    except Exception:  # noqa: BLE001 - shape inference is a size hint only
        log.debug("shape inference failed; assuming default tensor sizes", exc_info=True)
    return sizes


def groups(found: Sequence[Match], sizes: Mapping[str, int],
           budget: int = PASS_BYTES) -> list[list[Match]]:
    """Matches in graph order, cut into groups whose values fit ``budget`` per sample (the
    quantized side holds up to two values per tensor: before and after its Q/DQ pair)."""
    out: list[list[Match]] = [[]]
    used = 0
    for m in found:
        size = sizes.get(m.tensor, DEFAULT_BYTES) * (3 if m.pre else 2)
        if out[-1] and used + size > budget:
            out.append([])
            used = 0
        out[-1].append(m)
        used += size
    return [g for g in out if g]


def _feeds(session: Any, sample: Sample) -> dict[str, np.ndarray]:
    names = [i.name for i in session.get_inputs()]
    return {n: sample[n] for n in names if n in sample}


def _run(session: Any, names: Sequence[str], sample: Sample) -> dict[str, np.ndarray]:
    return dict(zip(names, session.run(list(names), _feeds(session, sample)), strict=True))


@dataclass
class Measured:
    """What the streamed passes found."""

    errors: dict[str, TensorError]
    reference_outputs: list[list[np.ndarray]]  # per sample, the float model's outputs
    candidate_outputs: list[list[np.ndarray]]
    passes: int
    group_bytes: int  # the largest group's estimated bytes per sample


def measure(f: Graph, q: Graph, found: Sequence[Match], samples: Sequence[Sample],
            budget: int = PASS_BYTES) -> Measured:
    """Stream the samples through both graphs, one tensor group at a time."""
    errors = {m.tensor: TensorError() for m in found}
    sizes = estimate_bytes(f, samples[0]) if samples else {}
    parts = groups(found, sizes, budget) or [[]]
    ref_out: list[list[np.ndarray]] = []
    cand_out: list[list[np.ndarray]] = []
    largest = 0
    for k, part in enumerate(parts):
        first = k == 0
        f_names = [m.tensor for m in part] + (f.outputs if first else [])
        q_names = list(dict.fromkeys([m.cand for m in part] + [m.pre for m in part if m.pre]
                                     + (q.outputs if first else [])))
        largest = max(largest, sum(sizes.get(m.tensor, DEFAULT_BYTES) for m in part))
        fs, qs = f.session(f_names), q.session(q_names)
        for i, sample in enumerate(samples):
            fo, qo = _run(fs, f_names, sample), _run(qs, q_names, sample)
            for m in part:
                errors[m.tensor].add(i, fo[m.tensor], qo[m.cand],
                                     qo.get(m.pre) if m.pre else None)
            if first:
                ref_out.append([fo[n] for n in f.outputs])
                cand_out.append([qo[n] for n in q.outputs])
            del fo, qo
        del fs, qs
    return Measured(errors, ref_out, cand_out, len(parts), largest)


# ------------------------------------------------------------------------------ rows


def upstream(name: str, f: Graph, matched: set[str]) -> set[str]:
    """Nearest matched tensors upstream of ``name`` (through tensors the quantized graph
    fused away, like a ReLU folded into its conv)."""
    found: set[str] = set()
    node = f.producers.get(name)
    stack = list(node.input) if node else []
    seen: set[str] = set()
    while stack:
        t = stack.pop()
        if not t or t in seen or t in f.inits:
            continue
        seen.add(t)
        if t in matched:
            found.add(t)
        elif t in f.producers:
            stack.extend(f.producers[t].input)
    return found


def runs_quantized(q: Graph, match: Match, float_names: set[str], depth: int = 6) -> bool:
    """Whether the quantized graph computes ``match``'s tensor with quantized arithmetic: its
    value is re-quantized (a Q/DQ twin), or a quantization op lies between it and the nearest
    tensors both graphs share (a QDQ op reads DequantizeLinear outputs; a dynamic MatMul is
    ``DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul``). A GELU of a dynamic model is
    not: it runs in float on float inputs, and keeping it float changes nothing."""
    if match.cand != match.tensor:
        return True
    stack, seen = [(match.tensor, 0)], set()
    while stack:
        name, d = stack.pop()
        node = q.producers.get(name)
        if node is None or id(node) in seen or d > depth:
            continue
        seen.add(id(node))
        if node.op_type in QUANT_OPS:
            return True
        stack += [(i, d + 1) for i in node.input
                  if i and i not in q.inits and i not in float_names]
    return False


def rows(f: Graph, q: Graph, found: Sequence[Match], measured: Measured,
         source_layers: Sequence[str]) -> list[dict[str, Any]]:
    """One row per matched tensor: own and cumulative error, NaN/inf origin, keep-float regex."""
    errors = measured.errors
    cumulative = {t: e.sqnr_db for t, e in errors.items() if e.samples}
    names = set(cumulative)
    out = []
    for m in found:
        e = errors[m.tensor]
        if not e.samples:
            continue
        ups = upstream(m.tensor, f, names)
        bad_up = sorted(t for t in ups if errors[t].nonfinite_samples)
        nodes, readers = layer_nodes(f, q, m)
        row: dict[str, Any] = {
            "tensor": m.tensor,
            "node": m.node.name or None,
            "layer": map_to_source(m.node.name or m.tensor, source_layers) or m.node.name or None,
            "op": m.node.op_type,
            "kind": "activation",
            "order": m.order,
            "sqnr_db": local_sqnr(m.tensor, cumulative, sorted(ups)),
            "sqnr_db_cumulative": e.sqnr_db,
            "mse": e.mse,
            "max_abs_error": e.max_abs,
            "num_elements": e.elements // max(1, e.samples - e.nonfinite_samples),
            "nonfinite": e.nonfinite_samples,
            "origin": bool(e.nonfinite_samples) and not bad_up,
            "gain_db": None,
            "quantized": runs_quantized(q, m, names),
            # the layer's nodes and, when its output is re-quantized for its readers, those
            "keep_float": onnx_regex([n.name for n in nodes] + readers),
        }
        if e.has_qdq:
            row["sqnr_db_qdq"] = sqnr_from_power(e.qdq_signal, e.qdq_noise)
        if e.float_nonfinite:
            row["float_nonfinite_elements"] = e.float_nonfinite
        if e.nonfinite_samples:
            row["first_nonfinite_sample"] = e.first_nonfinite
            if bad_up:
                row["cause"] = bad_up[0]
        out.append(row)
    _name_causes(out)
    return out


def _name_causes(rows_: list[dict[str, Any]]) -> None:
    """Point every inherited NaN/inf row at the origin it comes from (first one upstream)."""
    by_tensor = {r["tensor"]: r for r in rows_}
    for r in rows_:
        seen = set()
        cause = r.get("cause")
        while cause in by_tensor and not by_tensor[cause].get("origin") and cause not in seen:
            seen.add(cause)
            cause = by_tensor[cause].get("cause")
        if cause:
            r["cause"] = cause


def weights(f: Graph, q: Graph, source_layers: Sequence[str]) -> list[dict[str, Any]]:
    """Float vs dequantized value of every constant feeding a DequantizeLinear.

    Done here rather than with ORT's ``create_weight_matching``, which subtracts the zero point
    in int8 and wraps around (a bias of 0.1 with zero point -128 reads back as -0.0004).
    """
    from onnx import numpy_helper

    q_inits = {i.name: i for i in q.graph.initializer}
    f_names = {i.name for i in f.graph.initializer}
    out = []
    for node in q.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in q_inits:
            continue
        qname = node.input[0]
        fname = qname.removesuffix("_quantized")
        if fname not in f_names or node.input[1] not in q_inits:
            continue
        qv = numpy_helper.to_array(q_inits[qname]).astype(np.float64)
        scale = numpy_helper.to_array(q_inits[node.input[1]]).astype(np.float64)
        zp = (numpy_helper.to_array(q_inits[node.input[2]]).astype(np.float64)
              if len(node.input) > 2 and node.input[2] in q_inits else np.zeros_like(scale))
        if scale.size > 1:  # per channel along the node's axis (default 1)
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            shape = [1] * qv.ndim
            shape[axis] = -1
            scale, zp = scale.reshape(shape), zp.reshape(shape)
        deq = (qv - zp) * scale
        fv = numpy_helper.to_array(f.initializer(fname)).astype(np.float64)
        if fv.shape != deq.shape:
            continue
        d = deq - fv
        out.append({
            "tensor": fname,
            "layer": map_to_source(fname, source_layers) or fname,
            "op": "weight",
            "kind": "weight",
            "per_channel": bool(scale.size > 1),
            "sqnr_db": sqnr_from_power(float(np.sum(fv * fv)), float(np.sum(d * d))),
            "max_abs_error": float(np.max(np.abs(d))) if fv.size else 0.0,
            "num_elements": int(fv.size),
        })
    return out


# ------------------------------------------------------------------------------ keep-float gain


_FOLLOWERS = {"Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid", "HardSwish",
              "Gelu", "Elu", "Softplus", "BatchNormalization"}


def chain(f: Graph, node: Any) -> list[Any]:
    """``node`` and what completes its layer: the bias Add / scale Mul with a constant and the
    activation that alone read its output (quantized as one unit, kept float as one unit)."""
    out = [node]
    while True:
        last = out[-1]
        if len(last.output) != 1:
            break
        readers = f.consumers.get(last.output[0], [])
        if len(readers) != 1 or last.output[0] in f.outputs:
            break
        r = readers[0]
        const = any(i in f.inits for i in r.input)
        if not (r.op_type in _FOLLOWERS or (r.op_type in ("Add", "Mul") and const)):
            break
        out.append(r)
    return out


_MAX_HEAD = 8


def _fused_head(f: Graph, q: Graph, node: Any) -> list[Any]:
    """Float nodes upstream of ``node`` whose outputs the quantized graph fused away (a Conv and
    the ReLU after it become one Conv writing the ReLU's name): they belong to the same layer,
    kept float together. Graph order; empty when nothing is fused or too much would be."""
    q_tensors = set(q.producers) | set(q.inputs) | q.inits
    index = {id(n): k for k, n in enumerate(f.graph.node)}
    head: dict[int, Any] = {}
    stack = [node]
    while stack:
        for name in stack.pop().input:
            p = f.producers.get(name)
            if not name or name in q_tensors or name in f.inits or p is None \
                    or id(p) in head:
                continue
            head[id(p)] = p
            stack.append(p)
            if len(head) > _MAX_HEAD:
                return []
    return sorted(head.values(), key=lambda n: index[id(n)])


def layer_nodes(f: Graph, q: Graph, match: Match) -> tuple[list[Any], list[str]]:
    """(the float nodes a keep-float of ``match``'s layer runs in float, the readers of its
    output whose input quantization must go too: they re-quantize it otherwise)."""
    nodes = _fused_head(f, q, match.node) + chain(f, match.node)
    last = nodes[-1].output[0] if nodes[-1].output else match.tensor
    readers = ([n.name for n in f.consumers.get(last, [])]
               if dq_twin(q, last) is not None else [])
    return nodes, readers


def float_variant(f: Graph, q: Graph, match: Match | Sequence[Match]) -> Any | None:
    """A copy of the quantized model with ``match``'s layer (or several layers) in float
    (None if impossible).

    The layer's float nodes (:func:`chain`) replace the quantized graph's producers of the same
    outputs and read float inputs (the values before their Q/DQ pairs) and the float weights;
    readers of their outputs read the float values (the Q/DQ pairs are bypassed);
    quantization nodes nothing reads any more are pruned.
    """
    import onnx

    q_tensors = set(q.producers) | set(q.inputs) | q.inits
    nodes: list[Any] = []
    for m in [match] if isinstance(match, Match) else match:
        chain_, _ = layer_nodes(f, q, m)
        if any(o and o not in q_tensors for o in chain_[-1].output):
            return None  # the quantized graph computes the layer's result under another name
        nodes += [n for n in chain_ if all(n is not k for k in nodes)]
    produced = {o for n in nodes for o in n.output if o}
    needed = [i for n in nodes for i in n.input if i and i not in produced]
    missing_inits = list(dict.fromkeys(i for i in needed if i not in q_tensors))
    if any(i not in f.inits for i in missing_inits):
        return None  # an input the quantized graph does not compute (fused away)
    # An input whose quantized-graph producer is another op than the float one (ORT drops a
    # ReLU / Clip the next quantization clamps: the Conv then writes the ReLU's name) does not
    # hold the float value before its Q/DQ pair: read the dequantized value, which does.
    renamed: dict[str, str] = {}
    for name in dict.fromkeys(needed):
        fp, qp = f.producers.get(name), q.producers.get(name)
        if fp is None or qp is None or fp.op_type == qp.op_type:
            continue
        twin = dq_twin(q, name)
        if twin is None:
            return None
        renamed[name] = twin
    model = onnx.ModelProto()
    model.CopyFrom(q.model)
    g = model.graph
    keep = [n for n in g.node if not (set(n.output) & produced)]
    twins = {d: t for t in produced if (d := dq_twin(q, t)) is not None}
    for n in keep:  # readers of the DQ'd values read the float ones
        for k, name in enumerate(n.input):
            if name in twins:
                n.input[k] = twins[name]
    for o in g.output:
        if o.name in twins:
            o.name = twins[o.name]
    del g.node[:]
    g.node.extend(keep)
    for node in nodes:
        spliced = onnx.NodeProto()
        spliced.CopyFrom(node)
        for k, name in enumerate(spliced.input):
            if name in renamed:
                spliced.input[k] = renamed[name]
        g.node.append(spliced)
    for name in missing_inits:
        g.initializer.append(f.initializer(name))
    _prune(g)
    _toposort(g)
    return model


def _prune(g: Any) -> None:
    """Remove nodes whose outputs nothing reads (iterated: quantization chains go whole)."""
    wanted = {o.name for o in g.output}
    while True:
        used = wanted | {i for n in g.node for i in n.input}
        dead = [k for k, n in enumerate(g.node) if not any(o in used for o in n.output if o)]
        if not dead:
            break
        for k in reversed(dead):
            del g.node[k]
    used = {i for n in g.node for i in n.input}
    live = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(live)


def _toposort(g: Any) -> None:
    """Put the nodes back in an order where every input is defined before use."""
    ready = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    pending = list(g.node)
    ordered = []
    while pending:
        rest = []
        for n in pending:
            if all(i in ready for i in n.input):
                ordered.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):  # a cycle or an undefined input: leave the rest as is
            ordered.extend(rest)
            break
        pending = rest
    copies = []
    for n in ordered:
        c = type(n)()
        c.CopyFrom(n)
        copies.append(c)
    del g.node[:]
    g.node.extend(copies)


def output_quality(ref: Sequence[Sequence[np.ndarray]],
                   cand: Sequence[Sequence[np.ndarray]]) -> dict[str, float]:
    """Model-output SQNR (mean over outputs of the pooled SQNR), worst per-sample cosine and
    whether any output is non-finite, for a list of per-sample outputs."""
    sqnrs, worst_cos, nonfinite = [], 1.0, False
    for j in range(len(ref[0]) if ref else 0):
        r = np.stack([np.ravel(s[j]).astype(np.float64) for s in ref])
        c = np.stack([np.ravel(s[j]).astype(np.float64) for s in cand])
        if not (np.isfinite(c).all() and np.isfinite(r).all()):
            nonfinite = True
            continue
        d = c - r
        sqnrs.append(sqnr_from_power(float(np.sum(r * r)), float(np.sum(d * d))))
        nr, nc = np.linalg.norm(r, axis=1), np.linalg.norm(c, axis=1)
        ok = nr > 0
        if ok.any():
            cos = np.where(nc[ok] > 0, np.sum(r[ok] * c[ok], axis=1) / (nr[ok] * nc[ok]
                                                                         + 1e-300), 0.0)
            worst_cos = min(worst_cos, float(cos.min()))
    finite = [s for s in sqnrs if not math.isnan(s)]
    return {"sqnr_db": float(np.mean(finite)) if finite and not nonfinite else float("nan"),
            "cosine_min": worst_cos if not nonfinite else float("nan"),
            "nonfinite": nonfinite}


def keep_float_gains(f: Graph, q: Graph, found: Sequence[Match], candidates: Iterable[str],
                     measured: Measured, samples: Sequence[Sample]) -> dict[str, dict]:
    """Model-output quality with each candidate tensor's layer kept float.

    Returns:
        tensor -> ``{"gain_db", "output_sqnr_db", "output_cosine_min", "fixes_nonfinite"}``;
        a layer that could not be spliced gets ``{"gain_db": None, "why": ...}``.
    """
    base = output_quality(measured.reference_outputs, measured.candidate_outputs)
    by_tensor = {m.tensor: m for m in found}
    out: dict[str, dict] = {}
    for t in candidates:
        out[t] = variant_gain(f, q, [by_tensor[t]], measured, samples, base)
    out["__base__"] = base
    return out


def variant_gain(f: Graph, q: Graph, layers: Sequence[Match], measured: Measured,
                 samples: Sequence[Sample], base: Mapping[str, Any]) -> dict[str, Any]:
    """Model-output quality with ``layers`` kept float together, against ``base`` (the
    quantized model's): ``{"gain_db", "output_sqnr_db", "output_cosine_min",
    "fixes_nonfinite"}``, or ``{"gain_db": None, "why": ...}`` when it cannot be spliced."""
    variant = float_variant(f, q, layers)
    if variant is None:
        return {"gain_db": None, "why": "an input is fused away in the quantized graph"}
    try:
        sess = q.session(model=variant)
        cand = [list(sess.run(None, _feeds(sess, s))) for s in samples]
    except Exception as exc:  # noqa: BLE001 - an edit ORT refuses: say so on the row
        return {"gain_db": None, "why": f"float variant does not run: {str(exc)[:120]}"}
    names = [o.name for o in sess.get_outputs()]
    order = [names.index(n) for n in q.outputs]
    got = output_quality(measured.reference_outputs, [[s[k] for k in order] for s in cand])
    if base["nonfinite"] and not got["nonfinite"]:
        gain = float("inf")
    elif got["nonfinite"] or math.isnan(got["sqnr_db"]) or math.isnan(base["sqnr_db"]):
        gain = float("nan") if not base["nonfinite"] else 0.0
    else:
        gain = got["sqnr_db"] - base["sqnr_db"]
    return {"gain_db": gain, "output_sqnr_db": got["sqnr_db"],
            "output_cosine_min": got["cosine_min"],
            "fixes_nonfinite": bool(base["nonfinite"] and not got["nonfinite"])}


def scratch_dir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="edgeopt-layers-")
