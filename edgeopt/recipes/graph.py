"""ONNX graph views the recipes need: producers/consumers, weight MatMuls, LayerNorms, roles.

Roles are found structurally (no node names are trusted: torch's dynamo exporter names nodes
``node_MatMul_145``, the TorchScript one ``/encoder/layer.0/output/dense/MatMul``):

* a **weight MatMul** multiplies an activation by a rank-2 float initializer (``Gemm`` with a
  constant B too);
* a **LayerNorm** is a ``LayerNormalization`` node with constant scale/bias, or the decomposed
  tail ``Mul(normalized, gamma) -> Add(., beta)`` after ``ReduceMean``/``Sub``/``Div``;
* an **FFN output projection** is a weight MatMul whose input comes from an activation function
  (GELU as ``Gelu``/``Erf`` pattern/``FastGelu``, ``Relu``, ``Tanh`` GELU);
* the **layer name** of a weight MatMul comes from its bias initializer when the exporter kept
  module names there (``m.encoder.layer.0.output.dense.bias`` -> ``encoder.layer.0.output.dense``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

ACTIVATIONS = {"Gelu", "FastGelu", "BiasGelu", "Relu", "QuickGelu"}


class GraphView:
    """Index over one ``onnx.GraphProto``: producer/consumers per tensor, initializers."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.graph = model.graph
        self.init = {t.name: t for t in self.graph.initializer}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in self.graph.node:
            for out in node.output:
                self.producer[out] = node
            for inp in node.input:
                if inp:
                    self.consumers[inp].append(node)
        self.outputs = {o.name for o in self.graph.output}

    def const(self, name: str) -> np.ndarray | None:
        """The value of an initializer or ``Constant`` output, else None."""
        if name in self.init:
            return numpy_helper.to_array(self.init[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
        return None

    def is_const(self, name: str) -> bool:
        return name in self.init or (name in self.producer
                                     and self.producer[name].op_type == "Constant")

    def has_weight(self, node: onnx.NodeProto) -> bool:
        """Whether ``node`` is a weight MatMul / Gemm (rank-2 float initializer as B), from the
        initializer's header only (no external data read)."""
        if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2:
            return False
        t = self.init.get(node.input[1])
        if t is None:
            return self.weight(node) is not None  # a Constant node: small, read it
        floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)
        return len(t.dims) == 2 and t.data_type in floats and \
            (node.op_type == "Gemm" or not self.is_const(node.input[0]))

    def weight(self, node: onnx.NodeProto) -> np.ndarray | None:
        """The ``[in, out]`` weight of a weight MatMul / Gemm, else None."""
        if node.op_type == "MatMul" and len(node.input) == 2:
            w = self.const(node.input[1])
            if w is not None and w.ndim == 2 and w.dtype.kind == "f" \
                    and not self.is_const(node.input[0]):
                return w
        if node.op_type == "Gemm" and len(node.input) >= 2:
            w = self.const(node.input[1])
            if w is None or w.ndim != 2 or w.dtype.kind != "f":
                return None
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            return w.T if attrs.get("transB", 0) else w
        return None

    def weight_matmuls(self) -> list[onnx.NodeProto]:
        return [n for n in self.graph.node if n.op_type == "MatMul" and self.has_weight(n)]

    def layer_name(self, node: onnx.NodeProto) -> str:
        """A readable name for a weight MatMul: its bias's module path, else the node name."""
        for c in self.consumers.get(node.output[0], []):
            if c.op_type == "Add":
                for inp in c.input:
                    if inp in self.init and inp.endswith(".bias"):
                        name = inp[:-len(".bias")]
                        return name[2:] if name.startswith("m.") else name
        return node.name


@dataclass(frozen=True)
class LayerNorm:
    """A LayerNorm whose affine part a transform may rewrite.

    ``node`` is the ``LayerNormalization`` node, or for a decomposed one the final ``Add``
    (``mul`` is then the ``Mul`` by gamma); ``output`` is the normalized-and-scaled tensor.
    """

    node: onnx.NodeProto
    scale: str  # initializer name of gamma
    bias: str | None  # initializer name of beta
    output: str
    mul: onnx.NodeProto | None = None  # decomposed form only


def layer_norms(view: GraphView) -> list[LayerNorm]:
    """Every LayerNorm of the graph with constant gamma (and beta), in graph order."""
    out = []
    for node in view.graph.node:
        if node.op_type == "LayerNormalization" and len(node.input) >= 2 \
                and node.input[1] in view.init:
            bias = node.input[2] if len(node.input) > 2 and node.input[2] in view.init else None
            out.append(LayerNorm(node, node.input[1], bias, node.output[0]))
        elif node.op_type == "Add":
            ln = _decomposed(view, node)
            if ln is not None:
                out.append(ln)
    return out


def _decomposed(view: GraphView, add: onnx.NodeProto) -> LayerNorm | None:
    """``Add(Mul(Div(Sub(x, ReduceMean x), ...), gamma), beta)`` -> LayerNorm, else None."""
    beta = next((i for i in add.input if i in view.init), None)
    other = next((i for i in add.input if i != beta), None)
    mul = view.producer.get(other or "")
    if beta is None or mul is None or mul.op_type != "Mul":
        return None
    gamma = next((i for i in mul.input if i in view.init), None)
    norm = view.producer.get(next((i for i in mul.input if i != gamma), ""))
    if gamma is None or norm is None or norm.op_type != "Div":
        return None
    sub = view.producer.get(norm.input[0])
    if sub is None or sub.op_type != "Sub":
        return None
    mean = view.producer.get(sub.input[1])
    if mean is None or mean.op_type != "ReduceMean":
        return None
    if len(view.consumers.get(mul.output[0], [])) != 1:
        return None
    return LayerNorm(add, gamma, beta, add.output[0], mul)


def activation_output(view: GraphView, tensor: str) -> bool:
    """Whether ``tensor`` is the output of an activation function (GELU in any form, ReLU)."""
    node = view.producer.get(tensor)
    if node is None:
        return False
    if node.op_type in ACTIVATIONS:
        return True
    if node.op_type == "Mul":  # x * 0.5 * (1 + erf(x / sqrt 2)) or x * sigmoid(1.702 x), ...
        return _has_ancestor(view, node, {"Erf", "Tanh", "Sigmoid"}, depth=3)
    return False


def _has_ancestor(view: GraphView, node: onnx.NodeProto, ops: set[str], depth: int) -> bool:
    return _reaches(view, node, lambda p: p.op_type in ops, depth)


def ancestors(view: GraphView, node: onnx.NodeProto, depth: int,
              stop: Any = None) -> list[onnx.NodeProto]:
    """Producers of ``node``'s inputs, breadth first, up to ``depth`` hops (each node once;
    the walk does not continue above a node for which ``stop(node)`` is true)."""
    seen: set[int] = set()
    out: list[onnx.NodeProto] = []
    frontier = [node]
    for _ in range(depth):
        nxt = []
        for n in frontier:
            for inp in n.input:
                p = view.producer.get(inp)
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                out.append(p)
                if stop is None or not stop(p):
                    nxt.append(p)
        frontier = nxt
    return out


def _reaches(view: GraphView, node: onnx.NodeProto, want: Any, depth: int) -> bool:
    """Whether a node satisfying ``want`` is among ``node``'s ancestors within ``depth`` hops."""
    return any(want(p) for p in ancestors(view, node, depth))


def ffn_outputs(view: GraphView) -> list[onnx.NodeProto]:
    """Weight MatMuls fed by an activation function: the FFN output (down) projections."""
    return [n for n in view.weight_matmuls() if activation_output(view, n.input[0])]


@dataclass(frozen=True)
class TransformerShape:
    """What ``detect`` found: enough to choose model-aware starting recipes."""

    layers: int  # attention blocks (Softmax nodes)
    hidden: int  # LayerNorm width
    layer_norms: int
    weight_matmuls: int
    ffn_outputs: int
    masked_softmax: bool  # an additive mask (Add/Where) feeds a Softmax

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def detect(model: onnx.ModelProto) -> TransformerShape | None:
    """A transformer-shaped graph (>= 1 Softmax fed by an activation MatMul, >= 2 LayerNorms,
    >= 4 weight MatMuls), else None."""
    view = GraphView(model)
    lns = layer_norms(view)
    mms = view.weight_matmuls()
    softmaxes = []
    masked = False
    for node in view.graph.node:
        if node.op_type != "Softmax":
            continue
        src = view.producer.get(node.input[0])
        if src is not None and src.op_type in ("Add", "Where"):
            masked = True
        if _reaches(view, node, lambda p: p.op_type == "MatMul"
                    and not any(view.is_const(i) for i in p.input), depth=4):
            softmaxes.append(node)
    if not softmaxes or len(lns) < 2 or len(mms) < 4:
        return None
    scale = view.init.get(lns[0].scale)
    hidden = int(np.prod(scale.dims)) if scale is not None else 0
    return TransformerShape(len(softmaxes), hidden, len(lns), len(mms),
                            len(ffn_outputs(view)), masked)
