"""Semantic mutation fuzz of models *and* artifact directories through ``load`` + ``run``.

    python tests/stress/semantic_fuzz.py [--models 2000] [--artifacts 200] [--seed 0]
        [--timeout 60] [--keep DIR] [--json]

Unlike ``fuzz_models.py`` (bytes of the file: bit flips, runs, truncation, structural slots),
every mutation here changes one *meaning* and writes a well-formed file: the TFLite model is
unpacked with LiteRT's schema classes, edited and repacked; the ONNX model is edited as a
``ModelProto``. What a converter bug or a hand-edited file could plausibly produce:

* TFLite: opcode swaps, tensor types, shapes (0, -1, huge, rank changes), quantization
  (scale 0 / negative / NaN / inf / denormal / huge, zero points out of range, per-channel count
  and axis), operator inputs/outputs rewired, dropped or omitted (-1), builtin option values,
  constant data resized, subgraph inputs/outputs, operators removed or duplicated, versions;
* ONNX: op_type swaps, attribute values (axis, perm, pads, strides, kernel shape, group),
  initializer dims, dtype and data, empty initializers, Q/DQ scales and zero points, inputs
  rewired or dropped, nodes removed or duplicated, graph input shapes and types, opset versions;
* artifact directories: a valid manifest around a base or mutated model (sha256 recomputed, so
  the hash check passes), then one manifest fault: wrong types, out-of-range values, nasty strings
  (NUL, control chars, separators, huge), missing or unknown fields, delegate names and library
  paths, several model entries, links, FIFOs, missing files.

Every case goes through ``edgeopt_runtime.load`` + ``Model.run`` on random inputs in restartable
worker processes (``tests/runtime/_fuzz_worker.py``'s driver). Outcomes as there; a ``crash``
(signal), ``timeout`` or ``error`` (a raw Python exception) fails the run (exit 1).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.runtime import _fuzz_worker as fw  # noqa: E402

NASTY_FLOATS = [0.0, -1.0, float("nan"), float("inf"), -float("inf"), 1e-45, 1e-38, 3.4e38,
                1e-12, 1e12]  # fmt: skip
NASTY_INTS = [0, -1, 1, 2, 3, -128, 127, 128, 255, 256, -129, 65535, 2**31 - 1, -(2**31), 1 << 20]
COMMON_OPS = (
    "ADD SUB MUL CONV_2D DEPTHWISE_CONV_2D FULLY_CONNECTED SOFTMAX LOGISTIC TANH RELU RELU6 "
    "QUANTIZE DEQUANTIZE RESHAPE MEAN CONCATENATION AVERAGE_POOL_2D MAX_POOL_2D TRANSPOSE PAD "
    "PADV2 STRIDED_SLICE SLICE GATHER BATCH_MATMUL HARD_SWISH LEAKY_RELU SQUEEZE EXPAND_DIMS SUM "
    "REDUCE_MAX SPLIT SPLIT_V PACK UNPACK RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR ARG_MAX CAST "
    "ABS EXP LOG RSQRT SQRT SQUARE NEG MAXIMUM MINIMUM TRANSPOSE_CONV L2_NORMALIZATION GELU "
    "LOG_SOFTMAX SELECT_V2 TILE BROADCAST_TO SHAPE ZEROS_LIKE DIV POW PRELU"
).split()
ONNX_OPS = (
    "Add Sub Mul Div Relu Sigmoid Tanh Softmax LogSoftmax Conv MatMul Gemm Reshape Transpose "
    "Concat Gather Slice Pad MaxPool AveragePool GlobalAveragePool QuantizeLinear "
    "DequantizeLinear Identity Flatten Squeeze Unsqueeze ReduceMean Cast Clip LeakyRelu Exp "
    "Sqrt Neg Abs Split Tile Expand Where Equal Less Greater Shape Size Resize TopK ArgMax "
    "ConvTranspose BatchNormalization InstanceNormalization LayerNormalization Einsum"
).split()


# -- TFLite ------------------------------------------------------------------------------------
def _schema() -> Any:
    from ai_edge_litert import schema_py_generated as s

    return s


def _pack(m: Any) -> bytes:
    import flatbuffers

    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _pick(rng: np.random.Generator, items: list[Any]) -> Any:
    return items[int(rng.integers(len(items)))]


TFLITE_MUTATIONS = ("opcode", "ttype", "shape", "quant", "rewire", "omit", "options", "data",
                    "sg_io", "ops", "version", "signature")  # fmt: skip


def mutate_tflite(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    s = _schema()
    m = s.ModelT.InitFromPackedBuf(bytearray(data), 0)
    sg = m.subgraphs[int(rng.integers(len(m.subgraphs)))]
    tensors, ops = sg.tensors or [], sg.operators or []
    op = _pick(rng, ops) if ops else None
    t = _pick(rng, tensors) if tensors else None
    ints = [v for k, v in vars(s.BuiltinOperator).items() if k in COMMON_OPS]
    if kind == "opcode" and m.operatorCodes:
        code = _pick(rng, m.operatorCodes)
        code.builtinCode = _pick(rng, ints)
        code.deprecatedBuiltinCode = min(code.builtinCode, 127)
    elif kind == "ttype" and t is not None:
        t.type = _pick(rng, [0, 1, 2, 3, 4, 6, 7, 9, 10, 16, 17])
    elif kind == "shape" and t is not None:
        shape = list(t.shape) if t.shape is not None else []
        choice = int(rng.integers(5))
        if choice == 0 and shape:
            shape[int(rng.integers(len(shape)))] = _pick(rng, [0, 1, 2, 3, 7, 1 << 16, 2**31 - 1])
        elif choice == 1:
            shape = shape + [1]
        elif choice == 2 and shape:
            shape = shape[:-1]
        elif choice == 3:
            shape = [int(x) for x in rng.integers(1, 9, int(rng.integers(0, 6)))]
        else:
            t.shapeSignature = np.array([-1] + shape[1:], np.int32) if shape else None
        t.shape = np.array(shape, np.int32)
    elif kind == "quant" and t is not None:
        q = t.quantization or s.QuantizationParametersT()
        t.quantization = q
        n = int(rng.integers(1, 4)) if rng.random() < 0.3 else 1
        q.scale = np.array([_pick(rng, NASTY_FLOATS) for _ in range(n)], np.float32)
        q.zeroPoint = np.array([_pick(rng, NASTY_INTS) for _ in range(int(rng.integers(0, 3)))],
                               np.int64)  # fmt: skip
        q.quantizedDimension = _pick(rng, [0, 1, 3, -1, 7])
    elif kind == "rewire" and op is not None and tensors:
        lst = op.inputs if rng.random() < 0.6 else op.outputs
        if lst is not None and len(lst):
            lst[int(rng.integers(len(lst)))] = int(rng.integers(len(tensors)))
    elif kind == "omit" and op is not None:
        ins = list(op.inputs if op.inputs is not None else [])
        choice = int(rng.integers(3))
        if choice == 0 and ins:
            ins[int(rng.integers(len(ins)))] = -1
        elif choice == 1 and ins:
            ins.pop(int(rng.integers(len(ins))))
        else:
            ins.append(int(rng.integers(len(tensors))) if tensors else 0)
        op.inputs = np.array(ins, np.int32)
    elif kind == "options" and op is not None and op.builtinOptions is not None:
        fields = [k for k, v in vars(op.builtinOptions).items() if isinstance(v, (int, float))]
        if fields:
            key = _pick(rng, fields)
            old = getattr(op.builtinOptions, key)
            setattr(op.builtinOptions, key, type(old)(_pick(rng, NASTY_INTS)) if
                    not isinstance(old, float) else _pick(rng, NASTY_FLOATS))  # fmt: skip
    elif kind == "data" and m.buffers:
        bufs = [b for b in m.buffers if b.data is not None and len(b.data)]
        if bufs:
            b = _pick(rng, bufs)
            n = len(b.data)
            b.data = np.resize(b.data, _pick(rng, [0, 1, n // 2, n + 4, n * 2]))
    elif kind == "sg_io" and tensors:
        lst = list(sg.inputs if rng.random() < 0.5 else sg.outputs)
        if lst and rng.random() < 0.5:
            lst[int(rng.integers(len(lst)))] = int(rng.integers(len(tensors)))
        else:
            lst.append(int(rng.integers(len(tensors))))
        if rng.random() < 0.5:
            sg.inputs = np.array(lst, np.int32)
        else:
            sg.outputs = np.array(lst, np.int32)
    elif kind == "ops" and ops:
        i = int(rng.integers(len(ops)))
        if rng.random() < 0.5:
            del ops[i]
        else:
            ops.insert(i, copy.deepcopy(ops[i]))
    elif kind == "version" and m.operatorCodes:
        _pick(rng, m.operatorCodes).version = _pick(rng, [0, 1, 2, 5, 100, -1])
    elif kind == "signature" and m.signatureDefs:
        sd = _pick(rng, m.signatureDefs)
        maps = (sd.inputs or []) + (sd.outputs or [])
        if maps:
            _pick(rng, maps).tensorIndex = _pick(rng, [0, 1, len(tensors), 2**31 - 1])
    return _pack(m)


# -- ONNX --------------------------------------------------------------------------------------
ONNX_MUTATIONS = ("op_type", "attribute", "init_dims", "init_dtype", "init_data", "init_empty",
                  "qparams", "rewire", "nodes", "graph_io", "opset")  # fmt: skip


def mutate_onnx(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    import onnx
    from onnx import numpy_helper

    m = onnx.load_from_string(data)
    g = m.graph
    node = _pick(rng, list(g.node)) if len(g.node) else None
    inits = list(g.initializer)
    init = _pick(rng, inits) if inits else None
    if kind == "op_type" and node is not None:
        node.op_type = _pick(rng, ONNX_OPS)
    elif kind == "attribute" and node is not None and len(node.attribute):
        a = _pick(rng, list(node.attribute))
        if a.type == onnx.AttributeProto.INT:
            a.i = _pick(rng, NASTY_INTS + [-2, -3, 4, 5])
        elif a.type == onnx.AttributeProto.INTS:
            n = max(1, len(a.ints) + int(rng.integers(-1, 2)))
            del a.ints[:]
            a.ints.extend(int(_pick(rng, [0, 1, 2, 3, -1, 100, 2**31 - 1])) for _ in range(n))
        elif a.type == onnx.AttributeProto.FLOAT:
            a.f = _pick(rng, NASTY_FLOATS)
        elif a.type == onnx.AttributeProto.STRING:
            a.s = _pick(rng, [b"", b"NOTSET", b"SAME_UPPER", b"x" * 300, b"\xff"])
    elif kind == "init_dims" and init is not None:
        dims = list(init.dims)
        choice = int(rng.integers(4))
        if choice == 0 and dims:
            dims[int(rng.integers(len(dims)))] = _pick(rng, [0, 1, 2, 3, -1, 1 << 20])
        elif choice == 1:
            dims.append(1)
        elif choice == 2 and dims:
            dims.pop()
        else:
            dims = [int(np.prod(dims))] if dims else [1]
        del init.dims[:]
        init.dims.extend(dims)
    elif kind == "init_dtype" and init is not None:
        init.data_type = _pick(rng, [1, 2, 3, 5, 6, 7, 9, 10, 11, 16])
    elif kind == "init_data" and init is not None:
        raw = init.raw_data
        init.raw_data = raw[: len(raw) // 2] if rng.random() < 0.5 else raw + bytes(4)
    elif kind == "init_empty" and init is not None:
        arr = numpy_helper.to_array(init)
        shape = (0,) if rng.random() < 0.5 else (0, *arr.shape[1:])
        init.CopyFrom(numpy_helper.from_array(np.zeros(shape, arr.dtype), init.name))
    elif kind == "qparams":
        qs = [n for n in g.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
        names = {i.name: i for i in inits}
        if qs:
            n = _pick(rng, qs)
            k = _pick(rng, [1, 2])
            if k < len(n.input) and n.input[k] in names:
                t = names[n.input[k]]
                arr = numpy_helper.to_array(t)
                if k == 1:
                    vals = np.array([_pick(rng, NASTY_FLOATS)] * max(1, arr.size), np.float32)
                else:
                    vals = np.array([_pick(rng, NASTY_INTS)] * max(1, arr.size)).astype(arr.dtype)
                shape = arr.shape if rng.random() < 0.7 else (vals.size, 1)
                t.CopyFrom(numpy_helper.from_array(vals.reshape(shape), t.name))
    elif kind == "rewire" and node is not None:
        names = [o for n in g.node for o in n.output] + [i.name for i in g.input] + [
            i.name for i in inits] + ["", "does_not_exist"]  # fmt: skip
        if len(node.input) and rng.random() < 0.8:
            node.input[int(rng.integers(len(node.input)))] = _pick(rng, names)
        elif len(node.input):
            del node.input[int(rng.integers(len(node.input)))]
    elif kind == "nodes" and len(g.node):
        i = int(rng.integers(len(g.node)))
        if rng.random() < 0.5:
            del g.node[i]
        else:
            g.node.insert(i, copy.deepcopy(g.node[i]))
    elif kind == "graph_io":
        vi = _pick(rng, list(g.input) + list(g.output))
        tt = vi.type.tensor_type
        if rng.random() < 0.4:
            tt.elem_type = _pick(rng, [1, 2, 3, 6, 7, 9, 10, 11, 16])
        elif len(tt.shape.dim):
            d = tt.shape.dim[int(rng.integers(len(tt.shape.dim)))]
            d.dim_value = _pick(rng, [0, 1, 2, 3, 1 << 20])
    elif kind == "opset" and len(m.opset_import):
        m.opset_import[0].version = _pick(rng, [1, 7, 10, 13, 21, 22, 99])
    return m.SerializeToString()


# -- artifact directories -------------------------------------------------------------------------
MANIFEST_MUTATIONS = ("type", "range", "string", "missing", "unknown", "delegate", "models",
                      "io_spec", "link", "fifo", "missing_file", "valid")  # fmt: skip
NASTY_STRINGS = ["", "\x00", "a\x00b", "../x", "/etc/passwd", "x" * 5000, "\u202e", "\ud800",
                 "con", ".", "..", "a/b", "a\\b", "\n", "libevil.so", "./libevil.so"]  # fmt: skip
NASTY_VALUES: list[Any] = [None, True, 0, -1, 2**63, 1.5, "4", [], {}, [[[]]], {"a": {"b": 1}}]


def _set_path(doc: dict[str, Any], path: list[Any], value: Any) -> None:
    node: Any = doc
    for k in path[:-1]:
        node = node[k]
    key = path[-1]
    if value is _DELETE:
        if isinstance(node, dict):
            node.pop(key, None)
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node.pop(key)
    elif isinstance(node, list) and not isinstance(key, int):
        node.append(value)
    elif isinstance(node, (list, dict)):
        node[key] = value


_DELETE = object()


def _paths(doc: Any, prefix: list[Any] | None = None) -> list[list[Any]]:
    prefix = prefix or []
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, [*prefix, k])
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, [*prefix, i])
    return out


def make_artifact(d: Path, model: bytes, name: str, base_doc: dict[str, Any], kind: str,
                  rng: np.random.Generator) -> None:  # fmt: skip
    d.mkdir(parents=True)
    (d / name).write_bytes(model)
    doc = copy.deepcopy(base_doc)
    doc["models"][0].update(file=name, sha256=hashlib.sha256(model).hexdigest(),
                            size_bytes=len(model))  # fmt: skip
    paths = _paths(doc)
    target = _pick(rng, paths)
    if kind == "type":
        _set_path(doc, target, _pick(rng, NASTY_VALUES))
    elif kind == "range":
        _set_path(doc, target, _pick(rng, NASTY_INTS + NASTY_FLOATS[2:5] + [10**30]))
    elif kind == "string":
        _set_path(doc, target, _pick(rng, NASTY_STRINGS))
    elif kind == "missing":
        _set_path(doc, target, _DELETE)
    elif kind == "unknown":
        _set_path(doc, [*target[:-1], "x_unknown"], _pick(rng, NASTY_VALUES))
    elif kind == "delegate":
        doc["runtime"]["tflite_delegate"] = _pick(rng, ["gpu", "edgetpu", "none", "xnnpack",
                                                        "./libevil.so", "evil", "/lib/libc.so.6"])
        doc["runtime"]["delegate_library"] = _pick(rng, [None, "libedgetpu.so.1",
                                                         "/lib/x86_64-linux-gnu/libc.so.6",
                                                         "libtensorflowlite_gpu_delegate.so",
                                                         "./libevil.so"])  # fmt: skip
    elif kind == "models":
        extra = copy.deepcopy(doc["models"][0])
        extra["file"] = _pick(rng, [name, "other.tflite", "m.onnx", name + "x"])
        extra["format"] = _pick(rng, ["tflite", "onnx", "pb"])
        doc["models"].insert(int(rng.integers(2)), extra)
    elif kind == "io_spec":
        doc["models"][0]["inputs"] = [{"name": "x", "shape": _pick(rng, [[1, 8], [None], [-1],
                                       [2**40], list(range(20))]), "dtype": _pick(rng, [
                                       "int8", "uint8", "float32", "object", "int4"]),
                                       "quantization": {"scale": [_pick(rng, NASTY_FLOATS)],
                                                        "zero_point": [_pick(rng, NASTY_INTS)],
                                                        "axis": _pick(rng, [None, 0, 5])}}]
    elif kind == "link":
        (d / name).unlink()
        (d / name).symlink_to(_pick(rng, ["/dev/zero", "/dev/null", "/etc/hostname",
                                          str(d.parent), name]))  # fmt: skip
    elif kind == "fifo" and hasattr(os, "mkfifo"):
        victim = d / (name if rng.random() < 0.7 else "manifest.json")
        victim.unlink(missing_ok=True)
        os.mkfifo(victim)
        if victim.name == "manifest.json":
            return
    elif kind == "missing_file":
        (d / name).unlink()
    (d / "manifest.json").write_text(json.dumps(doc), encoding="utf-8")


# -- corpus and run ----------------------------------------------------------------------------
def _base_doc(path: Path) -> dict[str, Any]:
    import edgeopt_runtime as rt

    m = rt.load(path, threads=1)
    return {
        "schema": "edgeopt.manifest/1", "target": {"name": "arm-cpu", "description": "fuzz"},
        "runtime": {"threads": 1, "tflite_delegate": "xnnpack", "delegate_library": None,
                    "onnx_providers": ["CPUExecutionProvider"]},
        "models": [{"file": path.name, "format": m.format, "precision": "int8", "sha256": "",
                    "size_bytes": 0, "inputs": [s.to_dict() for s in m.inputs],
                    "outputs": [s.to_dict() for s in m.outputs]}],
        "tools": {"edgeopt": "0.1.0"},
    }  # fmt: skip


def make_corpus(bases: dict[str, Path], out: Path, n_models: int, n_artifacts: int,
                seed: int) -> list[fw.Case]:  # fmt: skip
    """Mutated model files and artifact directories (round-robin over bases and kinds)."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = sorted(bases)
    datas = {n: bases[n].read_bytes() for n in names}
    cases: list[fw.Case] = []
    mutated: dict[str, list[bytes]] = {n: [] for n in names}
    for i in range(n_models):
        name = names[i % len(names)]
        kinds = TFLITE_MUTATIONS if name.endswith(".tflite") else ONNX_MUTATIONS
        kind = kinds[(i // len(names)) % len(kinds)]
        fn = mutate_tflite if name.endswith(".tflite") else mutate_onnx
        data = datas[name]
        new = data
        for _ in range(8):  # a mutation can be a no-op on some models: try another spot
            with contextlib.suppress(Exception):
                new = fn(data, kind, rng)
            if new != data:
                break
        stem, suffix = name.rsplit(".", 1)
        p = out / f"m{i:05d}_{stem}_{kind}.{suffix}"
        p.write_bytes(new)
        mutated[name].append(new)
        cases.append(fw.Case(str(p), name, kind))
    docs = {n: _base_doc(bases[n]) for n in names}
    for i in range(n_artifacts):
        name = names[i % len(names)]
        kind = MANIFEST_MUTATIONS[(i // len(names)) % len(MANIFEST_MUTATIONS)]
        pool = mutated[name]
        model = datas[name] if not pool or rng.random() < 0.5 else _pick(rng, pool)
        d = out / f"a{i:05d}_{name.rsplit('.', 1)[0]}_{kind}"
        make_artifact(d, model, f"model.{name.rsplit('.', 1)[1]}", docs[name], kind, rng)
        cases.append(fw.Case(str(d), name, f"artifact_{kind}"))
    return cases


def run(bases: dict[str, Path], work: Path, n_models: int, n_artifacts: int, seed: int,
        timeout: float) -> dict[str, Any]:  # fmt: skip
    t0 = time.perf_counter()
    cases = make_corpus(bases, work / "corpus", n_models, n_artifacts, seed)
    t1 = time.perf_counter()
    results = fw.run_cases(cases, "load", timeout=timeout)
    report: dict[str, Any] = {"seed": seed, **fw.summarize(results)}
    report["model_files"] = sum(1 for c in cases if not c.kind.startswith("artifact_"))
    report["artifact_dirs"] = sum(1 for c in cases if c.kind.startswith("artifact_"))
    report["seconds"] = {"corpus": round(t1 - t0, 1), "run": round(time.perf_counter() - t1, 1)}
    bad = [r for r in results if r.outcome not in fw.ACCEPTABLE]
    report["failures"] = [{"case": Path(r.case.path).name, "outcome": r.outcome,
                           "detail": r.detail} for r in bad]  # fmt: skip
    return report


def build_bases(work: Path, seed: int) -> dict[str, Path]:
    from tests.runtime.conftest_verify import build_base_models, build_valid_zoo

    with contextlib.redirect_stdout(sys.stderr):  # Keras prints export notes on stdout
        built = build_base_models(work / "base", seed)
        zoo = build_valid_zoo(work / "base", seed)
    return built | {f"{k}.tflite": v for k, v in zoo.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=2000, help="mutated model files")
    ap.add_argument("--artifacts", type=int, default=200, help="mutated artifact directories")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per case")
    ap.add_argument("--keep", type=Path, help="write the corpus here and keep it")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgeopt_semfuzz_") as tmp:
        work = args.keep or Path(tmp)
        print("building base models ...", file=sys.stderr, flush=True)
        bases = build_bases(work, args.seed)
        print(f"{len(bases)} base models; mutating and running ...", file=sys.stderr, flush=True)
        report = run(bases, work, args.models, args.artifacts, args.seed, args.timeout)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"{report['model_files']} model files + {report['artifact_dirs']} artifact dirs, "
              f"{report['seconds']}")  # fmt: skip
        print("outcomes:", report["outcomes"])
        for key in ("by_kind", "by_base"):
            for name, counts in report[key].items():
                print(f"  {name:28s} {counts}")
        for f in report["failures"]:
            print(f"FAIL {f['outcome']:8s} {f['case']}: {f['detail']}")
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
