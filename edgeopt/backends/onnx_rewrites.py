"""Exact ONNX graph rewrites applied to the staging copy before onnx2tf sees it.

Each pass returns how many nodes it changed; every pass is exact in float (the float check
after conversion proves it on real data), so it can never trade accuracy for convertibility.

* ``static_inputs``: the target's input shapes (batch 1, other dynamic dims from the first
  calibration sample) written into the graph, so onnxsim folds the Shape / Gather / Cast /
  int64 chains that a dynamic batch leaves and the Edge TPU cannot take.
* ``explicit_maxpool_padding``: onnx2tf turns a ``MaxPool`` with explicit pads (PyTorch's
  ``padding=1``, which TF's ``SAME`` does not reproduce) into ``PADV2`` filled with ``-FLT_MAX``.
  That constant then becomes the calibration minimum (ResNet-18: "requantization scale
  7.7e-42") and PADV2 is not an Edge TPU op. Padding with 0 is exact when the input is never
  negative (after ReLU / Clip(min >= 0) / Sigmoid, as in every torchvision CNN); otherwise
  edge padding is exact (a window that holds a padded cell also holds the border cell it
  copies, because pads < kernel).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# Ops whose output is never negative (for any input): a MaxPool after them can pad with 0.
_NON_NEGATIVE = {"Relu", "Sigmoid", "Softmax", "Abs", "Exp", "Softplus", "HardSigmoid"}
# Ops that keep "never negative" when their data input has it.
_KEEPS_SIGN = {"MaxPool", "Identity", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze",
               "Concat", "Pad"}


def static_inputs(model: Any, shapes: Mapping[str, Sequence[int | None]]) -> int:
    """Write concrete dims into the graph inputs; returns the number of dims changed."""
    changed = 0
    for value in model.graph.input:
        wanted = shapes.get(value.name)
        if wanted is None:
            continue
        for dim, size in zip(value.type.tensor_type.shape.dim, wanted, strict=False):
            if size is not None and not (dim.HasField("dim_value") and dim.dim_value == size):
                dim.Clear()
                dim.dim_value = int(size)
                changed += 1
    if changed:  # value_info of the dynamic graph would contradict the new shapes
        del model.graph.value_info[:]
        for out in model.graph.output:
            for dim in out.type.tensor_type.shape.dim:
                if not dim.HasField("dim_value"):
                    dim.Clear()
    return changed


def _constants(model: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            for a in node.attribute:
                if a.name == "value" and a.HasField("t"):
                    values[node.output[0]] = numpy_helper.to_array(a.t)
    return values


def _non_negative(name: str, producers: dict[str, Any], consts: dict[str, np.ndarray],
                  depth: int = 0) -> bool:
    """True when tensor ``name`` can never hold a negative value (conservative)."""
    node = producers.get(name)
    if node is None or depth > 32:
        return False
    op = node.op_type
    if op in _NON_NEGATIVE:
        return True
    if op == "Clip":
        low = _clip_min(node, consts)
        return low is not None and low >= 0
    if op in _KEEPS_SIGN:
        data = node.input[:1] if op != "Concat" else node.input
        if op == "Pad" and _pad_value(node, consts) < 0:
            return False
        return bool(data) and all(_non_negative(i, producers, consts, depth + 1) for i in data)
    return False


def _clip_min(node: Any, consts: dict[str, np.ndarray]) -> float | None:
    for a in node.attribute:  # opset < 11
        if a.name == "min":
            return float(a.f)
    if len(node.input) > 1 and node.input[1]:
        value = consts.get(node.input[1])
        return float(np.min(value)) if value is not None else None
    return None


def _pad_value(node: Any, consts: dict[str, np.ndarray]) -> float:
    if len(node.input) > 2 and node.input[2]:
        value = consts.get(node.input[2])
        return float(value.reshape(-1)[0]) if value is not None and value.size else -1.0
    return 0.0


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def explicit_maxpool_padding(model: Any) -> dict[str, int]:
    """Move explicit MaxPool pads into a ``Pad`` node (see the module docstring).

    Returns:
        ``{"zero": n, "edge": m}``: pools rewritten with a zero pad / an edge pad.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    consts = _constants(model)
    counts = {"zero": 0, "edge": 0}
    new_nodes = []
    for node in graph.node:
        attrs = _attrs(node) if node.op_type == "MaxPool" else {}
        pads = list(attrs.get("pads", []))
        kernel = list(attrs.get("kernel_shape", []))
        plain = (
            node.op_type == "MaxPool" and any(pads) and len(node.output) == 1
            and attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
            and all(d == 1 for d in attrs.get("dilations", [1] * len(kernel)))
            and not attrs.get("ceil_mode", 0)
            and all(p < k for p, k in zip(pads, kernel + kernel, strict=False))
        )
        if not plain:
            new_nodes.append(node)
            continue
        zero = _non_negative(node.input[0], producers, consts)
        rank = len(kernel) + 2
        half = len(pads) // 2
        full = [0, 0, *pads[:half], 0, 0, *pads[half:]]
        stem = (node.name or node.output[0]).replace("/", "_").strip("_")
        pads_name = f"edgeopt_pads_{stem}"
        graph.initializer.append(numpy_helper.from_array(np.array(full, np.int64), pads_name))
        padded = f"{node.input[0]}_edgeopt_padded_{stem}"
        pad_inputs = [node.input[0], pads_name]
        if zero:
            zero_name = f"edgeopt_zero_{stem}"
            graph.initializer.append(numpy_helper.from_array(np.array(0, np.float32), zero_name))
            pad_inputs.append(zero_name)
        new_nodes.append(helper.make_node(
            "Pad", pad_inputs, [padded], name=f"{node.name}_edgeopt_pad",
            mode="constant" if zero else "edge",
        ))
        kept = {k: v for k, v in attrs.items() if k not in ("pads", "auto_pad")}
        kept["pads"] = [0] * (2 * (rank - 2))
        new_nodes.append(helper.make_node("MaxPool", [padded], list(node.output),
                                          name=node.name, **kept))
        counts["zero" if zero else "edge"] += 1
    if counts["zero"] or counts["edge"]:
        del graph.node[:]
        graph.node.extend(new_nodes)
    return counts


# ONNX op -> what --rewrite edgetpu replaces it with: onnx2tf's own "pseudo operator" forms
# (``replace_to_pseudo_operators``), built from ops the Edge TPU compiler maps. HardSwish:
# x * ReLU6(x + 3) * 0.16666666 (the multiplier differs from 1/6 by one float32 ulp, which is
# what stops the TFLite converter from fusing the pattern back into HARD_SWISH).
EDGETPU_PSEUDO = {
    "HardSwish": "MUL, ADD, RELU6 (x * relu6(x + 3) / 6)",
    "LeakyRelu": "MAXIMUM, MUL (max(x, alpha * x))",
    "Neg": "MUL (x * -1)",
}


def edgetpu_rewrites(model: Any) -> dict[str, int]:
    """The ``--rewrite edgetpu`` replacements this graph can use: ONNX op -> node count."""
    found: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type in EDGETPU_PSEUDO:
            found[node.op_type] = found.get(node.op_type, 0) + 1
    return found
