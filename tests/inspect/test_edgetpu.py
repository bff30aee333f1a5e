"""Edge TPU pre-flight: per-op rules, the one-subgraph partition, parameter memory, and the
``edgetpu_compiler`` integration against a fake compiler that prints the real tool's format."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from edgeopt.inspect import edgetpu, preflight
from edgeopt.inspect import report as R
from edgeopt.inspect.partition import partition
from edgeopt.inspect.tflite_graph import OpInfo, TensorInfo, read_tflite
from edgeopt.targets import load_target

from . import _models

EDGETPU = load_target("edgetpu")


def codes(entry: dict) -> set[str]:
    return {r["code"] for r in entry["reasons"]}


# ---- models built with TFLiteConverter ------------------------------------------------------


def test_fully_supported_model_maps_entirely() -> None:
    path = _models.supported_int8()
    rep = preflight(path, EDGETPU)
    assert rep["schema"] == "edgeopt.inspect/1" and rep["target"] == "edgetpu"
    assert all(e["runs_on"] == "edgetpu" and e["reasons"] == [] for e in rep["ops"])
    s = rep["summary"]
    assert s["fully_delegated"] and s["cpu"] == 0 and s["first_blocking_op"] is None
    part = rep["partition"]
    assert part["subgraphs"] == 1 and part["cpu_ops"] == [] and part["first_unmapped_op"] is None
    # parameter memory = every constant tensor of this model (all read by TPU ops)
    graph = read_tflite(path)
    assert part["parameter_bytes"] == sum(t.constant_bytes for t in graph.tensors)
    assert part["fits_on_chip"]


def test_unsupported_op_in_the_middle_breaks_the_graph_exactly_there() -> None:
    rep = preflight(_models.leaky_middle_int8(), EDGETPU)
    ops = rep["ops"]
    k = next(e["index"] for e in ops if e["op"] == "LEAKY_RELU")
    assert k >= 2  # QUANTIZE, CONV_2D come first
    assert all(e["runs_on"] == "edgetpu" for e in ops[:k])
    assert codes(ops[k]) == {R.OP_NOT_SUPPORTED}
    assert "PRELU" in ops[k]["suggestion"] and "splits the graph" in ops[k]["suggestion"]
    after = ops[k + 1 :]
    assert after and all(not e["delegated"] for e in after)
    # everything after it is supported on its own: the only reason is the partition
    for e in after:
        assert codes(e) == {R.AFTER_UNMAPPED}, e
        assert f"op #{k} LEAKY_RELU" in e["reasons"][0]["message"]
    part = rep["partition"]
    assert part["first_unmapped_op"]["index"] == k
    assert part["tpu_ops"] == list(range(k))
    assert part["subgraphs"] == 1
    assert part["subgraphs_if_multiple_allowed"] == 2  # `edgetpu_compiler -a` would resume
    assert rep["summary"]["first_blocking_op"]["op"] == "LEAKY_RELU"


def test_dynamic_batch_is_reported_with_static_batch_advice() -> None:
    rep = preflight(_models.dynamic_batch_int8(), EDGETPU)
    # edgetpu_compiler 16 refuses a model with dynamic-size tensors as a whole
    assert rep["summary"]["delegated"] == 0 and rep["partition"]["subgraphs"] == 0
    assert any("static-sized tensors" in n for n in rep["notes"])
    conv = next(e for e in rep["ops"] if e["op"] == "CONV_2D")
    assert not conv["delegated"] and R.DYNAMIC_SHAPE in codes(conv)
    assert "static batch size of 1" in conv["suggestion"]
    # a -1 dim is unknown, not "larger than 1": no non-unit-dims reason on top
    assert R.TOO_MANY_NON_UNIT_DIMS not in codes(conv)


def test_batch_of_two_has_too_many_non_unit_dims() -> None:
    rep = preflight(_models.batch2_int8(), EDGETPU)
    conv = next(e for e in rep["ops"] if e["op"] == "CONV_2D")
    assert codes(conv) == {R.TOO_MANY_NON_UNIT_DIMS}
    assert "[2, 8, 8, 3]" in conv["reasons"][0]["message"]
    assert "3 innermost" in conv["suggestion"]
    mean = next(e for e in rep["ops"] if e["op"] == "MEAN")
    assert codes(mean) == {R.TOO_MANY_NON_UNIT_DIMS}
    fc = next(e for e in rep["ops"] if e["op"] == "FULLY_CONNECTED")  # output [2, 5]
    assert codes(fc) == {R.UNSUPPORTED_PARAM} and "not 1-D" in fc["reasons"][0]["message"]


def test_float_model_is_not_int8_and_the_compiler_would_refuse_it() -> None:
    rep = preflight(_models.float_model(), EDGETPU)
    assert all(R.NOT_INT8 in codes(e) for e in rep["ops"])
    assert rep["partition"]["subgraphs"] == 0
    assert any("Model not quantized" in n for n in rep["notes"])


# ---- partition semantics on hand-built graphs ------------------------------------------------


def _t(i: int, dtype: str = "int8", shape: tuple[int, ...] = (1, 4, 4, 8), **kw) -> TensorInfo:
    return TensorInfo(
        i,
        f"t{i}",
        dtype,
        shape,
        kw.pop("sig", shape),
        kw.pop("q", None),
        kw.pop("const", 0),
        values=kw.pop("values", None),
    )


def _op(i: int, name: str, ins: list[TensorInfo], outs: list[TensorInfo], **opt) -> OpInfo:
    return OpInfo(i, name, 1, tuple(ins), tuple(outs), opt)


def test_parallel_branch_not_depending_on_the_cpu_op_stays_on_the_tpu() -> None:
    """x -> CONV(0) -> LEAKY(1) -> CONV(2) ; CONV(0) -> CONV(3) ; CONCAT(2, 3) -> ADD(4).

    CONV 3 comes after the CPU op in execution order but does not depend on it: TFLite's
    partitioner puts it in the first TPU subset. CONV 2 and the concat depend on LEAKY.
    """
    t = [_t(i) for i in range(7)]
    ops = [
        _op(0, "CONV_2D", [t[0]], [t[1]]),
        _op(1, "LEAKY_RELU", [t[1]], [t[2]]),
        _op(2, "CONV_2D", [t[2]], [t[3]]),
        _op(3, "CONV_2D", [t[1]], [t[4]]),
        _op(4, "CONCATENATION", [t[3], t[4]], [t[5]], fused_activation_function="NONE"),
    ]
    from edgeopt.inspect.tflite_graph import TFLiteGraph

    graph = TFLiteGraph("mem", tuple(ops), tuple(t), (t[0],), (t[5],), 1, 0)
    rep = edgetpu.analyze(graph, EDGETPU)
    runs = [e["runs_on"] for e in rep["ops"]]
    assert runs == ["edgetpu", "cpu", "cpu", "edgetpu", "cpu"]
    assert rep["partition"]["first_unmapped_op"]["index"] == 1
    assert codes(rep["ops"][2]) == {R.AFTER_UNMAPPED}


def test_cpu_ops_at_the_edges_do_not_split_the_graph() -> None:
    """float QUANTIZE at the input and DEQUANTIZE at the output run on the CPU, rest on TPU."""
    f_in, q_in = _t(0, "float32"), _t(1)
    mid, q_out, f_out = _t(2), _t(3), _t(4, "float32")
    ops = [
        _op(0, "QUANTIZE", [f_in], [q_in]),
        _op(1, "CONV_2D", [q_in], [mid]),
        _op(2, "CONV_2D", [mid], [q_out]),
        _op(3, "DEQUANTIZE", [q_out], [f_out]),
    ]
    from edgeopt.inspect.tflite_graph import TFLiteGraph

    graph = TFLiteGraph("mem", tuple(ops), (f_in, q_in, mid, q_out, f_out), (f_in,), (f_out,), 1, 0)
    rep = edgetpu.analyze(graph, EDGETPU)
    assert [e["runs_on"] for e in rep["ops"]] == ["cpu", "edgetpu", "edgetpu", "cpu"]
    assert rep["partition"]["first_unmapped_op"] is None
    assert rep["partition"]["cpu_ops_not_splitting"] == [0, 3]
    assert "io" in rep["ops"][0]["suggestion"].lower()


def test_partition_matches_tflite_epochs() -> None:
    t = [_t(i) for i in range(5)]
    ops = [_op(i, "X", [t[i]], [t[i + 1]]) for i in range(4)]
    subsets = partition(ops, [True, False, True, True])
    assert [(s.delegated, s.ops) for s in subsets] == [(True, (0,)), (False, (1,)), (True, (2, 3))]


@pytest.mark.parametrize(
    ("op", "needle"),
    [
        (_op(0, "AVERAGE_POOL_2D", [_t(0)], [_t(1)], fused_activation_function="RELU"), "fused"),
        (_op(0, "CONV_2D", [_t(0)], [_t(1)], dilation_h_factor=2, dilation_w_factor=1), "dilation"),
        (
            _op(
                0,
                "STRIDED_SLICE",
                [
                    _t(0),
                    _t(1, "int32", (4,), const=16),
                    _t(2, "int32", (4,), const=16),
                    _t(3, "int32", (4,), const=16, values=(1, 2, 2, 1)),
                ],
                [_t(4)],
            ),
            "strides",
        ),
        (
            _op(
                0,
                "MEAN",
                [_t(0, shape=(1, 4, 4, 6)), _t(1, "int32", (1,), const=4, values=(3,))],
                [_t(2, shape=(1, 4, 4))],
            ),
            "multiple of 4",
        ),
        (_op(0, "SOFTMAX", [_t(0, shape=(1, 4, 8))], [_t(1, shape=(1, 4, 8))]), "1-D"),
        (
            _op(
                0,
                "PAD",
                [_t(0), _t(1, "int32", (4, 2), const=32, values=(1, 1, 0, 0, 0, 0, 0, 0))],
                [_t(2, shape=(3, 4, 4, 8))],
            ),
            "batch",
        ),
    ],
)
def test_parameter_limits_from_coral_table(op: OpInfo, needle: str) -> None:
    reasons = edgetpu.op_reasons(op, EDGETPU)
    params = [r["message"] for r in reasons if r["code"] == R.UNSUPPORTED_PARAM]
    assert params and needle in params[0], reasons


def test_supported_op_list_drops_ops_coral_does_not_list() -> None:
    ops = set(EDGETPU.ops.supported)
    assert {"HARD_SWISH", "GATHER", "DEQUANTIZE"}.isdisjoint(ops)
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE", "PRELU", "QUANTIZE"} <= ops


# ---- the compiler's log format ---------------------------------------------------------------

# Format of edgetpu_compiler 16 with -s (layout as printed in google-coral/edgetpu issues).
LOG_PARTIAL = """Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 412 ms.

Input model: {model}
Input size: 12.41KiB
Output model: {out}/{stem}_edgetpu.tflite
Output size: 64.13KiB
On-chip memory used for caching model parameters: 3.50KiB
On-chip memory remaining for caching model parameters: 7.98MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 8
Operation log: {out}/{stem}_edgetpu.log

Model successfully compiled but not all operations are supported by the Edge TPU. A percentage \
of the model will instead run on the CPU, which is slower. If possible, consider updating your \
model to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
Number of operations that will run on Edge TPU: 2
Number of operations that will run on CPU: 6

Operator                       Count      Status

QUANTIZE                       1          Mapped to Edge TPU
QUANTIZE                       1          More than one subgraph is not supported
CONV_2D                        1          Mapped to Edge TPU
CONV_2D                        1          More than one subgraph is not supported
LEAKY_RELU                     1          Operation not supported
MEAN                           1          More than one subgraph is not supported
FULLY_CONNECTED                1          More than one subgraph is not supported
SOFTMAX                        1          More than one subgraph is not supported
Compilation child process completed within timeout period.
Compilation succeeded!
"""

LOG_FULL = """Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 250 ms.

Input model: {model}
Input size: 5.20KiB
Output model: {out}/{stem}_edgetpu.tflite
Output size: 40.02KiB
On-chip memory used for caching model parameters: 1.25MiB
On-chip memory remaining for caching model parameters: 6.61MiB
Off-chip memory used for streaming uncached model parameters: 512.00KiB
Number of Edge TPU subgraphs: 1
Total number of operations: 9
Operation log: {out}/{stem}_edgetpu.log

Operator                       Count      Status

QUANTIZE                       2          Mapped to Edge TPU
CONV_2D                        1          Mapped to Edge TPU
DEPTHWISE_CONV_2D              1          Mapped to Edge TPU
MAX_POOL_2D                    1          Mapped to Edge TPU
MEAN                           1          Mapped to Edge TPU
FULLY_CONNECTED                1          Mapped to Edge TPU
SOFTMAX                        1          Operation is otherwise supported, but not mapped due \
to some unspecified limitation
Compilation child process completed within timeout period.
Compilation succeeded!
"""

LOG_NOT_QUANTIZED = """Edge TPU Compiler version 16.0.384591198
Invalid model: {model}
Model not quantized
"""

LOG_INTERNAL = """Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.
ERROR: :344 no_integer_overflow_from_quantization was not true.
ERROR: Node number 1 (CONV_2D) failed to prepare.

Compilation failed: Model failed in Tflite interpreter. Please ensure model can be loaded/run \
in Tflite interpreter.
Compilation child process completed within timeout period.
Compilation failed!
"""


def test_parse_partial_mapping_log() -> None:
    p = edgetpu.parse_compiler_output(LOG_PARTIAL.format(model="m.tflite", out="o", stem="m"))
    assert p["compiled"] and p["error"] is None and p["version"] == "16.0.384591198"
    assert p["ops_tpu"] == 2 and p["ops_cpu"] == 6 and p["subgraphs"] == 1
    assert p["on_chip_bytes"] == int(3.5 * 1024) and p["off_chip_bytes"] == 0
    assert p["on_chip_remaining_bytes"] == int(round(7.98 * 2**20))
    assert p["output_model"] == "o/m_edgetpu.tflite"
    rows = {(r["op"], r["status"]): r for r in p["operators"]}
    assert rows[("LEAKY_RELU", "Operation not supported")]["mapped"] is False
    assert rows[("CONV_2D", "Mapped to Edge TPU")]["count"] == 1
    assert len(p["operators"]) == 8


def test_parse_fully_mapped_log_counts_from_the_table() -> None:
    p = edgetpu.parse_compiler_output(LOG_FULL.format(model="m.tflite", out="o", stem="m"))
    assert p["ops_tpu"] == 7 and p["ops_cpu"] == 1  # no "will run on" lines: from the table
    assert p["off_chip_bytes"] == 512 * 1024 and p["on_chip_bytes"] == int(1.25 * 2**20)


@pytest.mark.parametrize(
    ("log", "needle"),
    [
        (LOG_NOT_QUANTIZED, "Model not quantized"),
        (LOG_INTERNAL, "Compilation failed"),
        (
            "Edge TPU Compiler version 15.0.340273435\n\nInternal compiler error. Aborting! \n",
            "Internal compiler error",
        ),
    ],
)
def test_parse_failures(log: str, needle: str) -> None:
    p = edgetpu.parse_compiler_output(log.format(model="m.tflite"))
    assert not p["compiled"] and needle in p["error"]


# ---- a fake edgetpu_compiler on PATH ---------------------------------------------------------

FAKE = '''#!{python}
"""Fake edgetpu_compiler: prints the log in $FAKE_LOG and writes outputs like the real one."""
import os, shutil, sys
args = sys.argv[1:]
out = args[args.index("-o") + 1] if "-o" in args else "."
model = args[-1]
stem = os.path.splitext(os.path.basename(model))[0]
text = open(os.environ["FAKE_LOG"]).read().format(model=model, out=out, stem=stem)
print(text)
code = int(os.environ.get("FAKE_RC", "0"))
if code == 0:
    shutil.copy(model, os.path.join(out, stem + "_edgetpu.tflite"))
    open(os.path.join(out, stem + "_edgetpu.log"), "w").write(text)
sys.exit(code)
'''


@pytest.fixture
def fake_compiler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "edgetpu_compiler"
    exe.write_text(FAKE.format(python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")

    def use(log: str, rc: int = 0) -> None:
        f = tmp_path / "log.txt"
        f.write_text(log)
        monkeypatch.setenv("FAKE_LOG", str(f))
        monkeypatch.setenv("FAKE_RC", str(rc))

    return use


def test_compiler_missing_is_reported_plainly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    res = edgetpu.compile_if_available(_models.supported_int8(), tmp_path / "out")
    assert res["available"] is False and "not found on PATH" in res["reason"]


def test_fake_compiler_success_agrees_with_prediction(fake_compiler, tmp_path: Path) -> None:
    model = _models.leaky_middle_int8()
    fake_compiler(LOG_PARTIAL)
    pred = preflight(model, EDGETPU)
    out = tmp_path / "out"
    res = edgetpu.compile_if_available(model, out, prediction=pred)
    assert res["available"] and res["ok"] and res["returncode"] == 0
    assert res["edgetpu_model"] == str(out / f"{model.stem}_edgetpu.tflite")
    assert Path(res["edgetpu_model"]).is_file() and Path(res["log_file"]).is_file()
    assert res["command"][1:4] == ["-s", "-o", res["command"][3]]
    assert not [p for p in out.iterdir() if p.name.startswith(".edgetpu-")]  # temp dir removed
    assert res["ops_tpu"] == 2 and res["subgraphs"] == 1
    assert res["differences"] == []


def test_fake_compiler_disagreement_is_listed(fake_compiler, tmp_path: Path) -> None:
    model = _models.supported_int8()
    fake_compiler(LOG_FULL)
    pred = preflight(model, EDGETPU)
    res = edgetpu.compile_if_available(model, tmp_path / "out", prediction=pred)
    assert res["ok"]
    assert len(res["differences"]) == 1 and res["differences"][0].startswith("SOFTMAX")
    assert "predicted 1 on the TPU" in res["differences"][0]


def test_fake_compiler_failure_leaves_no_files(fake_compiler, tmp_path: Path) -> None:
    model = _models.float_model()
    fake_compiler(LOG_NOT_QUANTIZED, rc=1)
    pred = preflight(model, EDGETPU)
    out = tmp_path / "out"
    res = edgetpu.compile_if_available(model, out, prediction=pred)
    assert res["available"] and not res["ok"] and res["returncode"] == 1
    assert "Model not quantized" in res["error"]
    assert res["edgetpu_model"] is None and list(out.iterdir()) == []
    assert res["differences"][0].startswith("the compiler failed")


def test_fake_compiler_timeout(fake_compiler, tmp_path: Path, monkeypatch) -> None:
    fake_compiler(LOG_FULL)
    slow = Path(os.environ["FAKE_LOG"]).parent / "bin" / "edgetpu_compiler"
    slow.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(30)\n")
    res = edgetpu.compile_if_available(_models.supported_int8(), tmp_path / "out", timeout=1)
    assert not res["ok"] and "timed out" in res["error"]


def test_per_op_comparison_through_the_compiled_models_cpu_ops() -> None:
    pred = preflight(_models.leaky_middle_int8(), EDGETPU)
    conv0 = next(e for e in pred["ops"] if e["op"] == "CONV_2D")
    tail = [e for e in pred["ops"] if not e["delegated"]]
    # the compiler left the first conv on the CPU too, and mapped everything we put on the CPU
    # except the LEAKY_RELU
    leaky = next(e for e in tail if e["op"] == "LEAKY_RELU")
    cpu_ops = [
        {"op": "CONV_2D", "outputs": [t["name"] for t in conv0["outputs"]]},
        {"op": "LEAKY_RELU", "outputs": [t["name"] for t in leaky["outputs"]]},
    ]
    diffs = edgetpu._compare_cpu_ops({"cpu_ops_in_output": cpu_ops}, pred)
    assert f"op #{conv0['index']} CONV_2D: predicted on the TPU" in diffs[0]
    assert len(diffs) == 1 + len(tail) - 1


def test_one_dynamic_tensor_stops_the_whole_compile() -> None:
    """A -1 deep inside the graph: the compiler rejects the model, so nothing maps."""
    from edgeopt.inspect.tflite_graph import TFLiteGraph

    a, b = _t(0), _t(1)
    c = _t(2, shape=(1, 1, 16), sig=(1, -1, 16))
    ops = [_op(0, "CONV_2D", [a], [b]), _op(1, "RESHAPE", [b], [c])]
    graph = TFLiteGraph("mem", tuple(ops), (a, b, c), (a,), (c,), 1, 0)
    rep = edgetpu.analyze(graph, EDGETPU)
    conv = rep["ops"][0]
    assert not conv["delegated"] and codes(conv) == {R.DYNAMIC_SHAPE}
    assert "rejects the whole model" in conv["reasons"][0]["message"]


def test_parse_the_operation_log_file_format() -> None:
    """``*_edgetpu.log`` (what -s prints without the memory summary) parses the same way."""
    log = (
        "Edge TPU Compiler version 14.1.317412892\n"
        "Input: detector.tflite\n"
        "Output: detector_edgetpu.tflite\n\n"
        "Operator                       Count      Status\n\n"
        "CONCATENATION                  1          More than one subgraph is not supported\n"
        "MAX_POOL_2D                    6          Mapped to Edge TPU\n"
        "RESIZE_NEAREST_NEIGHBOR        1          Operation version not supported\n"
        "CONV_2D                        11         Mapped to Edge TPU\n"
    )
    p = edgetpu.parse_compiler_output(log)
    assert p["output_model"] == "detector_edgetpu.tflite"
    assert p["ops_tpu"] == 17 and p["ops_cpu"] == 2
    assert [r["status"] for r in p["operators"] if not r["mapped"]] == [
        "More than one subgraph is not supported",
        "Operation version not supported",
    ]
