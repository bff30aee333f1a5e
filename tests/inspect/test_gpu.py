"""Mobile GPU: rules ported from gpu_compatibility.cc, LiteRT analyzer parsing, partitions."""

from __future__ import annotations

import pytest

from edgeopt.inspect import gpu, preflight
from edgeopt.inspect import report as R
from edgeopt.inspect.tflite_graph import OpInfo, TensorInfo
from edgeopt.targets import load_target

from . import _models

GPU = load_target("mobile-gpu")


def codes(entry: dict) -> set[str]:
    return {r["code"] for r in entry["reasons"]}


def test_int8_model_runs_entirely_on_the_gpu_with_dequantize_note() -> None:
    rep = preflight(_models.supported_int8(), GPU)
    assert rep["delegate"] == "gpu" and rep["summary"]["fully_delegated"]
    assert any("dequantizes" in n for n in rep["notes"])
    assert rep["analyzer"]["available"] and rep["analyzer"]["tool"]


def test_unsupported_op_keeps_only_the_largest_partition_on_the_gpu() -> None:
    rep = preflight(_models.topk_middle_float(), GPU)
    ops = rep["ops"]
    names = [e["op"] for e in ops]
    k = names.index("TOPK_V2")
    assert codes(ops[k]) >= {R.OP_NOT_SUPPORTED}
    assert all(e["runs_on"] == "gpu" for e in ops[:k])  # conv, conv, reshape: the larger side
    tail = ops[k + 1 :]
    assert tail and all(codes(e) == {R.NOT_IN_DELEGATED_PARTITION} for e in tail)
    assert rep["partitions"] == 2
    assert rep["summary"]["first_blocking_op"]["op"] == "TOPK_V2"


def test_dynamic_batch_alone_is_a_note_other_dynamic_dims_block() -> None:
    rep = preflight(_models.dynamic_batch_int8(), GPU)
    assert rep["summary"]["fully_delegated"]
    assert any("batch dimension is dynamic" in n for n in rep["notes"])
    op = OpInfo(
        0, "RESHAPE", 1, (_t(0),), (TensorInfo(1, "y", "float32", (1, 1), (1, -1), None, 0),), {}
    )
    reasons = gpu.op_reasons(op, GPU)
    assert [r["code"] for r in reasons] == [R.DYNAMIC_SHAPE]


def test_analyzer_silence_is_called_out_when_rules_disagree() -> None:
    rep = preflight(_models.topk_middle_float(), GPU)
    ana = rep["analyzer"]
    assert ana["available"]
    if ana["compatible"]:  # measured with ai-edge-litert 2.3: the analyzer misses TOPK_V2
        assert any("reports every model compatible" in n for n in rep["notes"])
    else:
        assert ana["warnings"]


ANALYZER_TEXT = """Your TFLite model has '1' subgraph(s). In the subgraph description below,
T# represents the Tensor numbers.

Subgraph#0 main(T#0) -> [T#12]
  Op#0 CONV_2D(T#0, T#6, T#5) -> [T#7]
  Op#1 RESHAPE(T#7, T#2[1, -1]) -> [T#9]
  Op#2 TOPK_V2(T#9, T#3[3]) -> [T#10, T#11]
GPU COMPATIBILITY WARNING: Not supported op TOPK_V2
  Op#3 FULLY_CONNECTED(T#10, T#4, T#-1) -> [T#12]

GPU COMPATIBILITY WARNING: Subgraph#0 has GPU delegate compatibility issues at nodes 2 with \
TFLite runtime version 2.21.0

Tensors of Subgraph#0
"""


def test_parse_analyzer_warnings_per_op() -> None:
    parsed = gpu.parse_analyzer(ANALYZER_TEXT)
    assert parsed == {"compatible": False, "warnings": {2: "Not supported op TOPK_V2"}}
    ok = gpu.parse_analyzer(
        "Subgraph#0 main(T#0) -> [T#1]\n  Op#0 RELU(T#0) -> [T#1]\n\n"
        "Your model looks compatible with GPU delegate on TFLite runtime"
    )
    assert ok == {"compatible": True, "warnings": {}}


def _t(i: int, dtype: str = "float32", shape: tuple[int, ...] = (1, 4, 4, 8), const: int = 0):
    return TensorInfo(i, f"t{i}", dtype, shape, shape, None, const)


@pytest.mark.parametrize(
    ("op", "needle"),
    [
        (OpInfo(0, "SOFTMAX", 1, (_t(0),), (_t(1),), {"beta": 2.0}), "beta"),
        (
            OpInfo(
                0,
                "DEPTHWISE_CONV_2D",
                1,
                (_t(0), _t(1, const=64), _t(2, const=16)),
                (_t(3),),
                {"depth_multiplier": 2},
            ),
            "depth_multiplier",
        ),
        (OpInfo(0, "STRIDED_SLICE", 1, (_t(0),), (_t(1),), {"shrink_axis_mask": 1}), "shrink"),
        (OpInfo(0, "MEAN", 1, (_t(0), _t(1, "int32", (2,))), (_t(2),), {}), "constant int32"),
        (
            OpInfo(0, "CONV_2D", 1, (_t(0),), (_t(1),), {"fused_activation_function": "SIGN_BIT"}),
            "SIGN_BIT",
        ),
    ],
)
def test_parameter_checks(op: OpInfo, needle: str) -> None:
    reasons = gpu.op_reasons(op, GPU)
    assert any(r["code"] == R.UNSUPPORTED_PARAM and needle in r["message"] for r in reasons)


def test_int64_and_rank5_tensors_are_rejected() -> None:
    op = OpInfo(0, "RESHAPE", 1, (_t(0, "int64"),), (_t(1, shape=(1, 2, 2, 2, 2)),), {})
    got = {r["code"] for r in gpu.op_reasons(op, GPU)}
    assert got == {R.UNSUPPORTED_DTYPE, R.RANK_TOO_HIGH}


def test_custom_ops_only_the_known_gpu_ones() -> None:
    known = OpInfo(0, "CUSTOM:Convolution2DTransposeBias", 1, (_t(0),), (_t(1),), {})
    other = OpInfo(0, "CUSTOM:FlexCumprod", 1, (_t(0),), (_t(1),), {})
    assert gpu.op_reasons(known, GPU) == []
    assert gpu.op_reasons(other, GPU)[0]["code"] == R.OP_NOT_SUPPORTED
