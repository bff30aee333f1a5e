"""A tiny post-LN transformer block built with onnx.helper (seeded), as torch exports it.

x [1, T, D] float, mask [1, T] float (1 = token, 0 = padding) -> additive bias
Where(mask > 0.5, 0, -inf) -> one attention head -> residual -> LayerNorm -> FFN (MatMul, GELU in
its Erf form, MatMul) -> residual -> LayerNorm -> y [1, T, D]. Column ``OUTLIER`` of the FFN's
first weight is scaled up, so channel ``OUTLIER`` of the FFN output projection's input is an
activation outlier (as in real BERT-class models).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

T, D, F = 8, 16, 64
OUTLIER = 5


def block(seed: int = 0, neg: float = -np.inf) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits = []

    def w(name: str, *shape: int, scale: float = 0.3) -> str:
        inits.append(numpy_helper.from_array(
            (rng.standard_normal(shape) * scale).astype(np.float32), name))
        return name

    def c(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    w1 = (rng.standard_normal((D, F)) * 0.3).astype(np.float32)
    w1[:, OUTLIER] *= 25.0
    inits.append(numpy_helper.from_array(w1, "ffn.in.weight"))
    n = helper.make_node
    nodes = [
        n("Greater", ["mask", c("half", np.float32(0.5))], ["keep"], name="mask_gt"),
        n("Where", ["keep", c("zero", np.float32(0.0)), c("neg", np.float32(neg))], ["bias2"],
          name="mask_where"),
        n("Unsqueeze", ["bias2", c("axes01", np.array([1], np.int64))], ["bias"], name="mask_unsq"),
        n("MatMul", ["x", w("q.weight", D, D)], ["q"], name="q_proj"),
        n("MatMul", ["x", w("k.weight", D, D)], ["k"], name="k_proj"),
        n("MatMul", ["x", w("v.weight", D, D)], ["v"], name="v_proj"),
        n("Transpose", ["k"], ["kt"], perm=[0, 2, 1], name="k_t"),
        n("MatMul", ["q", "kt"], ["s0"], name="scores"),
        n("Mul", ["s0", c("scale", np.float32(1 / np.sqrt(D)))], ["s1"], name="scores_scale"),
        n("Add", ["s1", "bias"], ["s2"], name="scores_mask"),
        n("Softmax", ["s2"], ["p"], axis=-1, name="softmax"),
        n("MatMul", ["p", "v"], ["ctx"], name="context"),
        n("MatMul", ["ctx", w("o.weight", D, D)], ["o0"], name="o_proj"),
        n("Add", ["o0", w("o.bias", D, scale=0.1)], ["o1"], name="o_bias"),
        n("Add", ["o1", "x"], ["r1"], name="residual1"),
        n("LayerNormalization", ["r1", c("ln1.weight", np.ones(D, np.float32) * 1.5),
                                 w("ln1.bias", D, scale=0.1)], ["h1"], axis=-1, name="ln1"),
        n("MatMul", ["h1", "ffn.in.weight"], ["f0"], name="ffn_in"),
        n("Add", ["f0", w("ffn.in.bias", F, scale=0.1)], ["f1"], name="ffn_in_bias"),
        # GELU as torch's TorchScript exporter writes it: x * 0.5 * (1 + erf(x / sqrt 2))
        n("Div", ["f1", c("sqrt2", np.float32(np.sqrt(2)))], ["g0"], name="gelu_div"),
        n("Erf", ["g0"], ["g1"], name="gelu_erf"),
        n("Add", ["g1", c("one", np.float32(1.0))], ["g2"], name="gelu_add"),
        n("Mul", ["f1", "g2"], ["g3"], name="gelu_mul"),
        n("Mul", ["g3", c("halff", np.float32(0.5))], ["g4"], name="gelu_half"),
        n("MatMul", ["g4", w("ffn.out.weight", F, D, scale=0.1)], ["f2"], name="ffn_out"),
        n("Add", ["f2", w("ffn.out.bias", D, scale=0.1)], ["f3"], name="ffn_out_bias"),
        n("Add", ["f3", "h1"], ["r2"], name="residual2"),
        n("LayerNormalization", ["r2", w("ln2.weight", D), w("ln2.bias", D, scale=0.1)], ["y"],
          axis=-1, name="ln2"),
    ]
    graph = helper.make_graph(
        nodes, "block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, T, D]),
         helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, T])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, T, D])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def samples(n: int, seed: int = 1, padded: bool = True) -> list[dict[str, np.ndarray]]:
    """``n`` feeds; with ``padded`` most have 1-4 padding positions (mask 0) at the end."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        mask = np.ones((1, T), np.float32)
        if padded and i % 4:
            mask[0, T - 1 - i % 4:] = 0.0
        out.append({"x": rng.standard_normal((1, T, D)).astype(np.float32), "mask": mask})
    return out


def save(model: onnx.ModelProto, folder: Path, name: str = "block.onnx") -> Path:
    path = folder / name
    onnx.save(model, str(path))
    return path
