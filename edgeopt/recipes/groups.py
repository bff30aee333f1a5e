"""Layer groups: quantizers that go back to float together (what the search reverts).

One group per weight-carrying node (weight MatMul, Gemm, Conv, ConvTranspose) of an ONNX graph:
keeping that node float reverts its weight quantizer and its input quantizer together, and its
bias Add / activation follow it in ORT's QDQ rules. A group's keep-float pattern names exactly
that node; its position (0 = first, 1 = last in graph order) lets partition-aware searches prefer
reverts near the end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_WEIGHT_OPS = {"MatMul", "Gemm", "Conv", "ConvTranspose"}


@dataclass(frozen=True)
class LayerGroup:
    """Quantizers that go back to float together, and where they sit in the graph."""

    name: str
    patterns: tuple[str, ...]  # keep-float regexes that revert exactly this group
    position: float = 0.5  # 0 = first op, 1 = last op


def onnx_groups(model: object) -> list[LayerGroup]:
    """The layer groups of an ``onnx.ModelProto`` (see the module docstring)."""
    from .graph import GraphView

    view = GraphView(model)  # type: ignore[arg-type]
    nodes = list(view.graph.node)
    last = max(1, len(nodes) - 1)
    out = []
    for i, node in enumerate(nodes):
        if node.op_type not in _WEIGHT_OPS or not node.name:
            continue
        if node.op_type in ("MatMul", "Gemm") and not view.has_weight(node):
            continue
        if node.op_type.startswith("Conv") and not view.is_const(node.input[1]):
            continue
        name = view.layer_name(node) if node.op_type in ("MatMul", "Gemm") else node.name
        # "(/|$)": ORT's pre-processing names a fused node "<name>/<Fusion>_..."
        out.append(LayerGroup(name, (f"^{re.escape(node.name)}(/|$)",), i / last))
    return out
