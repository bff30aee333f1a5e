"""ARM CPU: XNNPACK placement (measured through LiteRT's delegate nodes, README rule table as
fallback) and the ONNX node report (QDQ form, real ORT kernels, execution provider)."""

from __future__ import annotations

from edgeopt.inspect import onnx_nodes, preflight, xnnpack
from edgeopt.inspect import report as R
from edgeopt.inspect.tflite_graph import read_tflite
from edgeopt.targets import load_target

from . import _models

ARM = load_target("arm-cpu")


def test_xnnpack_placement_is_measured_from_delegate_nodes() -> None:
    rep = preflight(_models.supported_int8(), ARM)
    meas = rep["measurement"]
    assert meas["available"] and meas["delegate_nodes"] >= 1
    by_op = {e["op"]: e for e in rep["ops"]}
    # the int8 convolutions are XNNPACK's core: they must be inside a delegate node
    assert by_op["CONV_2D"]["runs_on"] == "xnnpack"
    assert by_op["DEPTHWISE_CONV_2D"]["runs_on"] == "xnnpack"
    for e in rep["ops"]:
        if not e["delegated"]:
            assert e["reasons"] and e["suggestion"]


def test_covered_ops_walks_back_from_delegate_outputs() -> None:
    graph = read_tflite(_models.leaky_middle_int8())
    conv0, leaky, conv1 = graph.ops[1], graph.ops[2], graph.ops[3]
    node = {"inputs": [t.index for t in conv0.inputs], "outputs": [conv1.outputs[0].index]}
    assert xnnpack.covered_ops(graph, [node]) == {conv0.index, leaky.index, conv1.index}


def test_rule_table_fallback_when_not_measured() -> None:
    graph = read_tflite(_models.float_model())
    rep = xnnpack.analyze(graph, ARM, measured=False)
    assert not rep["measurement"]["available"]
    assert "README" in rep["measurement"]["source"]
    by_op = {e["op"]: e for e in rep["ops"]}
    assert by_op["CONV_2D"]["runs_on"] == "xnnpack"  # float conv: in the float list
    assert by_op["MEAN"]["runs_on"] == "xnnpack"


def test_xnnpack_rule_reasons() -> None:
    graph = read_tflite(_models.topk_middle_float())
    topk = next(op for op in graph.ops if op.name == "TOPK_V2")
    assert xnnpack.rule_reasons(topk)[0]["code"] == R.UNSUPPORTED_DTYPE  # int32 indices out


def test_onnx_qdq_nodes_real_kernels_and_float_reasons() -> None:
    fp, q = _models.qdq_onnx()
    rep = preflight(q, ARM)
    assert rep["format"] == "onnx" and rep["delegate"] == "CPUExecutionProvider"
    by_name = {e["name"]: e for e in rep["ops"]}
    conv, erf, add = by_name["conv"], by_name["erf"], by_name["add"]
    assert conv["form"] == "qdq" and conv["kernel"] == "QLinearConv" and conv["quantized"]
    assert add["kernel"] == "QLinearAdd" and add["quantized"]
    # Erf sits between DequantizeLinear and QuantizeLinear but ORT has no int8 Erf
    assert erf["form"] == "qdq" and erf["int8_kernel"] is False and not erf["quantized"]
    assert "nodes_to_exclude" in erf["suggestion"]
    assert all(e["runs_on"] == "CPUExecutionProvider" for e in rep["ops"])
    assert rep["summary"]["quantized"] == 2
    assert set(rep["runtime"]["int8_kernels"]) == {"QLinearConv", "QLinearAdd"}


def test_onnx_float_model_says_it_is_not_quantized() -> None:
    fp, _ = _models.qdq_onnx()
    rep = preflight(fp, ARM)
    assert rep["summary"]["quantized"] == 0
    erf = next(e for e in rep["ops"] if e["op"] == "Erf")
    assert "not quantized" in erf["reasons"][0]["message"]


def test_onnx_placement_log_parser() -> None:
    log = (
        "2026 [V:onnxruntime:, session_state.cc:1598 VerifyEachNodeIsAssignedToAnEp] "
        "Node placements\n"
        "2026 [V:onnxruntime:, session_state.cc:1601 VerifyEachNodeIsAssignedToAnEp]  "
        "Node(s) placed on [XnnpackExecutionProvider]. Number of nodes: 1\n"
        "2026 [V:onnxruntime:, session_state.cc:1603 VerifyEachNodeIsAssignedToAnEp]   "
        "QLinearConv (conv)\n"
        "2026 [V:onnxruntime:, session_state.cc:1601 VerifyEachNodeIsAssignedToAnEp]  "
        "Node(s) placed on [CPUExecutionProvider]. Number of nodes: 1\n"
        "2026 [V:onnxruntime:, session_state.cc:1603 VerifyEachNodeIsAssignedToAnEp]   "
        "Erf (erf)\n"
    )
    all_on, placement = onnx_nodes.parse_placement(log)
    assert all_on is None
    assert placement == {"conv": "XnnpackExecutionProvider", "erf": "CPUExecutionProvider"}
    all_on, _ = onnx_nodes.parse_placement("x  All nodes placed on [CPUExecutionProvider]. N")
    assert all_on == "CPUExecutionProvider"
