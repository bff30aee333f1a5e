"""Exact ONNX rewrites before onnx2tf, checked against ONNX Runtime on inputs with negative
values (bit-exact, or within float rounding for the shifted MaxPool form): MaxPool padding,
scalar-index Gather, the HardSwish finder of ``--rewrite edgetpu`` (end to end:
``test_onnx2tf.py``, on the shared conversion)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeopt.backends.onnx_rewrites import (
    constant_gather_as_slice,
    edgetpu_rewrites,
    explicit_maxpool_padding,
    static_inputs,
)

from .test_onnx2tf import H, W, _io, cnn


def _pool_model(producer: str, **pool: Any) -> Any:
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    x = "input"
    if producer in ("Relu", "HardSwish"):
        nodes.append(helper.make_node(producer, [x], ["r"], name="/act"))
        x = "r"
    elif producer == "Clip":
        inits += [numpy_helper.from_array(np.array(0, np.float32), "lo"),
                  numpy_helper.from_array(np.array(6, np.float32), "hi")]
        nodes.append(helper.make_node("Clip", [x, "lo", "hi"], ["r"], name="/relu6"))
        x = "r"
    nodes.append(helper.make_node("MaxPool", [x], ["output"], name="/pool", **pool))
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, list("nchw"))
    graph = helper.make_graph(nodes, "g", [_io("input", [1, 4, 9, 9])], [out], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: Any, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


CASES = {  # producer, pool attributes, expected rewrite
    "after relu, k3 s2 p1 (ResNet stem)": ("Relu", dict(kernel_shape=[3, 3], strides=[2, 2],
                                                        pads=[1, 1, 1, 1]), "constant"),
    "after relu6": ("Clip", dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
                    "constant"),
    "after hardswish (>= -3/8)": ("HardSwish", dict(kernel_shape=[3, 3], strides=[2, 2],
                                                    pads=[1, 1, 1, 1]), "shifted"),
    "signed input, k3 s1 p1": ("", dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
                               "edge"),
    "signed input, k2 s2 p1 asymmetric": ("", dict(kernel_shape=[2, 2], strides=[2, 2],
                                                   pads=[1, 0, 0, 1]), "edge"),
    "signed input, k5 s1 p2": ("", dict(kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2]),
                               "edge"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_maxpool_padding_rewrite_is_exact(case: str) -> None:
    import onnx

    producer, pool, kind = CASES[case]
    model = _pool_model(producer, **pool)
    before = onnx.ModelProto()
    before.CopyFrom(model)
    counts = explicit_maxpool_padding(model)
    assert counts == {k: int(k == kind) for k in ("constant", "shifted", "edge")}
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    assert ops[-4:] == ["Add", "Pad", "MaxPool", "Add"] if kind == "shifted" else \
        ops[-2:] == ["Pad", "MaxPool"]
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.normal(0, 3, (1, 4, 9, 9)).astype(np.float32)  # negative values included
        want, got = _run(before, x), _run(model, x)
        if kind == "shifted":  # (x + 3/8) - 3/8: exact but for float rounding near 3/8
            assert np.allclose(want, got, rtol=0, atol=1e-6), case
        else:
            assert np.array_equal(want, got), case


def test_maxpool_rewrite_leaves_what_it_cannot_prove() -> None:
    for pool in (dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], ceil_mode=1),
                 dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], dilations=[2, 2]),
                 dict(kernel_shape=[3, 3], pads=[0, 0, 0, 0]),
                 dict(kernel_shape=[3, 3], auto_pad="SAME_UPPER")):
        model = _pool_model("Relu", **pool)
        assert explicit_maxpool_padding(model) == {"constant": 0, "shifted": 0, "edge": 0}, pool


@pytest.mark.parametrize(("index", "axis"), [(0, 0), (2, 0), (-1, 0), (1, 2), (-2, 1)])
def test_scalar_gather_becomes_an_exact_slice(index: int, axis: int) -> None:
    """PyTorch attention picks q / k / v with scalar-index Gathers (GPU delegate: refused)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Gather", ["input", "idx"], ["output"], name="/attn/Gather",
                          axis=axis)], "g", [_io("input", [3, 4, 5])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array(index, np.int64), "idx")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    before = onnx.ModelProto()
    before.CopyFrom(model)
    assert constant_gather_as_slice(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Slice", "Squeeze"]
    x = np.random.default_rng(0).normal(size=(3, 4, 5)).astype(np.float32)
    assert np.array_equal(_run(before, x), _run(model, x))


def test_static_inputs_fix_the_batch() -> None:
    import onnx

    model = onnx.load(str(cnn(Path(tempfile.mkdtemp()) / "net.onnx")))
    assert static_inputs(model, {"input": (1, 3, H, W)}) == 1
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, H, W]
    assert static_inputs(model, {"input": (1, 3, H, W)}) == 0


def test_edgetpu_rewrites_finds_the_ops_it_can_replace(tmp_path: Path) -> None:
    import onnx

    both = onnx.load(str(cnn(tmp_path / "hs.onnx", stem="HardSwish", block="HardSwish")))
    assert edgetpu_rewrites(both) == {"HardSwish": 2}
    assert edgetpu_rewrites(onnx.load(str(cnn(tmp_path / "relu.onnx")))) == {}
