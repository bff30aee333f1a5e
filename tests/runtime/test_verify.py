"""edgeopt_runtime.verify: valid models pass, hand-made corruptions give one clear ModelLoadError.

Corruptions are made by editing the unpacked flatbuffer (``ModelT``) and repacking it, so each
test changes exactly one fact and names the message it expects.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import edgeopt_runtime as rt
import flatbuffers
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema
from edgeopt_runtime import verify
from edgeopt_runtime.errors import ModelLoadError

from . import conftest_verify

base_models = conftest_verify.base_models  # the session fixture, shared with test_fuzz
valid_zoo = conftest_verify.valid_zoo

TFLITE_BASES = ("float_conv.tflite", "int8_conv.tflite", "float_mixed.tflite", "int8_mixed.tflite")
ONNX_BASES = ("float_conv.onnx", "int8_conv.onnx", "helper.onnx")
OPS = {v: k for k, v in vars(schema.BuiltinOperator).items() if isinstance(v, int)}
CODES = {k: v for v, k in OPS.items()}


def _edit(data: bytes, fn: Callable[[schema.ModelT], object]) -> bytes:
    """Unpack the model, let ``fn`` change it, repack with the TFL3 identifier."""
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    fn(model)
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _op(m: schema.ModelT, name: str) -> schema.OperatorT:
    """The first operator of subgraph 0 with builtin ``name``."""
    for op in m.subgraphs[0].operators:
        code = m.operatorCodes[op.opcodeIndex]
        if max(code.builtinCode, code.deprecatedBuiltinCode) == CODES[name]:
            return op
    raise LookupError(name)


def _in(m: schema.ModelT, op_name: str, k: int) -> schema.TensorT:
    """Input ``k`` of the first ``op_name`` operator (tensor names depend on Keras counters)."""
    return m.subgraphs[0].tensors[_op(m, op_name).inputs[k]]


def _out(m: schema.ModelT, op_name: str) -> schema.TensorT:
    return m.subgraphs[0].tensors[_op(m, op_name).outputs[0]]


def _output(m: schema.ModelT) -> schema.TensorT:
    return m.subgraphs[0].tensors[m.subgraphs[0].outputs[0]]


def _reject(data: bytes, pattern: str) -> str:
    with pytest.raises(ModelLoadError, match=pattern) as info:
        verify.check_tflite(data, "m.tflite")
    msg = str(info.value)
    assert msg.startswith("m.tflite: corrupt TFLite model: ") and "\n" not in msg
    return msg


# -- valid models --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", TFLITE_BASES)
def test_valid_tflite_models_pass_and_repack_unchanged_passes(
    base_models: dict[str, Path], name: str
) -> None:
    data = base_models[name].read_bytes()
    verify.check_tflite(data, name)
    verify.check_tflite(memoryview(data), name)
    verify.check_tflite(bytearray(data), name)
    verify.check_tflite(_edit(data, lambda m: None), name)  # the edit helper itself is sound
    assert verify.sniff_format(data) == "tflite"
    assert verify.sniff_format(base_models[name]) == "tflite"


def test_valid_models_of_many_kinds_pass_and_run(valid_zoo: dict[str, Path]) -> None:
    """float16 weights, dynamic range, int8, 16x8, attention, RNN: no false alarms."""
    assert len(valid_zoo) >= 7
    for name, path in valid_zoo.items():
        verify.check_tflite(path.read_bytes(), name)
        model = rt.load(path)
        feeds = {s.name: np.zeros([d or 1 for d in s.shape], s.dtype) for s in model.inputs}
        assert all(np.all(np.isfinite(v)) for v in model.run(feeds).values()), name


@pytest.mark.parametrize("name", ONNX_BASES)
def test_valid_onnx_models_pass(base_models: dict[str, Path], name: str) -> None:
    data = base_models[name].read_bytes()
    verify.check_onnx_header(data, name)
    assert verify.sniff_format(data) == "onnx"
    assert verify.sniff_format(str(base_models[name])) == "onnx"


def test_sniff_rejects_what_is_neither() -> None:
    assert verify.sniff_format(b"") is None
    assert verify.sniff_format(b"hello world, not a model at all") is None
    assert verify.sniff_format(np.random.default_rng(0).bytes(4096)) is None
    assert verify.sniff_format("/nonexistent/file.tflite") is None


# -- structural corruption -----------------------------------------------------------------------
def test_empty_and_tiny_files(base_models: dict[str, Path]) -> None:
    _reject(b"", "only 0 bytes")
    _reject(b"\x1c\x00\x00\x00TFL", "only 7 bytes")


def test_bad_identifier(base_models: dict[str, Path]) -> None:
    data = bytearray(base_models["float_conv.tflite"].read_bytes())
    data[4:8] = b"XYZ3"
    _reject(bytes(data), r"file identifier is b'XYZ3', expected b'TFL3'")


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.9, 0.99])
def test_truncated_file(base_models: dict[str, Path], keep: float) -> None:
    data = base_models["int8_conv.tflite"].read_bytes()
    _reject(data[: int(len(data) * keep)], r"outside the file|past the end")


def test_root_offset_out_of_range(base_models: dict[str, Path]) -> None:
    data = bytearray(base_models["float_conv.tflite"].read_bytes())
    data[0:4] = (len(data) + 64).to_bytes(4, "little")
    _reject(bytes(data), r"model table points outside the file \(byte \d+, file is \d+ bytes\)")


def test_schema_version(base_models: dict[str, Path]) -> None:
    data = _edit(base_models["float_conv.tflite"].read_bytes(), lambda m: setattr(m, "version", 2))
    _reject(data, "schema version 2, expected 3")


def test_external_buffer_past_end(base_models: dict[str, Path]) -> None:
    def edit(m: schema.ModelT) -> None:
        b = m.buffers[_in(m, "CONV_2D", 1).buffer]
        b.data, b.offset, b.size = None, 1 << 20, 1024

    _reject(_edit(base_models["float_conv.tflite"].read_bytes(), edit), "lies past the end")


# -- tensors -------------------------------------------------------------------------------------
CORRUPTIONS: list[tuple[str, str, Callable[[schema.ModelT], object], str]] = [
    (
        "op input index out of range",
        "float_conv.tflite",
        lambda m: _op(m, "ADD").inputs.__setitem__(1, 999),
        r"operator 2 \(ADD\) input 1 is tensor 999; the subgraph has \d+",
    ),
    (
        "op output index negative",
        "float_conv.tflite",
        lambda m: _op(m, "SOFTMAX").outputs.__setitem__(0, -7),
        r"\(SOFTMAX\) output 0 is tensor -7",
    ),
    (
        "subgraph input out of range",
        "float_conv.tflite",
        lambda m: setattr(m.subgraphs[0], "inputs", np.array([1234], np.int32)),
        r"subgraph 0 input 0 is tensor 1234",
    ),
    (
        "constant buffer one byte short",
        "float_conv.tflite",
        lambda m: setattr(
            m.buffers[_in(m, "FULLY_CONNECTED", 1).buffer],
            "data",
            m.buffers[_in(m, "FULLY_CONNECTED", 1).buffer].data[:-1],
        ),
        r"constant buffer holds 1279 bytes, shape \[10, 32\] float32 needs 1280",
    ),
    (
        "buffer index out of range",
        "float_conv.tflite",
        lambda m: setattr(_in(m, "FULLY_CONNECTED", 1), "buffer", 500),
        r"uses buffer 500; the model has \d+",
    ),
    (
        "unknown tensor type",
        "float_conv.tflite",
        lambda m: setattr(_in(m, "FULLY_CONNECTED", 1), "type", 77),
        r"has unknown type 77",
    ),
    (
        "negative dimension",
        "float_conv.tflite",
        lambda m: setattr(_in(m, "FULLY_CONNECTED", 1), "shape", np.array([-10, 32], np.int32)),
        r"negative dimension in shape \[-10, 32\]",
    ),
    (
        "too many elements",
        "float_conv.tflite",
        lambda m: setattr(_output(m), "shape", np.array([65536, 65536], np.int32)),
        r"has 4294967296 elements",
    ),
    (
        "per-channel scale count differs from channels",
        "int8_conv.tflite",
        lambda m: setattr(
            _in(m, "CONV_2D", 1).quantization,
            "scale",
            _in(m, "CONV_2D", 1).quantization.scale[:5],
        ),
        r"5 scales but 8 zero points",
    ),
    (
        "quantized dimension outside rank",
        "int8_conv.tflite",
        lambda m: setattr(_in(m, "CONV_2D", 1).quantization, "quantizedDimension", 9),
        r"quantized dimension 9 outside rank 4",
    ),
    (
        "zero activation scale (kernel abort)",
        "int8_conv.tflite",
        lambda m: setattr(_out(m, "ADD").quantization, "scale", np.array([0.0], np.float32)),
        r"tensor 11 \(.*\) has quantization scale 0, expected a positive normal float",
    ),
    (
        "NaN scale",
        "int8_conv.tflite",
        lambda m: setattr(_out(m, "ADD").quantization, "scale", np.array([np.nan], np.float32)),
        r"scales must be finite",
    ),
    (
        "zero point outside the int8 range",
        "int8_mixed.tflite",
        lambda m: setattr(
            _out(m, "TANH").quantization, "zeroPoint", np.array([-(2**31) - 1], np.int64)
        ),
        r"zero point -2147483649 outside the int8 range \[-128, 127\]",
    ),
    (
        "int8 activation without quantization in a quantized op",
        "int8_conv.tflite",
        lambda m: setattr(_out(m, "ADD"), "quantization", None),
        r"\(ADD\): tensor 11 is int8 without quantization parameters",
    ),
    (
        "per-channel tensor where the kernel reads one scale",
        "int8_conv.tflite",
        lambda m: _op(m, "ADD").inputs.__setitem__(0, _op(m, "CONV_2D").inputs[1]),
        r"\(ADD\): tensor \d+ has per-channel scales where the kernel reads one scale",
    ),
    (
        "op mixing int8 and float32",
        "int8_mixed.tflite",
        lambda m: setattr(m.subgraphs[0].tensors[_op(m, "LOGISTIC").outputs[0]], "type", 0),
        r"\(LOGISTIC\) mixes tensor types \(int8, float32\)",
    ),
    (
        "depthwise conv without bias (LiteRT segfaults)",
        "float_conv.tflite",
        lambda m: setattr(
            _op(m, "DEPTHWISE_CONV_2D"), "inputs", _op(m, "DEPTHWISE_CONV_2D").inputs[:2]
        ),
        r"\(DEPTHWISE_CONV_2D\) has 2 inputs, expected 3",
    ),
    (
        "pool padding that is neither SAME nor VALID",
        "float_conv.tflite",
        lambda m: setattr(_op(m, "MAX_POOL_2D").builtinOptions, "padding", 5),
        r"\(MAX_POOL_2D\) has padding 5, expected 0 \(SAME\) or 1 \(VALID\)",
    ),
    (
        "pool window larger than its input (empty output)",
        "float_conv.tflite",
        lambda m: setattr(_op(m, "AVERAGE_POOL_2D").builtinOptions, "filterWidth", 64),
        r"\(AVERAGE_POOL_2D\): input size 4 with window 64, stride 2 and VALID padding gives "
        r"output size 0, the model declares 2",
    ),
    (
        "conv stride that disagrees with the declared output",
        "float_conv.tflite",
        lambda m: setattr(_op(m, "CONV_2D").builtinOptions, "strideH", 1),
        r"\(CONV_2D\): input size 16 with window 3, stride 1 and SAME padding gives output "
        r"size 16, the model declares 8",
    ),
    (
        "conv without its options",
        "float_conv.tflite",
        lambda m: setattr(_op(m, "CONV_2D"), "builtinOptionsType", 0),
        r"\(CONV_2D\) lacks its Conv2DOptions",
    ),
    (
        "tensor name not UTF-8",
        "float_conv.tflite",
        lambda m: setattr(_output(m), "name", b"bad\xf5name"),
        r"name is not valid UTF-8",
    ),
    (
        "IO tensor of a type numpy cannot hold",
        "float_conv.tflite",
        lambda m: setattr(m.subgraphs[0].tensors[m.subgraphs[0].inputs[0]], "type", 17),
        r"subgraph 0 input 0 has type int4, which cannot be passed",
    ),
    # -- operators -------------------------------------------------------------------------------
    (
        "opcode index out of range",
        "float_conv.tflite",
        lambda m: setattr(_op(m, "SOFTMAX"), "opcodeIndex", 40),
        r"uses operator code 40; the model has \d+",
    ),
    (
        "unknown builtin code",
        "float_conv.tflite",
        lambda m: setattr(m.operatorCodes[0], "builtinCode", 4000),
        r"operator code 0 has unknown builtin code 4000",
    ),
    (
        "custom op without a name",
        "float_conv.tflite",
        lambda m: setattr(m.operatorCodes[0], "builtinCode", 32),
        r"is a custom op without a custom code",
    ),
    (
        "missing input (XNNPACK reads it without checking)",
        "float_mixed.tflite",
        lambda m: setattr(_op(m, "STRIDED_SLICE"), "inputs", _op(m, "STRIDED_SLICE").inputs[:3]),
        r"\(STRIDED_SLICE\) has 3 inputs, expected 4",
    ),
    (
        "no outputs",
        "float_conv.tflite",
        lambda m: setattr(_op(m, "SOFTMAX"), "outputs", np.array([], np.int32)),
        r"\(SOFTMAX\) has 0 outputs, expected 1",
    ),
    (
        "omitted input that is not optional",
        "float_conv.tflite",
        lambda m: _op(m, "ADD").inputs.__setitem__(0, -1),
        r"\(ADD\) input 0 is omitted \(-1\) but is not optional",
    ),
    (
        "output written into a constant",
        "float_conv.tflite",
        lambda m: _op(m, "SOFTMAX").outputs.__setitem__(0, _op(m, "FULLY_CONNECTED").inputs[1]),
        r"\(SOFTMAX\) output 0 \(tensor \d+\) is a constant",
    ),
    (
        "input read before it is written",
        "float_conv.tflite",
        lambda m: setattr(_in(m, "FULLY_CONNECTED", 1), "buffer", 0),
        r"\(FULLY_CONNECTED\) input 1 \(tensor \d+\) is read before it is written",
    ),
    (
        "unknown builtin options type",
        "float_conv.tflite",
        lambda m: setattr(_op(m, "SOFTMAX"), "builtinOptionsType", 200),
        r"unknown options type 200",
    ),
    (
        "int8 ADD whose output scale makes the kernel abort",
        "int8_conv.tflite",
        lambda m: setattr(_out(m, "ADD").quantization, "scale", np.array([1e-9], np.float32)),
        r"\(ADD\): output scale 1e-09 is too small for input scales",
    ),
    (
        "one per-channel filter scale XNNPACK cannot requantize",
        "int8_conv.tflite",
        lambda m: _in(m, "FULLY_CONNECTED", 1).quantization.scale.__setitem__(7, 2e33),
        r"\(FULLY_CONNECTED\): requantization scale .* channel 7\) is outside \[2\^-32, 256\)",
    ),
]


@pytest.mark.parametrize(
    "base,edit,pattern", [c[1:] for c in CORRUPTIONS], ids=[c[0] for c in CORRUPTIONS]
)
def test_corruption_is_named(
    base_models: dict[str, Path], base: str, edit: Callable, pattern: str
) -> None:
    data = base_models[base].read_bytes()
    _reject(_edit(data, edit), pattern)


ZOO_CORRUPTIONS: list[tuple[str, str, Callable[[schema.ModelT], object], str]] = [
    (
        "split count that differs from its outputs (XNNPACK segfaults)",
        "misc_int8",
        lambda m: setattr(_op(m, "SPLIT").builtinOptions, "numSplits", 3),
        r"\(SPLIT\): num_splits is 3 but the operator has 2 outputs",
    ),
    (
        "int8 SQUARED_DIFFERENCE whose output scale makes the kernel abort",
        "transformer_int8",
        lambda m: setattr(
            m.subgraphs[0].tensors[_op(m, "SQUARED_DIFFERENCE").outputs[0]].quantization,
            "scale",
            np.array([1e-12], np.float32),
        ),
        r"\(SQUARED_DIFFERENCE\): output scale 1e-12 is too small",
    ),
    (
        "float16 weights dequantized into a smaller declared shape (heap overflow)",
        "misc_fp16",
        lambda m: setattr(
            m.subgraphs[0].tensors[_op(m, "DEQUANTIZE").outputs[0]],
            "shape",
            np.array([1, 1, 1, 1], np.int32),
        ),
        r"\(DEQUANTIZE\) output shape \[1, 1, 1, 1\] differs from its input's",
    ),
    (
        "QUANTIZE turned into SOFTMAX: float softmax into an int8 tensor (heap overrun)",
        "misc_int8",
        lambda m: [setattr(c, "builtinCode", CODES["SOFTMAX"]) or setattr(
            c, "deprecatedBuiltinCode", CODES["SOFTMAX"]) for c in m.operatorCodes
            if max(c.builtinCode, c.deprecatedBuiltinCode) == CODES["QUANTIZE"]],
        r"\(SOFTMAX\) writes int8 from a float32 input; its kernel writes float32",
    ),
    (
        "a WHILE body that passes its counter through: the loop never ends (hang)",
        "rnn_dynamic",
        lambda m: _loop_forever(m),
        r"\(WHILE\) never ends once entered: its condition \(subgraph \d+\) reads only loop "
        r"variables",
    ),
]


def _loop_forever(m: schema.ModelT) -> None:
    """Make the first WHILE's body return its inputs unchanged (the state never moves)."""
    op = _op(m, "WHILE")
    body = m.subgraphs[op.builtinOptions.bodySubgraphIndex]
    body.outputs = np.array(body.inputs, np.int32)


@pytest.mark.parametrize(
    "base,edit,pattern", [c[1:] for c in ZOO_CORRUPTIONS], ids=[c[0] for c in ZOO_CORRUPTIONS]
)
def test_corruption_in_richer_models_is_named(
    valid_zoo: dict[str, Path], base: str, edit: Callable, pattern: str
) -> None:
    _reject(_edit(valid_zoo[base].read_bytes(), edit), pattern)


# -- control flow --------------------------------------------------------------------------------
def _add_while(m: schema.ModelT, cond: int, body: int) -> None:
    """Append a WHILE op (looping over the model output) calling the given subgraphs."""
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = CODES["WHILE"]
    code.version = 1
    m.operatorCodes.append(code)
    sg = m.subgraphs[0]
    op = schema.OperatorT()
    op.opcodeIndex = len(m.operatorCodes) - 1
    op.inputs = np.array([sg.outputs[0]], np.int32)
    new = schema.TensorT()
    new.shape, new.type, new.buffer, new.name = _out_shape(sg), 0, 0, b"while_out"
    sg.tensors.append(new)
    op.outputs = np.array([len(sg.tensors) - 1], np.int32)
    op.builtinOptionsType = schema.BuiltinOptions.WhileOptions
    op.builtinOptions = schema.WhileOptionsT()
    op.builtinOptions.condSubgraphIndex, op.builtinOptions.bodySubgraphIndex = cond, body
    sg.operators.append(op)


def _out_shape(sg: schema.SubGraphT) -> np.ndarray:
    return np.array(sg.tensors[sg.outputs[0]].shape, np.int32)


def test_control_flow_subgraph_index_out_of_range(base_models: dict[str, Path]) -> None:
    data = _edit(base_models["float_conv.tflite"].read_bytes(), lambda m: _add_while(m, 0, 5))
    _reject(data, r"\(WHILE\) options \(WhileOptions\) calls subgraph 5; the model has 1")


def test_control_flow_calling_itself_is_a_cycle(base_models: dict[str, Path]) -> None:
    data = _edit(base_models["float_conv.tflite"].read_bytes(), lambda m: _add_while(m, 0, 0))
    _reject(data, r"call subgraphs in a cycle \(0 -> 0\)")


# -- ONNX ----------------------------------------------------------------------------------------
def test_onnx_header_errors(base_models: dict[str, Path]) -> None:
    data = base_models["float_conv.onnx"].read_bytes()
    with pytest.raises(ModelLoadError, match="file is empty"):
        verify.check_onnx_header(b"", "m.onnx")
    with pytest.raises(ModelLoadError, match="do not parse as a protobuf ModelProto"):
        verify.check_onnx_header(data[: len(data) // 2], "m.onnx")
    with pytest.raises(ModelLoadError, match="do not parse"):
        verify.check_onnx_header(b"\xff" * 64, "m.onnx")
    with pytest.raises(ModelLoadError, match="without a graph"):
        verify.check_onnx_header(b"\x08\x08", "m.onnx")  # only ir_version = 8
    tfl = base_models["float_conv.tflite"].read_bytes()
    with pytest.raises(ModelLoadError, match="really a TFLite file"):
        verify.check_onnx_header(tfl, "m.onnx")


# -- through the public loader -------------------------------------------------------------------
def test_load_names_a_mislabelled_file(base_models: dict[str, Path], tmp_path: Path) -> None:
    fake_tflite = tmp_path / "model.tflite"
    fake_tflite.write_bytes(base_models["float_conv.onnx"].read_bytes())
    with pytest.raises(ModelLoadError, match=r"model\.tflite.*really a onnx file"):
        rt.load(fake_tflite)
    fake_onnx = tmp_path / "model.onnx"
    fake_onnx.write_bytes(base_models["float_conv.tflite"].read_bytes())
    with pytest.raises(ModelLoadError, match=r"model\.onnx.*really a tflite file"):
        rt.load(fake_onnx)


def test_load_rejects_corrupt_tflite_before_the_interpreter(
    base_models: dict[str, Path], tmp_path: Path
) -> None:
    path = tmp_path / "broken.tflite"
    path.write_bytes(
        _edit(
            base_models["float_mixed.tflite"].read_bytes(),
            lambda m: setattr(
                _op(m, "STRIDED_SLICE"), "inputs", _op(m, "STRIDED_SLICE").inputs[:3]
            ),
        )
    )
    with pytest.raises(ModelLoadError, match=r"broken\.tflite: corrupt TFLite model: .*3 inputs"):
        rt.load(path)
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty"):
        rt.load(empty)


# -- isolated probe ------------------------------------------------------------------------------
def test_probe_passes_a_valid_model(base_models: dict[str, Path]) -> None:
    verify.probe_in_subprocess(base_models["int8_mixed.tflite"], timeout=120)


def test_probe_turns_a_crash_into_model_load_error(
    base_models: dict[str, Path], tmp_path: Path
) -> None:
    # The structural checks reject this file; the probe must stop it on its own: LiteRT's ADD
    # kernel aborts (TFLITE_CHECK in QuantizeMultiplierSmallerThanOneExp) on a zero scale.
    path = tmp_path / "abort.tflite"
    path.write_bytes(
        _edit(
            base_models["int8_conv.tflite"].read_bytes(),
            lambda m: setattr(_out(m, "ADD").quantization, "scale", np.array([0.0], np.float32)),
        )
    )
    crashed = r"crashed the TFLite interpreter \(signal 6, SIGABRT\)"
    with pytest.raises(ModelLoadError, match=crashed):
        verify.probe_in_subprocess(path, timeout=120)


def test_probe_reports_a_refused_model(tmp_path: Path) -> None:
    path = tmp_path / "junk.tflite"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="refused the model in an isolated probe"):
        verify.probe_in_subprocess(path, timeout=120)


# -- the embedded schema tables match the installed LiteRT schema --------------------------------
def test_generated_schema_tables_match_the_installed_schema() -> None:
    """scripts/gen_tflite_schema_tables.py --check: the checked-in tables are up to date."""
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, str(root / "scripts/gen_tflite_schema_tables.py"), "--check"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert max(OPS) == verify.MAX_BUILTIN_CODE
    assert {v for k, v in vars(schema.TensorType).items() if isinstance(v, int)} == set(
        verify.TENSOR_TYPES
    )


def test_generated_option_fields_decode_like_the_schema_module(
    base_models: dict[str, Path], valid_zoo: dict[str, Path]
) -> None:
    """Every builtin-options table of the test models decodes to the values the flatc-generated
    ``*OptionsT`` classes give (scalars, bools, floats, vectors and their defaults)."""
    from edgeopt_runtime.verify import flatbuffer as fb
    from edgeopt_runtime.verify.schema_tables import OPTIONS

    seen = 0
    for path in [*base_models.values(), *valid_zoo.values()]:
        if path.suffix != ".tflite":
            continue
        data = path.read_bytes()
        model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
        r = fb.Reader(memoryview(data))
        root = fb.Table(r, r.deref(0, "root"), "model")
        for sg, sgt in zip(root.tables(2, "subgraph"), model.subgraphs, strict=True):
            for op, opt in zip(sg.tables(3, "op"), sgt.operators, strict=True):
                kind = op.scalar(3, fb.U8)
                table = op.table(4, "options")
                if not kind or table is None:
                    continue
                got = fb.read_fields(table, OPTIONS[kind][1])
                want = {
                    re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", k).lower(): v
                    for k, v in vars(opt.builtinOptions).items()
                    if not isinstance(v, bytes)
                }
                for key, value in got.items():
                    expect = want[key]
                    expect = expect.tolist() if hasattr(expect, "tolist") else expect
                    assert value == expect, (path.name, OPTIONS[kind][0], key, value, expect)
                seen += 1
    assert seen > 50


def test_op_rule_tables_name_real_ops() -> None:
    from edgeopt_runtime.verify import op_rules

    with pytest.raises(KeyError):
        op_rules.codes("CONV_2D NOT_AN_OP")
    assert op_rules.op("SOFTMAX") == CODES["SOFTMAX"]
    assert set(op_rules.ARITY) <= set(OPS)
