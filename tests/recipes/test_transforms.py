"""Graph transforms on a tiny seeded post-LN transformer block: structure, float equivalence,
the outlier channel found, refusal of a non-equivalent rewrite; detection and presets."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from edgeopt.recipes import TransformSpec
from edgeopt.recipes import transforms as tr
from edgeopt.recipes.graph import GraphView, detect, ffn_outputs, layer_norms
from edgeopt.recipes.groups import onnx_groups
from edgeopt.recipes.presets import excluded_nodes
from edgeopt.targets import ExclusionPreset

from . import _models as M


@pytest.fixture(scope="module")
def model():
    return M.block()


@pytest.fixture(scope="module")
def calib():
    return M.samples(24)


def ops(model) -> Counter:
    return Counter(n.op_type for n in model.graph.node)


def test_detect_and_roles(model):
    shape = detect(model)
    assert shape is not None and shape.layers == 1 and shape.hidden == M.D
    assert shape.masked_softmax and shape.ffn_outputs == 1
    view = GraphView(model)
    assert [n.name for n in ffn_outputs(view)] == ["ffn_out"]
    assert [ln.node.name for ln in layer_norms(view)] == ["ln1", "ln2"]
    names = [g.name for g in onnx_groups(model)]
    # weight MatMuls with a bias Add take the bias's module path as their name
    assert names == ["q_proj", "k_proj", "v_proj", "o", "ffn.in", "ffn.out"]
    positions = [g.position for g in onnx_groups(model)]
    assert positions == sorted(positions) and 0 <= positions[0] < positions[-1] <= 1


def test_detect_says_no_for_a_cnn_like_graph():
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    assert detect(helper.make_model(g)) is None


def test_smooth_duplicates_the_layernorm_and_keeps_the_residual_on_the_original(model, calib):
    res = tr.apply(model, [TransformSpec.make("smooth", alpha=0.5)], calib)
    out = res.model
    assert ops(out)["LayerNormalization"] == ops(model)["LayerNormalization"] + 1
    view = GraphView(out)
    # ln1 feeds the residual Add and the FFN MatMul: the residual still reads ln1's own output
    readers = {n.name for n in view.consumers["h1"]}
    assert readers == {"residual2"}
    smoothed = view.producer[next(n for n in out.graph.node if n.name == "ffn_in").input[0]]
    assert smoothed.op_type == "LayerNormalization" and smoothed.name != "ln1"
    check = res.details[-1]["float_check"]
    assert check["cosine_min"] > 1 - 1e-6 and check["max_rel_error"] < 1e-5
    assert "1 LayerNorm(s) duplicated" in res.notes[0]
    # the model given is not modified
    assert ops(model)["LayerNormalization"] == 2


def test_outlier_split_finds_the_planted_channel_and_keeps_it_float(model, calib):
    res = tr.apply(model, [TransformSpec.make("outlier-split", ratio=6.0)], calib)
    change = res.details[0]["changes"][0]
    assert change["matmul"] == "ffn_out" and change["outlier_channels"] == [M.OUTLIER]
    assert change["max"] > 6 * change["median"]
    assert any(n.endswith("_outlier_matmul") for n in res.float_nodes)
    view = GraphView(res.model)
    main = next(n for n in res.model.graph.node if n.name == "ffn_out")
    mask = view.const(view.producer[main.input[0]].input[1])
    assert mask[M.OUTLIER] == 0 and mask.sum() == M.F - 1
    assert np.all(view.const(main.input[1])[M.OUTLIER] == 0)  # outlier row zeroed
    assert res.details[-1]["float_check"]["cosine_min"] > 1 - 1e-6


def test_both_transforms_in_order_stay_float_equivalent(model, calib):
    res = tr.apply(model, [TransformSpec.make("smooth"), TransformSpec.make("outlier-split")],
                   calib, check=M.samples(6, seed=9))
    assert res.details[-1]["float_check"]["samples"] == 6
    a = tr.session(model).run(None, calib[1])[0]
    b = tr.session(res.model).run(None, calib[1])[0]
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


def test_a_rewrite_that_changes_the_outputs_is_refused(model, calib, monkeypatch):
    real = tr.smooth

    def broken(m, s, alpha):
        res = real(m, s, alpha)
        for t in res.model.graph.initializer:  # forget to rescale one weight
            if t.name.endswith("_smooth") and "ffn" in t.name:
                from onnx import numpy_helper

                t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * 1.5, t.name))
        return res

    monkeypatch.setitem(tr._TRANSFORMS, tr.TransformName.SMOOTH,
                        lambda m, s, spec: broken(m, s, spec.get("alpha")))
    with pytest.raises(tr.TransformError, match="changed the float model's outputs"):
        tr.apply(model, [TransformSpec.make("smooth")], calib)


def test_presets(model):
    names = set(excluded_nodes(model, (ExclusionPreset.TRANSFORMER,)))
    assert {"ln1", "ln2", "softmax", "residual1", "residual2", "scores_mask", "mask_where",
            "gelu_erf"} <= names
    assert not names & {"q_proj", "ffn_in", "ffn_out", "o_bias"}
    assert set(excluded_nodes(model, (ExclusionPreset.ACTIVATION_MATMULS,))) == \
        {"scores", "context"}
