"""Multiply-accumulate (MAC) count of a TFLite model, from its ops and tensor shapes.

Only the ops that do the arithmetic of a neural network are counted; elementwise ops (ADD, MUL,
activations), pooling and data movement cost memory bandwidth, not MACs, and are reported as an
op count instead. The graph is read with ``edgeopt.inspect.tflite_graph`` (pure-Python
flatbuffers: no TensorFlow, no interpreter).

Counting rules (N,H,W,C = NHWC output dims; weights in TFLite layout):

* ``CONV_2D``            weights [O, kh, kw, I/groups]: ``N*H*W*O * kh*kw*(I/groups)``
* ``DEPTHWISE_CONV_2D``  weights [1, kh, kw, C*mult]:   ``N*H*W*C*mult * kh*kw``
* ``TRANSPOSE_CONV``     weights [O, kh, kw, I], input [N, h, w, I]: ``N*h*w*I * kh*kw*O``
* ``FULLY_CONNECTED``    weights [O, I]: ``(output elements) * I``
* ``BATCH_MATMUL``       ``(output elements) * K`` with K the contracted dim of the first
  input (its last dim, or the one before it when ``adj_x``)
* ``CONV_3D``            weights [kd, kh, kw, I, O]: ``(output elements) * kd*kh*kw*I``

The count is the same for the float, float16 and int8 builds of one model (quantization does
not change shapes), so the suite counts the float build once and uses it for every artifact.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAC_OPS = (
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "TRANSPOSE_CONV",
    "FULLY_CONNECTED",
    "BATCH_MATMUL",
    "CONV_3D",
)


@dataclass(frozen=True)
class MacCount:
    """MACs of one model: total, per op type, and the op histogram."""

    total: int
    by_op: dict[str, int]
    op_counts: dict[str, int]
    uncounted: list[str] = field(default_factory=list)  # MAC ops whose shapes were unknown

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "gmac": round(self.total / 1e9, 4),
            "by_op": dict(self.by_op),
            "op_counts": dict(self.op_counts),
            "uncounted": list(self.uncounted),
        }


def _prod(dims: tuple[int, ...]) -> int:
    return math.prod(dims) if dims else 1


def op_macs(name: str, inputs: list[tuple[int, ...]], output: tuple[int, ...],
            options: dict[str, Any]) -> int | None:
    """MACs of one op from its input shapes and output shape.

    Args:
        name: builtin op name (``CONV_2D``...).
        inputs: shapes of the op's inputs in order (activation, weights, [bias]).
        output: shape of its first output.
        options: its builtin options (``adj_x`` for BATCH_MATMUL).

    Returns:
        The MAC count, 0 for ops that do no MACs, ``None`` when a MAC op's shapes are unusable
        (dynamic or missing) so the caller can report it instead of silently counting 0.
    """
    if name not in MAC_OPS:
        return 0
    if any(d < 0 for d in output) or len(inputs) < 2 or any(d < 0 for s in inputs for d in s):
        return None
    act, w = inputs[0], inputs[1]
    if name == "CONV_2D" and len(w) == 4 and len(output) == 4:
        return _prod(output) * w[1] * w[2] * w[3]
    if name == "DEPTHWISE_CONV_2D" and len(w) == 4:
        return _prod(output) * w[1] * w[2]
    if name == "TRANSPOSE_CONV":
        # inputs: (output_shape, weights, activation[, bias])
        if len(inputs) < 3 or len(inputs[1]) != 4 or len(inputs[2]) != 4:
            return None
        wt, x = inputs[1], inputs[2]
        return _prod(x) * wt[1] * wt[2] * wt[0]
    if name == "FULLY_CONNECTED" and len(w) == 2:
        return _prod(output) * w[1]
    if name == "BATCH_MATMUL" and len(act) >= 2:
        k = act[-2] if options.get("adj_x") else act[-1]
        return _prod(output) * k
    if name == "CONV_3D" and len(w) == 5:
        return _prod(output) * w[0] * w[1] * w[2] * w[3]
    return None


def count_macs(path: str | Path) -> MacCount:
    """Count the MACs of a ``.tflite`` model's main subgraph.

    Args:
        path: the model file.

    Returns:
        A ``MacCount``.

    Raises:
        edgeopt_runtime.errors.ModelLoadError: the file is not a readable TFLite model.
    """
    from edgeopt.inspect.tflite_graph import read_tflite

    graph = read_tflite(path)
    by_op: Counter[str] = Counter()
    ops: Counter[str] = Counter()
    uncounted: list[str] = []
    for op in graph.ops:
        ops[op.name] += 1
        if not op.outputs:
            continue
        macs = op_macs(
            op.name, [t.shape for t in op.inputs], op.outputs[0].shape, op.options
        )
        if macs is None:
            uncounted.append(f"{op.index}:{op.name}")
        else:
            by_op[op.name] += macs
    by_op_sorted = {k: v for k, v in sorted(by_op.items(), key=lambda kv: -kv[1]) if v}
    return MacCount(
        total=sum(by_op.values()),
        by_op=by_op_sorted,
        op_counts=dict(sorted(ops.items(), key=lambda kv: -kv[1])),
        uncounted=uncounted,
    )
