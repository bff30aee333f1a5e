"""Exact ONNX graph rewrites applied to the staging copy before onnx2tf sees it.

Each pass returns how many nodes it changed; every pass is exact in float (the float check
after conversion proves it on real data), so it can never trade accuracy for convertibility.

* ``static_inputs``: the target's input shapes (batch 1, other dynamic dims from the first
  calibration sample) written into the graph, so onnxsim folds the Shape / Gather / Cast /
  int64 chains that a dynamic batch leaves and the Edge TPU cannot take.
* ``constant_gather_as_slice``: scalar-index Gathers (PyTorch attention's q / k / v pick) as
  Slice + Squeeze, which the TFLite GPU delegate takes (it refuses GATHER with 0-D indices).
* ``explicit_maxpool_padding``: onnx2tf turns a ``MaxPool`` with explicit pads (PyTorch's
  ``padding=1``, which TF's ``SAME`` does not reproduce) into ``PADV2`` filled with ``-FLT_MAX``.
  That constant then becomes the calibration minimum (ResNet-18: "requantization scale
  7.7e-42") and PADV2 is not an Edge TPU op. Padding with a constant is exact when no input
  value can be below it (every window holds a real value): 0 after ReLU / ReLU6 (every
  torchvision CNN), -0.375 after HardSwish, the Clip minimum, ...; otherwise edge padding is
  exact (a window that holds a padded cell also holds the border cell it copies, because
  pads < kernel), but it becomes MIRROR_PAD, which the Edge TPU lacks. A negative bound b is
  not padded as b (that is PADV2, which the Edge TPU lacks) but as
  ``MaxPool(Pad0(x - b)) + b`` — exact in real arithmetic, within float rounding of |b|.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# Lower bounds of op outputs for any input (a MaxPool after them can pad with the bound).
_LOWER_BOUND = {"Relu": 0.0, "Sigmoid": 0.0, "Softmax": 0.0, "Abs": 0.0, "Exp": 0.0,
                "Softplus": 0.0, "HardSigmoid": 0.0, "HardSwish": -0.375, "Tanh": -1.0}
# Ops that keep the lower bound of their data input(s).
_KEEPS_BOUND = {"MaxPool", "Identity", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze",
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


def _lower_bound(name: str, producers: dict[str, Any], consts: dict[str, np.ndarray],
                 depth: int = 0) -> float | None:
    """A value tensor ``name`` can never go below, for any model input (None: unknown)."""
    node = producers.get(name)
    if node is None or depth > 32:
        return None
    op = node.op_type
    if op in _LOWER_BOUND:
        return _LOWER_BOUND[op]
    if op == "Clip":
        return _clip_min(node, consts)
    if op == "Elu":
        alpha = next((a.f for a in node.attribute if a.name == "alpha"), 1.0)
        return -float(alpha)
    if op in _KEEPS_BOUND:
        data = node.input if op == "Concat" else node.input[:1]
        bounds = [_lower_bound(i, producers, consts, depth + 1) for i in data]
        if not data or any(b is None for b in bounds):
            return None
        low = min(b for b in bounds if b is not None)
        return min(low, _pad_value(node, consts)) if op == "Pad" else low
    return None


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
        return float(value.reshape(-1)[0]) if value is not None and value.size else -np.inf
    mode = next((a.s for a in node.attribute if a.name == "mode"), b"constant")
    return 0.0 if mode in (b"constant", "constant") else np.inf  # edge/reflect keep bounds


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def explicit_maxpool_padding(model: Any) -> dict[str, int]:
    """Move explicit MaxPool pads into a ``Pad`` node (see the module docstring).

    Returns:
        ``{"constant": n, "shifted": k, "edge": m}``: pools rewritten with a zero pad, with a
        zero pad between ``+ |bound|`` and ``- |bound|`` (a negative lower bound), or with an
        edge pad.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    consts = _constants(model)
    counts = {"constant": 0, "shifted": 0, "edge": 0}
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
        low = _lower_bound(node.input[0], producers, consts)
        rank = len(kernel) + 2
        half = len(pads) // 2
        full = [0, 0, *pads[:half], 0, 0, *pads[half:]]
        stem = (node.name or node.output[0]).replace("/", "_").strip("_")
        pads_name = f"edgeopt_pads_{stem}"
        graph.initializer.append(numpy_helper.from_array(np.array(full, np.int64), pads_name))
        padded = f"{node.input[0]}_edgeopt_padded_{stem}"
        source, shift = node.input[0], None
        if low is not None and low < 0:  # shift to >= 0, pad with 0 (PAD, not PADV2), undo
            shift = f"edgeopt_shift_{stem}"
            graph.initializer.append(numpy_helper.from_array(np.array(-low, np.float32), shift))
            graph.initializer.append(numpy_helper.from_array(np.array(low, np.float32),
                                                             f"{shift}_back"))
            source = f"{node.input[0]}_edgeopt_shifted_{stem}"
            new_nodes.append(helper.make_node("Add", [node.input[0], shift], [source],
                                              name=f"{node.name}_edgeopt_shift"))
        new_nodes.append(helper.make_node(
            "Pad", [source, pads_name], [padded], name=f"{node.name}_edgeopt_pad",
            mode="constant" if low is not None else "edge",
        ))
        kept = {k: v for k, v in attrs.items() if k not in ("pads", "auto_pad")}
        kept["pads"] = [0] * (2 * (rank - 2))
        pooled = f"{node.output[0]}_edgeopt_shifted" if shift else node.output[0]
        new_nodes.append(helper.make_node("MaxPool", [padded], [pooled], name=node.name, **kept))
        if shift:
            new_nodes.append(helper.make_node("Add", [pooled, f"{shift}_back"], [node.output[0]],
                                              name=f"{node.name}_edgeopt_unshift"))
        counts["edge" if low is None else "shifted" if shift else "constant"] += 1
    if any(counts.values()):
        del graph.node[:]
        graph.node.extend(new_nodes)
    return counts


def constant_gather_as_slice(model: Any) -> int:
    """``Gather(x, i, axis)`` with a constant scalar index -> ``Squeeze(Slice(x, i, i+1))``.

    PyTorch's multi-head attention export picks q / k / v out of the packed projection with
    scalar-index Gathers; TFLite's GPU delegate refuses GATHER with non-1-D indices, which
    splits an encoder into many small GPU partitions. The slice is the same selection.

    Returns:
        The number of Gather nodes replaced.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    consts = _constants(model)
    new_nodes, count = [], 0
    for node in graph.node:
        index = consts.get(node.input[1]) if node.op_type == "Gather" else None
        if index is None or index.ndim != 0 or index.dtype.kind not in "iu":
            new_nodes.append(node)
            continue
        i = int(index)
        axis = next((int(a.i) for a in node.attribute if a.name == "axis"), 0)
        stem = (node.name or node.output[0]).replace("/", "_").strip("_")
        names = [f"edgeopt_{stem}_{k}" for k in ("starts", "ends", "axes")]
        end = i + 1 if i != -1 else np.iinfo(np.int64).max
        for name, value in zip(names, (i, end, axis), strict=True):
            graph.initializer.append(numpy_helper.from_array(np.array([value], np.int64), name))
        sliced = f"{node.output[0]}_edgeopt_slice"
        new_nodes.append(helper.make_node("Slice", [node.input[0], *names], [sliced],
                                          name=f"{node.name}_edgeopt_slice"))
        new_nodes.append(helper.make_node("Squeeze", [sliced, names[2]], list(node.output),
                                          name=f"{node.name}_edgeopt_squeeze"))
        count += 1
    if count:
        del graph.node[:]
        graph.node.extend(new_nodes)
    return count


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
