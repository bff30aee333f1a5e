"""Where the time goes: ONNX Runtime per-op-class time of the float model and its int8 artifact.

When int8 is not as much faster than float as hoped, the answer is usually one class of ops
(depthwise convolutions, the first 3-channel convolution, elementwise adds) that gains little or
even loses in int8. This groups ORT's profiling trace into comparable classes on both sides:

* convolutions: ``dense KxK`` or ``depthwise KxK`` from the weight shapes. The float trace
  carries them; ORT elides the (pre-packed) weights of ``QLinearConv``, so int8 nodes are looked
  up by name in the int8 model (ORT names a fused node after the QDQ graph's ``Conv`` plus a
  ``_token_N`` suffix) and the weight shape read from the initializer behind its
  ``DequantizeLinear``; a node not found that way is matched to the float convolutions by
  execution order;
* everything else by op type, with ``QLinear`` / ``Fused`` / ``Nhwc`` prefixes and ``Integer``
  suffixes removed (``QLinearMatMul`` and ``MatMul`` are both ``MatMul``); Q/DQ ops stay
  separate: they are the price of int8.

The LiteRT Python API exposes no per-op timing, so there is no TFLite counterpart here.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

_WARMUP = 3


def _session(path: Path, threads: int, tmp: str, tag: str) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tmp, tag)
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _traces(paths: list[Path], x: np.ndarray, runs: int, threads: int
            ) -> list[tuple[list[tuple[dict, float]], float]]:
    """Profile the models with their runs alternating (one of each, then again...), so load
    from other processes hits all alike; per model: [(node args, median ms per run)] in
    execution order, and the median ``model_run`` ms. Medians, not means: a run preempted by
    another process inflates one sample, not the figure."""
    with tempfile.TemporaryDirectory(prefix="edgeopt-opprof-") as tmp:
        sessions = [_session(p, threads, tmp, f"m{i}") for i, p in enumerate(paths)]
        feeds = [{s.get_inputs()[0].name: x} for s in sessions]
        for _ in range(_WARMUP + runs):
            for sess, feed in zip(sessions, feeds, strict=True):
                sess.run(None, feed)
        traces = [json.loads(Path(s.end_profiling()).read_text(encoding="utf-8"))
                  for s in sessions]
    return [_per_node_medians(events) for events in traces]


def _per_node_medians(events: list[dict]) -> tuple[list[tuple[dict, float]], float]:
    windows = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                     if e.get("name") == "model_run")[_WARMUP:]
    starts = [w[0] for w in windows]
    nodes: dict[str, tuple[dict, list[float]]] = {}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        if not windows or e["ts"] < starts[0]:
            continue  # warm-up run
        name = e["name"].removesuffix("_kernel_time")
        args = {**(e.get("args") or {}), "name": name}
        nodes.setdefault(name, (args, []))[1].append(e["dur"] / 1e3)
    run_ms = statistics.median(b - a for a, b in windows) / 1e3 if windows else 0.0
    return [(a, statistics.median(d)) for a, d in nodes.values()], run_ms


def _base(op: str) -> str:
    for prefix in ("QLinear", "Fused", "Nhwc"):
        op = op.removeprefix(prefix)
    return op.removesuffix("Integer")


def _conv_class(args: dict) -> str:
    shapes = [next(iter(d.values())) for d in args.get("input_type_shape", [])]
    return _weight_class(shapes[1] if len(shapes) > 1 else [])


def _weight_class(w: list[int]) -> str:
    if len(w) != 4:
        return "conv"
    kind = "depthwise" if w[1] == 1 and w[0] > 1 else "dense"
    return f"{kind} conv {w[2]}x{w[3]}"


_TOKEN = re.compile(r"(_token_\d+)+$")


def conv_weight_shapes(path: Path) -> dict[str, list[int]]:
    """``Conv`` node name -> weight shape in a QDQ ONNX model (through its DequantizeLinear)."""
    import onnx

    graph = onnx.load(str(path)).graph
    inits = {i.name: list(i.dims) for i in graph.initializer}
    dq_src = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    out = {}
    for n in graph.node:
        if n.op_type == "Conv" and len(n.input) > 1:
            w = n.input[1]
            shape = inits.get(dq_src.get(w, w))
            if shape:
                out[n.name] = shape
    return out


def op_classes(float_path: Path, int8_path: Path, x: np.ndarray, *, runs: int = 20,
               threads: int = 1) -> dict[str, Any]:
    """Per-op-class time of the float and the int8 ONNX model, side by side.

    Args:
        float_path / int8_path: the two ``.onnx`` files.
        x: one input (float; the int8 model's QDQ graph takes float too).
        runs: profiled runs after warm-up.
        threads: intra-op threads.

    Returns:
        ``classes``: list of {class, nodes, float_ms, int8_ms, speedup, int8_share}, largest
        int8 time first; ``float_run_ms`` / ``int8_run_ms`` (median ``model_run``).
    """
    (f_nodes, f_run), (q_nodes, q_run) = _traces([float_path, int8_path], x, runs, threads)
    f_convs = [a for a, _ in f_nodes if _base(a.get("op_name", "")) == "Conv"]
    q_weights = conv_weight_shapes(int8_path)
    classes: dict[str, dict[str, Any]] = {}

    def add(cls: str, side: str, ms: float) -> None:
        c = classes.setdefault(cls, {"class": cls, "nodes": 0, "float_ms": 0.0, "int8_ms": 0.0})
        c[side] += ms
        if side == "int8_ms":
            c["nodes"] += 1

    for side, nodes in (("float_ms", f_nodes), ("int8_ms", q_nodes)):
        conv_i = 0
        for args, ms in nodes:
            op = _base(args.get("op_name", "?"))
            if op == "Conv":
                src = f_convs[conv_i] if conv_i < len(f_convs) else args
                conv_i += 1
                named = q_weights.get(_TOKEN.sub("", args.get("name", "")))
                if side == "int8_ms" and named:
                    add(_weight_class(named), side, ms)
                else:
                    add(_conv_class(args if side == "float_ms" else src), side, ms)
            else:
                add(op, side, ms)
    total_q = sum(c["int8_ms"] for c in classes.values()) or 1.0
    rows = []
    for c in classes.values():
        both = c["int8_ms"] > 0 and c["float_ms"] > 0  # e.g. Add is fused into Conv in float
        c["speedup"] = round(c["float_ms"] / c["int8_ms"], 3) if both else None
        c["int8_share"] = round(c["int8_ms"] / total_q, 4)
        c["float_ms"], c["int8_ms"] = round(c["float_ms"], 4), round(c["int8_ms"], 4)
        rows.append(c)
    rows.sort(key=lambda c: -c["int8_ms"])
    return {
        "threads": threads,
        "runs": runs,
        "float_run_ms": round(f_run, 4),
        "int8_run_ms": round(q_run, 4),
        "classes": rows,
        "method": "ONNX Runtime profiling traces of two profiled sessions run alternately; "
        "per node the median kernel time over runs, summed per class; int8 convolutions "
        "classified by their QDQ Conv's weight initializer (execution order as fallback)",
    }
