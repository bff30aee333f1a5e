"""Op-type exclusion presets: named sets of ONNX nodes a static recipe keeps float.

``transformer`` follows Optimum's fix for the static int8 collapse of transformers: LayerNorm
(op or decomposed), GELU (op or the Erf pattern), Softmax, residual / embedding Adds (two
activation inputs) and the attention-mask path feeding Softmax (Where / IsNaN / Add). It is a
hypothesis for the search to measure, not a promise: on MiniLM-L6 static QDQ stays far below
dynamic quantization even with it (issue 14).

``activation-matmuls``: MatMuls of two activations (Q.K^T and attention.V) — no weight to
quantize and both ranges data-dependent.
"""

from __future__ import annotations

import onnx

from ..targets import ExclusionPreset
from .graph import GraphView, ancestors, layer_norms

_GELU_PARTS = {"Erf", "Gelu", "FastGelu", "BiasGelu", "QuickGelu"}


def _transformer(view: GraphView) -> set[str]:
    names: set[str] = set()
    for ln in layer_norms(view):
        names.add(ln.node.name)
        if ln.mul is not None:  # decomposed: everything from the ReduceMean to the final Add
            names |= _upstream(view, ln.node, stop_ops={"ReduceMean"}, depth=8)
    for node in view.graph.node:
        op = node.op_type
        if op in ("Softmax", "IsNaN") or op in _GELU_PARTS:
            names.add(node.name)
        if op == "Erf":  # x * 0.5 * (1 + erf(x / sqrt 2)): the Div before, Add / Muls after
            names |= {p.name for p in (view.producer.get(i) for i in node.input)
                      if p is not None and p.op_type == "Div"}
            names |= _downstream(view, node, {"Add", "Mul"}, depth=3)
        elif op == "Add" and all(not view.is_const(i) for i in node.input):
            names.add(node.name)  # residual, embedding sums, score + mask
        elif op == "Softmax":  # the mask path: what feeds the score Add besides the scores
            src = view.producer.get(node.input[0])
            if src is not None and src.op_type in ("Add", "Where"):
                for inp in src.input:
                    p = view.producer.get(inp)
                    if p is not None and p.op_type not in ("MatMul", "Mul", "Div"):
                        names.add(p.name)
                        names |= _upstream(view, p, stop_ops=set(), depth=5)
    return names


def _activation_matmuls(view: GraphView) -> set[str]:
    return {n.name for n in view.graph.node
            if n.op_type == "MatMul" and not any(view.is_const(i) for i in n.input)}


def _upstream(view: GraphView, node: onnx.NodeProto, stop_ops: set[str], depth: int) -> set[str]:
    """Names of the non-constant ancestors of ``node`` (not above a ``stop_ops`` node)."""
    return {p.name for p in ancestors(view, node, depth, stop=lambda p: p.op_type in stop_ops)
            if p.op_type != "Constant"}


def _downstream(view: GraphView, node: onnx.NodeProto, ops: set[str], depth: int) -> set[str]:
    seen: set[str] = set()
    frontier = [node]
    for _ in range(depth):
        nxt = []
        for n in frontier:
            for c in (c for o in n.output for c in view.consumers.get(o, [])):
                if c.op_type in ops and c.name not in seen:
                    seen.add(c.name)
                    nxt.append(c)
        frontier = nxt
    return seen


_PRESETS = {
    ExclusionPreset.TRANSFORMER: _transformer,
    ExclusionPreset.ACTIVATION_MATMULS: _activation_matmuls,
}


def excluded_nodes(model: onnx.ModelProto, presets: tuple[ExclusionPreset, ...]) -> list[str]:
    """Names of the nodes ``presets`` keep float, in graph order."""
    if not presets:
        return []
    view = GraphView(model)
    names: set[str] = set()
    for preset in presets:
        names |= _PRESETS[preset](view)
    return [n.name for n in model.graph.node if n.name in names]
