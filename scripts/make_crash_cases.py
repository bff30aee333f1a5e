"""Write the runtime's crash cases (issue #10) as small files, one per finding.

    python scripts/make_crash_cases.py OUT [--compile]

Each case is a model file, an artifact directory or an input file that once crashed, hung or
ran code in a process using ``edgeopt_runtime`` (or gave a traceback instead of one line).
``OUT/cases.json`` lists them: ``name``, ``path``, ``finding`` (what happened before), ``expect``
(a regex of the one-line refusal the runtime must give now) and ``crashes_raw`` (the bare engine
still dies on it: proof the case is real). ``tests/runtime/test_crash_cases.py`` runs every case.

Models are built from scratch (LiteRT's flatbuffer schema classes, ``onnx.helper``): no
TensorFlow, a few hundred bytes each. FIFOs, links to ``/dev/zero`` and links out of a folder are
created here, not checked in. ``--compile`` builds ``libevil.so`` with gcc: a shared library whose
constructor writes ``OUT/EVIL_RAN`` when anything loads it (the manifest cases must never do so).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST = "manifest.json"


# -- tiny models ---------------------------------------------------------------------------------
def _tflite(op_name: str, n: int, out_type: str = "INT8", twice: bool = False,
            pool_filter_h: int | None = None) -> bytes:  # fmt: skip
    """One-op TFLite model: float32 [1, n] -> ``op_name`` -> ``out_type`` [1, n].

    ``twice``: the operator appears twice, both writing the output tensor. ``pool_filter_h``:
    a MAX_POOL_2D over [1, n, n, 1] whose filter height is this (0: the schema default).
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    def tensor(name: str, ttype: int, buf: int, quant: bool) -> Any:
        t = s.TensorT()
        t.name, t.shape, t.type, t.buffer = name.encode(), np.array([1, n], np.int32), ttype, buf
        if quant:
            t.quantization = s.QuantizationParametersT()
            t.quantization.scale = np.array([1 / 256], np.float32)
            t.quantization.zeroPoint = np.array([-128], np.int64)
        return t

    m = s.ModelT()
    m.version = 3
    m.buffers = [s.BufferT(), s.BufferT(), s.BufferT()]
    code = s.OperatorCodeT()
    code.builtinCode = getattr(s.BuiltinOperator, op_name)
    code.deprecatedBuiltinCode, code.version = min(code.builtinCode, 127), 1
    m.operatorCodes = [code]
    out_t = getattr(s.TensorType, out_type)
    sg = s.SubGraphT()
    sg.tensors = [tensor("x", s.TensorType.FLOAT32, 1, False),
                  tensor("y", out_t, 2, out_t != s.TensorType.FLOAT32)]  # fmt: skip
    if pool_filter_h is not None:
        for t in sg.tensors:
            t.shape = np.array([1, n, n, 1], np.int32)
    sg.inputs, sg.outputs = np.array([0], np.int32), np.array([1], np.int32)
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, np.array([0], np.int32), np.array([1], np.int32)
    if op_name == "SOFTMAX":
        op.builtinOptionsType = s.BuiltinOptions.SoftmaxOptions
        op.builtinOptions = s.SoftmaxOptionsT()
        op.builtinOptions.beta = 1.0
    if pool_filter_h is not None:
        op.builtinOptionsType = s.BuiltinOptions.Pool2DOptions
        o = op.builtinOptions = s.Pool2DOptionsT()
        o.padding, o.strideW, o.strideH, o.filterWidth, o.filterHeight = 0, 1, 1, 2, pool_filter_h
    sg.operators = [op, op] if twice else [op]
    m.subgraphs = [sg]
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _onnx_qdq_softmax(scale2: np.ndarray, zp2: np.ndarray, external: bool = False) -> bytes:
    """x -> Q/DQ -> Softmax -> Q/DQ(scale2, zp2) -> y: ORT fuses it into QLinearSoftmax."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [
        numpy_helper.from_array(np.array(0.02, np.float32), "s1"),
        numpy_helper.from_array(np.array(0, np.int8), "z1"),
        numpy_helper.from_array(scale2, "s2"),
        numpy_helper.from_array(zp2, "z2"),
    ]
    if external:  # weights "kept" in a file outside the model (a path the model chooses)
        t = inits[0]
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        t.external_data.add(key="location", value="../../../../etc/passwd")
        t.external_data.add(key="length", value="4")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s1", "z1"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s1", "z1"], ["xd"]),
        helper.make_node("Softmax", ["xd"], ["p"], axis=1),
        helper.make_node("QuantizeLinear", ["p", "s2", "z2"], ["pq"]),
        helper.make_node("DequantizeLinear", ["pq", "s2", "z2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "crash_case",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


# -- artifact directories --------------------------------------------------------------------------
def _artifact(d: Path, model: bytes, name: str, runtime: dict[str, Any] | None = None,
              write_model: bool = True) -> dict[str, Any]:  # fmt: skip
    """A valid artifact folder around ``model`` (correct sha256); returns the manifest dict."""
    d.mkdir(parents=True, exist_ok=True)
    if write_model:
        (d / name).write_bytes(model)
    fmt = "onnx" if name.endswith(".onnx") else "tflite"
    doc = {
        "schema": "edgeopt.manifest/1",
        "target": {"name": "arm-cpu", "description": "crash case"},
        "runtime": {"threads": 1, "tflite_delegate": "xnnpack", "delegate_library": None,
                    "onnx_providers": ["CPUExecutionProvider"], **(runtime or {})},
        "models": [{"file": name, "format": fmt, "precision": "float32",
                    "sha256": hashlib.sha256(model).hexdigest(), "size_bytes": len(model),
                    "inputs": [], "outputs": []}],
    }  # fmt: skip
    (d / MANIFEST).write_text(json.dumps(doc), encoding="utf-8")
    return doc


def _manifest_case(out: Path, name: str, model: bytes, edit: Any) -> Path:
    """An artifact whose manifest is the valid one after ``edit(doc) -> str | bytes | dict``."""
    d = out / name
    doc = _artifact(d, model, "model.tflite")
    new = edit(doc)
    raw = new if isinstance(new, bytes) else (new if isinstance(new, str) else json.dumps(new))
    (d / MANIFEST).write_bytes(raw if isinstance(raw, bytes) else raw.encode("utf-8"))
    return d


# -- input data: the converter side's generators (one bomb writer for both) -----------------
sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_hostile_inputs import npz_bomb, npz_huge_header  # noqa: E402

# -- the evil library ------------------------------------------------------------------------------
EVIL_C = r"""
#include <stdio.h>
__attribute__((constructor)) static void evil(void) {
    FILE *f = fopen("%s", "w");
    if (f) { fputs("native code from an artifact ran\n", f); fclose(f); }
}
"""


def evil_library(out: Path, compile_it: bool) -> Path | None:
    src = out / "libevil.c"
    src.write_text(EVIL_C % (out / "EVIL_RAN"), encoding="utf-8")
    if not compile_it or shutil.which("gcc") is None:
        return None
    lib = out / "libevil.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    return lib


# -- the cases -----------------------------------------------------------------------------------
def make_cases(out: Path, compile_evil: bool = False) -> list[dict[str, Any]]:
    """Write every case into ``out``; return the case list (also written to cases.json)."""
    out.mkdir(parents=True, exist_ok=True)
    cases: list[dict[str, Any]] = []

    def case(name: str, path: Path, finding: str, expect: str, crashes_raw: str | None = None,
             kind: str = "load") -> None:  # fmt: skip
        cases.append({"name": name, "path": str(path), "finding": finding, "expect": expect,
                      "crashes_raw": crashes_raw, "kind": kind})  # fmt: skip

    good = _tflite("QUANTIZE", 8)
    (out / "good.tflite").write_bytes(good)

    # Models that crash the engine.
    p = out / "tflite_quantize_as_softmax.tflite"
    p.write_bytes(_tflite("SOFTMAX", 1024))
    case("tflite_quantize_as_softmax", p,
         "QUANTIZE's opcode changed to SOFTMAX: float softmax writes 4x the bytes into an int8 "
         "output; runs, then the process aborts in free() (or segfaults for bigger tensors)",
         r"SOFTMAX\) writes int8 from a float32 input", crashes_raw="tflite")  # fmt: skip
    p = out / "tflite_tensor_written_twice.tflite"
    p.write_bytes(_tflite("QUANTIZE", 8, twice=True))
    case("tflite_tensor_written_twice", p,
         "an operator duplicated so two write one tensor (found by tests/stress/semantic_fuzz.py:"
         " XNNPACK segfaulted on a duplicated PAD)",
         r"writes tensor 1, already written by subgraph 0 operator 0")  # fmt: skip
    p = out / "tflite_pool_filter_height_zero.tflite"
    p.write_bytes(_tflite("MAX_POOL_2D", 8, out_type="FLOAT32", pool_filter_h=0))
    case("tflite_pool_filter_height_zero", p,
         "MAX_POOL_2D whose filter height field is 0 (absent = the schema default 0; the check "
         "read it as 1): segfault (found by tests/stress/semantic_fuzz.py)",
         r"\(MAX_POOL_2D\) has stride 1x1, dilation 1x1, filter 2x0")  # fmt: skip
    empty_scale = _onnx_qdq_softmax(np.zeros((0,), np.float32), np.array(-128, np.int8))
    p = out / "onnx_empty_scale.onnx"
    p.write_bytes(empty_scale)
    case("onnx_empty_scale", p,
         "a zero-size output scale (dims [0]) of a Q/DQ pair around Softmax: loads, then ORT's "
         "fused QLinearSoftmax reads past it and segfaults in run",
         r"QuantizeLinear node .* scale 's2' is empty", crashes_raw="onnx")  # fmt: skip
    d = out / "onnx_empty_scale_artifact"
    _artifact(d, empty_scale, "model.onnx")
    case("onnx_empty_scale_artifact", d,
         "the same model behind a manifest with a correct sha256 (the hash proves nothing)",
         r"scale 's2' is empty")  # fmt: skip
    p = out / "onnx_empty_zero_point.onnx"
    p.write_bytes(_onnx_qdq_softmax(np.array(1 / 256, np.float32), np.zeros((0,), np.int8)))
    case("onnx_empty_zero_point", p, "a zero point of dims [0]",
         r"zero point 'z2' is empty")  # fmt: skip
    p = out / "onnx_nan_scale.onnx"
    p.write_bytes(_onnx_qdq_softmax(np.array(np.nan, np.float32), np.array(-128, np.int8)))
    case("onnx_nan_scale", p, "a NaN scale (what a -inf mask bias calibrates to)",
         r"scale 's2' holds nan; scales must be finite and > 0")  # fmt: skip
    p = out / "onnx_external_data.onnx"
    p.write_bytes(_onnx_qdq_softmax(np.array(1 / 256, np.float32), np.array(-128, np.int8),
                                    external=True))  # fmt: skip
    case("onnx_external_data", p,
         "an initializer whose data lives in ../../../../etc/passwd: ORT would read that file",
         r"keeps its data in an external file")  # fmt: skip

    # Delegates chosen by the artifact (native code).
    lib = evil_library(out, compile_evil)
    lib_path = str(lib) if lib else str(out / "libevil.so")
    for name, runtime, finding in [
        ("delegate_relative_library", {"tflite_delegate": "./libevil.so"},
         "runtime.tflite_delegate './libevil.so' was passed to ctypes.CDLL: its constructor ran"),
        ("delegate_unknown_name", {"tflite_delegate": "evil"},
         "any unknown delegate string went to ctypes.CDLL"),
        ("delegate_gpu_library_path", {"tflite_delegate": "gpu", "delegate_library": lib_path},
         "delegate 'gpu' with delegate_library set to a path: the library was dlopen-ed"),
        ("delegate_edgetpu_library_path",
         {"tflite_delegate": "edgetpu", "delegate_library": lib_path},
         "delegate 'edgetpu' with a library path"),
    ]:  # fmt: skip
        d = out / name
        _artifact(d, good, "model.tflite", runtime)
        if lib and name == "delegate_relative_library":
            shutil.copy(lib, d / "libevil.so")
        expect = (r"runtime\.delegate_library '.*libevil\.so' is not a library the runtime knows"
                  if "library_path" in name else
                  r"runtime\.tflite_delegate: '.*': expected one of xnnpack, none, edgetpu, gpu")
        case(name, d, finding, expect)  # fmt: skip

    # Manifests that gave tracebacks, hung or exhausted memory.
    manifest_cases = [
        ("manifest_invalid_utf8", lambda doc: json.dumps(doc).encode().replace(
            b'"arm-cpu"', b'"arm-\xff\xfe"'), "invalid UTF-8", r"not valid UTF-8"),
        ("manifest_deep_nesting", lambda doc: '{"schema": "edgeopt.manifest/1", "x": ' +
         "[" * 100000 + "]" * 100000 + "}", "100,000 nested lists: RecursionError",
         r"nested more than 32 levels"),
        ("manifest_nul_in_file_name", lambda doc: {**doc, "models": [
            {**doc["models"][0], "file": "model\x00.tflite"}]}, "a NUL in models[].file",
         r"models\[0\]\.file: .*plain file name"),
        ("manifest_threads_string", lambda doc: {**doc, "runtime": {**doc["runtime"],
         "threads": "4"}}, "runtime.threads is a string", r"runtime\.threads: expected int"),
        ("manifest_threads_huge", lambda doc: {**doc, "runtime": {**doc["runtime"],
         "threads": 100000}}, "runtime.threads 100000 (thread pool of 100k threads)",
         r"runtime\.threads: 100000: expected 1\.\.256"),
        ("manifest_delegate_not_a_string", lambda doc: {**doc, "runtime": {**doc["runtime"],
         "tflite_delegate": 5}}, "runtime.tflite_delegate 5", r"tflite_delegate: expected str"),
        ("manifest_runtime_is_a_list", lambda doc: {**doc, "runtime": [1, 2]},
         "runtime is a list", r"runtime: expected object"),
        ("manifest_target_is_a_string", lambda doc: {**doc, "target": "arm-cpu"},
         "target is a string", r"target: expected object"),
        ("manifest_target_name_wrong_type", lambda doc: {**doc, "target": {"name": 5}},
         "target.name is a number", r"target\.name: expected str"),
        ("manifest_nan", lambda doc: json.dumps(doc).replace('"threads": 1', '"threads": NaN'),
         "NaN in the manifest", r"NaN is not a JSON number"),
        ("manifest_duplicate_key", lambda doc: json.dumps(doc).replace(
            '"threads": 1', '"threads": 1, "threads": 2'), "duplicate key",
         r"duplicate key 'threads'"),
        ("manifest_lone_surrogate", lambda doc: json.dumps(doc).replace(
            '"crash case"', '"\\ud800"'), "a lone surrogate in a string",
         r"lone surrogate"),
        ("manifest_too_big", lambda doc: {**doc, "pad": "x" * (5 << 20)},
         "a 5 MiB manifest", r"more than the 4,194,304"),
        ("manifest_scale_zero", lambda doc: {**doc, "models": [{**doc["models"][0],
         "inputs": [{"name": "x", "shape": [1, 8], "dtype": "int8",
                     "quantization": {"scale": [0.0], "zero_point": [0], "axis": None}}]}]},
         "an IO scale of 0 (the runtime divides by it)", r"scale\[0\]: 0\.0: expected a finite"),
    ]  # fmt: skip
    for name, fn, finding, expect in manifest_cases:
        case(name, _manifest_case(out, name, good, fn), finding, expect)

    # Files that are not regular files.
    fifo = out / "fifo.tflite"
    if hasattr(os, "mkfifo"):
        os.mkfifo(fifo)
        case("model_is_a_fifo", fifo, "a FIFO given as the model: open() blocked forever",
             r"is a FIFO \(named pipe\), expected a regular file")  # fmt: skip
        d = out / "artifact_model_fifo"
        _artifact(d, good, "model.tflite", write_model=False)
        os.mkfifo(d / "model.tflite")
        case("artifact_model_is_a_fifo", d, "the artifact's model file is a FIFO",
             r"model\.tflite: model file is a FIFO")  # fmt: skip
        d = out / "artifact_manifest_fifo"
        d.mkdir()
        os.mkfifo(d / MANIFEST)
        case("artifact_manifest_is_a_fifo", d, "manifest.json is a FIFO: read_text() hung",
             r"manifest is a FIFO")  # fmt: skip
    if Path("/dev/zero").exists():
        link = out / "dev_zero.tflite"
        link.symlink_to("/dev/zero")
        case("model_links_to_dev_zero", link, "a link to /dev/zero: read_bytes() never ends",
             r"character device, expected a regular file")  # fmt: skip
        d = out / "artifact_model_dev_zero"
        _artifact(d, good, "model.tflite", write_model=False)
        (d / "model.tflite").symlink_to("/dev/zero")
        case("artifact_model_links_to_dev_zero", d, "the artifact's model links to /dev/zero",
             r"leaves its folder")  # fmt: skip
        d = out / "artifact_manifest_dev_zero"
        d.mkdir()
        (d / MANIFEST).symlink_to("/dev/zero")
        case("artifact_manifest_links_to_dev_zero", d, "manifest.json links to /dev/zero",
             r"leaves its folder")  # fmt: skip
    d = out / "artifact_model_link_outside"
    _artifact(d, good, "model.tflite", write_model=False)
    (d / "model.tflite").symlink_to(out / "good.tflite")
    case("artifact_model_link_outside", d, "the model is a link to a file outside the artifact",
         r"is a link that leaves its folder")  # fmt: skip

    # Input data.
    npz_bomb(out / "bomb.npz", key="x", row=(1,))
    case("npz_bomb", out / "bomb.npz",
         "a 37 MB .npz holding 8 GiB of zeros: run --input inflated all of it (8.4 GB RSS)",
         r"more than the 2,147,483,648-byte budget", kind="run-input")  # fmt: skip
    npz_huge_header(out / "header_lies.npz", key="x", shape=(1 << 40,))
    case("npz_header_lies", out / "header_lies.npz",
         "an .npz member whose header claims 2^40 floats but holds 16 bytes",
         r"array 'x' is truncated", kind="run-input")  # fmt: skip

    (out / "cases.json").write_text(json.dumps(cases, indent=1), encoding="utf-8")
    return cases


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="output folder (created; must not exist)")
    ap.add_argument("--compile", action="store_true", help="build libevil.so with gcc")
    args = ap.parse_args(argv)
    if args.out.exists():
        print(f"{args.out}: exists; pass a new folder", file=sys.stderr)
        return 2
    cases = make_cases(args.out, args.compile)
    print(f"wrote {len(cases)} cases to {args.out} (list: {args.out / 'cases.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
