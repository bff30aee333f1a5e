"""The pure-Python TFLite reader: ops in execution order, tensors, options, errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from edgeopt_runtime import verify
from edgeopt_runtime.errors import ModelLoadError

from edgeopt.inspect.tflite_graph import read_tflite

from . import _models


def test_ops_in_execution_order_with_tensors_and_options() -> None:
    g = read_tflite(_models.supported_int8())
    names = [op.name for op in g.ops]
    # uint8 IO: a QUANTIZE at each edge around the int8 body, in the order LiteRT runs them.
    assert names[0] == "QUANTIZE" and names[-1] == "QUANTIZE"
    assert names[1:3] == ["CONV_2D", "DEPTHWISE_CONV_2D"]
    assert "MAX_POOL_2D" in names and "SOFTMAX" in names
    conv = g.ops[1]
    assert conv.options["fused_activation_function"] == "RELU6"
    assert conv.options["stride_w"] == 1 and conv.options["dilation_h_factor"] == 1
    assert conv.options["padding"] == "SAME"
    x, w, b = conv.inputs
    assert x.dtype == "int8" and x.shape == (1, 8, 8, 3) and not x.is_constant
    assert w.dtype == "int8" and w.is_constant and w.constant_bytes == 8 * 3 * 3 * 3
    assert b.dtype == "int32" and b.constant_bytes == 8 * 4
    # per-channel weights: one scale per output channel, zero points all 0
    assert len(w.quantization["scale"]) == 8 and set(w.quantization["zero_point"]) == {0}
    assert g.inputs[0].dtype == "uint8" and g.outputs[0].dtype == "uint8"
    assert [op.index for op in g.ops] == list(range(len(g.ops)))


def test_matches_litert_interpreter_op_list() -> None:
    """Same op names and tensor wiring as LiteRT's own view of the file."""
    from ai_edge_litert.interpreter import Interpreter

    path = _models.leaky_middle_int8()
    g = read_tflite(path)
    it = Interpreter(model_path=str(path))  # no allocate_tensors: no delegate yet
    details = it._get_ops_details()
    assert [d["op_name"] for d in details] == [op.name for op in g.ops]
    for d, op in zip(details, g.ops, strict=True):
        assert [int(i) for i in d["outputs"]] == [t.index for t in op.outputs]


def test_small_integer_constants_are_read() -> None:
    g = read_tflite(_models.supported_int8())
    mean = next(op for op in g.ops if op.name == "MEAN")
    assert mean.inputs[1].values == (1, 2)  # global average pooling reduces H and W


def test_dynamic_batch_shows_in_shape_signature() -> None:
    g = read_tflite(_models.dynamic_batch_int8())
    x = g.inputs[0]
    assert x.shape_signature[0] == -1 and x.is_dynamic
    assert x.shape[0] == 1  # the stored shape has the placeholder 1


def test_to_dict_is_json_ready() -> None:
    import json

    g = read_tflite(_models.supported_int8())
    doc = json.loads(json.dumps([op.to_dict() for op in g.ops]))
    assert doc[1]["op"] == "CONV_2D" and doc[1]["inputs"][1]["constant_bytes"] == 216


def test_option_names_are_snake_case() -> None:
    g = read_tflite(_models.supported_int8())
    conv = next(op for op in g.ops if op.name == "CONV_2D")
    assert {"dilation_w_factor", "stride_h", "fused_activation_function"} <= set(conv.options)
    assert conv.options["padding"] in ("SAME", "VALID")  # enums by member name


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        read_tflite(tmp_path / "nope.tflite")


def test_not_a_flatbuffer(tmp_path: Path) -> None:
    p = tmp_path / "x.tflite"
    p.write_bytes(b"hello world, not a model")
    with pytest.raises(ModelLoadError, match="TFL3"):
        read_tflite(p)


def test_corrupt_files_raise_model_load_error_never_crash(tmp_path: Path) -> None:
    """Truncated / bit-flipped files: a one-line ModelLoadError naming the file, or a parse of a
    file the runtime's checks accept too; never another exception, never a silent acceptance."""
    data = bytearray(_models.supported_int8().read_bytes())
    rng = np.random.default_rng(0)
    outcomes = {"truncated": [], "flipped": []}
    for i in range(30):
        bad = bytearray(data)
        kind = "truncated" if i % 3 == 0 else "flipped"
        if kind == "truncated":
            bad = bad[: int(rng.integers(8, len(bad)))]
        else:
            for pos in rng.integers(8, len(bad), size=16):
                bad[int(pos)] = int(rng.integers(0, 256))
        p = tmp_path / f"bad{i}.tflite"
        p.write_bytes(bytes(bad))
        try:
            g = read_tflite(p)
        except ModelLoadError as exc:
            assert str(p) in str(exc) and "\n" not in str(exc)
            outcomes[kind].append("rejected")
            continue
        verify.check_tflite(bytes(bad), str(p))  # accepted here => accepted by the runtime
        assert g.ops and g.tensors
        outcomes[kind].append("parsed")
    assert outcomes["truncated"] == ["rejected"] * 10, outcomes  # data past the end: never parsed
    assert outcomes["flipped"].count("rejected") >= 5, outcomes  # the checks do reject


def test_reader_does_not_import_tensorflow() -> None:
    code = (
        "import sys; from edgeopt.inspect.tflite_graph import read_tflite; "
        f"read_tflite({str(_models.supported_int8())!r}); "
        "print('tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
