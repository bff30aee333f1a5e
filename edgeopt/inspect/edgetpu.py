"""Coral Edge TPU: pre-flight prediction of what ``edgetpu_compiler`` maps, and the real compiler.

Rules (data from the target profile, limits from Coral's "TensorFlow models on the Edge TPU",
supported-operations table for compiler 16 and its model requirements):

* the op must be in ``[ops].supported`` of the profile;
* every tensor it reads or writes must be int8 / uint8 (constants may be int32: biases, axes);
* static shapes only (no -1 in a shape signature), batch 1;
* at most the 3 innermost dimensions may be larger than 1 (``[shapes].max_non_unit_dims``) and
  the rank may not exceed ``[shapes].max_rank``;
* the per-op limits of Coral's table (no fused activation on pools/concatenation, equal x/y
  dilation on convolutions, default FC weights format and 1-D FC output, 1-D softmax of at most
  16,000 elements, strided slice with unit strides and no ellipsis/new-axis masks, no reduction /
  padding / split / pack along the batch dimension, z-mean only when z is a multiple of 4,
  constant 1-D PReLU alpha). Coral documents no stride limit for convolutions, so none is
  checked.

The compiler partitions once: it delegates a single subgraph (without ``-a``). The prediction
runs TFLite's own partitioner (:mod:`edgeopt.inspect.partition`) and keeps the first delegated
subset: supported ops that depend on a CPU op which itself follows TPU ops run on the CPU
("after the first unmapped op"); ops on a parallel branch that does not depend on it stay on the
TPU; unsupported ops before the TPU part (a float QUANTIZE at the input) or after it (a final
DEQUANTIZE) run on the CPU without splitting anything.

Parameter memory is estimated as the bytes of the constant tensors (int8 weights, int32 biases)
read by TPU ops; the Edge TPU caches parameters in about 8 MiB of on-chip SRAM (Coral: "the Edge
TPU has roughly 8 MB of SRAM"), and the compiler logs show 6-8 MiB of it usable for parameters, so
anything above ~6 MiB may stream part of the weights from host memory on every inference.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from edgeopt.targets import TargetProfile

from . import report as R
from .partition import ancestors, partition
from .tflite_graph import OpInfo, TensorInfo, TFLiteGraph, read_tflite

DELEGATE = "edgetpu"
ON_CHIP_CACHE_BYTES = 8 * 1024 * 1024
USABLE_CACHE_BYTES = 6 * 1024 * 1024  # lowest total (used + remaining) seen in compiler logs
_INT8 = {"int8", "uint8"}
_CONST_OK = {"int8", "uint8", "int32", "int64"}  # weights, biases, axes, shapes, paddings
_NO_FUSED_ACT = {"AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION"}
_SOFTMAX_MAX = 16000

# Replacement advice for ops that never map (keyed by builtin name).
_OP_ADVICE = {
    "HARD_SWISH": "replace HARD_SWISH with RELU6 (Keras MobileNetV3: minimalistic=True)",
    "LEAKY_RELU": "replace LeakyReLU with ReLU or PReLU (PRELU maps to the Edge TPU)",
    "GELU": "replace GELU with RELU or LOGISTIC-based activations",
    "ELU": "replace ELU with RELU / RELU6",
    "DIV": "divide by a constant as a MUL by its reciprocal",
    "EXP": "move EXP into CPU post-processing at the end of the graph",
    "DEQUANTIZE": "this op produces float: keep float ops at the end of the graph",
    "CAST": "remove the CAST or move it to the end of the graph",
    "ARG_MAX": "move ARG_MAX to post-processing at the end of the graph",
    "ARG_MIN": "move ARG_MIN to post-processing at the end of the graph",
    "BATCH_MATMUL": "express the matmul as FULLY_CONNECTED with constant weights",
    "GATHER": "replace GATHER with SLICE / STRIDED_SLICE where the indices are constant",
    "SPLIT_V": "use SPLIT with equal sizes, or STRIDED_SLICE",
    "MIRROR_PAD": "use zero padding (PAD)",
    "SQRT": "use RSQRT (supported) and a MUL",
    "SQUARE": "use MUL(x, x)",
    "TOPK_V2": "move TOPK to post-processing at the end of the graph",
}


def _tensor_reasons(op: OpInfo, target: TargetProfile) -> list[dict[str, str]]:
    """dtype and shape rules on every tensor the op touches, one reason per rule."""
    found: dict[str, list[str]] = {}
    shapes = target.shapes
    inner = shapes.max_non_unit_dims
    for t in (*op.inputs, *op.outputs):
        desc = f"'{t.name}' {t.dtype}{R.shape_str(t)}"
        if t.is_constant:
            if t.dtype not in _CONST_OK:
                found.setdefault(R.NOT_INT8, []).append("constant " + desc)
            continue
        if t.dtype not in _INT8:
            found.setdefault(R.NOT_INT8, []).append(desc)
        if t.is_dynamic and shapes.static:
            found.setdefault(R.DYNAMIC_SHAPE, []).append(desc)
        dims = t.shape_signature
        if shapes.max_rank and len(dims) > shapes.max_rank:
            found.setdefault(R.RANK_TOO_HIGH, []).append(desc)
        elif inner and len(dims) > inner and any(d > 1 for d in dims[:-inner]):
            found.setdefault(R.TOO_MANY_NON_UNIT_DIMS, []).append(desc)
    lead = {
        R.NOT_INT8: "not int8",
        R.DYNAMIC_SHAPE: "dynamic shape",
        R.RANK_TOO_HIGH: f"rank above {shapes.max_rank}",
        R.TOO_MANY_NON_UNIT_DIMS: f"more than the {inner} innermost dimensions larger than 1",
    }
    return [R.reason(code, f"{lead[code]}: {_listing(items)}") for code, items in found.items()]


def _listing(items: list[str], limit: int = 2) -> str:
    more = len(items) - limit
    return ", ".join(items[:limit]) + (f" and {more} more" if more > 0 else "")


def _axes(op: OpInfo, pos: int) -> tuple[int, ...] | None:
    """Normalised (non-negative) axes from a constant input, or None when not known."""
    if len(op.inputs) <= pos or op.inputs[pos].values is None:
        return None
    rank = len(op.inputs[0].shape)
    return tuple(a + rank if a < 0 else a for a in op.inputs[pos].values)


def _param_reasons(op: OpInfo) -> list[str]:
    """Per-op limits from Coral's supported-operations table ("known limitations")."""
    name, opt = op.name, op.options
    msgs: list[str] = []
    act = opt.get("fused_activation_function", "NONE")
    if name in _NO_FUSED_ACT and act not in ("NONE", 0):
        msgs.append(f"{name} with a fused {act} activation (the Edge TPU takes none here)")
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        dh, dw = opt.get("dilation_h_factor", 1), opt.get("dilation_w_factor", 1)
        if dh != dw:
            msgs.append(f"{name} dilation differs in x and y ({dw} vs {dh})")
    if name == "FULLY_CONNECTED":
        if opt.get("weights_format", "DEFAULT") != "DEFAULT":
            msgs.append(f"FULLY_CONNECTED weights format {opt['weights_format']}")
        if op.outputs and sum(d > 1 for d in op.outputs[0].shape) > 1:
            msgs.append(f"FULLY_CONNECTED output {R.shape_str(op.outputs[0])} is not 1-D")
    if name == "SOFTMAX" and op.inputs:
        t = op.inputs[0]
        size = 1
        for d in t.shape:
            size *= max(d, 1)
        if sum(d > 1 for d in t.shape) > 1 or size > _SOFTMAX_MAX:
            msgs.append(f"SOFTMAX input {R.shape_str(t)}: only 1-D with <= {_SOFTMAX_MAX} values")
    if name == "STRIDED_SLICE":
        strides = op.inputs[3].values if len(op.inputs) > 3 else None
        if strides is not None and any(s != 1 for s in strides):
            msgs.append(f"STRIDED_SLICE strides {list(strides)} (only 1 is supported)")
        if opt.get("ellipsis_mask") or opt.get("new_axis_mask"):
            msgs.append("STRIDED_SLICE with ellipsis_mask / new_axis_mask")
    msgs += _batch_axis_reasons(op)
    if name == "PRELU" and len(op.inputs) > 1:
        alpha = op.inputs[1]
        if not alpha.is_constant:
            msgs.append("PRELU alpha is not a constant")
        elif sum(d > 1 for d in alpha.shape[:-1]) > 0:
            msgs.append(f"PRELU alpha {R.shape_str(alpha)} is not 1-D (use shared_axes=[1, 2])")
    if name == "CONCATENATION":
        consts = [t for t in op.inputs if t.is_constant]
        if consts and len(op.inputs) != 2:
            msgs.append("CONCATENATION with a constant input must have exactly 2 inputs")
    return msgs


def _batch_axis_reasons(op: OpInfo) -> list[str]:
    """Reductions, pads, splits and packs may not touch the batch dimension."""
    name = op.name
    rank = len(op.inputs[0].shape) if op.inputs else 0
    if name in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN"):
        axes = _axes(op, 1)
        if axes is not None and rank >= 3 and 0 in axes:
            return [f"{name} reduces along the batch dimension"]
        if name == "MEAN" and axes is not None and rank and rank - 1 in axes:
            z = op.inputs[0].shape[-1]
            if z % 4:
                return [f"MEAN over the channel dimension needs a multiple of 4 channels (z={z})"]
    if name in ("PAD", "PADV2") and len(op.inputs) > 1:
        pads = op.inputs[1].values
        if pads is not None and rank >= 3 and any(pads[:2]):
            return [f"{name} pads the batch dimension ({list(pads[:2])})"]
    if name == "SPLIT" and op.inputs and op.inputs[0].values is not None:
        axis = op.inputs[0].values[0]
        if axis == 0 and len(op.inputs) > 1 and len(op.inputs[1].shape) >= 3:
            return ["SPLIT along the batch dimension"]
    if name == "PACK" and op.options.get("axis", 1) == 0 and op.outputs:
        if len(op.outputs[0].shape) >= 3:
            return ["PACK along the batch dimension"]
    return []


def op_reasons(op: OpInfo, target: TargetProfile) -> list[dict[str, str]]:
    """Why the Edge TPU cannot run ``op`` on its own merits (empty list = it can).

    Args:
        op: one op of the graph.
        target: the Edge TPU profile (supported list, shape rules).

    Returns:
        ``{"code", "message"}`` reasons, most fundamental first.
    """
    reasons: list[dict[str, str]] = []
    supported = set(target.ops.supported)
    if supported and op.name not in supported:
        what = "a custom op" if op.name.startswith("CUSTOM:") else "not in the supported-op list"
        reasons.append(R.reason(R.OP_NOT_SUPPORTED, f"{op.name} is {what} of the Edge TPU"))
    reasons += _tensor_reasons(op, target)
    reasons += [R.reason(R.UNSUPPORTED_PARAM, m) for m in _param_reasons(op)]
    return reasons


def _suggestion(op: OpInfo, reasons: list[dict[str, str]]) -> str | None:
    codes = {r["code"] for r in reasons}
    if R.OP_NOT_SUPPORTED in codes:
        if op.name.startswith("CUSTOM:"):
            return "custom ops never map: move this op to CPU post-processing at the graph's end"
        return _OP_ADVICE.get(
            op.name,
            f"replace {op.name} with supported ops, or move it to the end of the graph so only "
            "it runs on the CPU",
        )
    if R.DYNAMIC_SHAPE in codes:
        return "set a static batch size of 1 (keras.Input(shape, batch_size=1)) before converting"
    if R.NOT_INT8 in codes:
        if op.name == "QUANTIZE":
            return (
                "float model input: use int8/uint8 model IO (the profile's io_dtype) so this "
                "QUANTIZE disappears"
            )
        if op.name == "DEQUANTIZE":
            return "float model output: use int8/uint8 model IO, or keep it at the graph's end"
        return (
            "this op stays float: quantize it (full-integer int8 with a representative dataset) "
            "or keep it at the end of the graph"
        )
    if R.TOO_MANY_NON_UNIT_DIMS in codes or R.RANK_TOO_HIGH in codes:
        return "reshape so that at most the 3 innermost dimensions exceed 1 (batch 1)"
    if R.UNSUPPORTED_PARAM in codes:
        return "change the layer's parameters to the supported ones listed in the reason"
    return None


def analyze(graph: TFLiteGraph, target: TargetProfile) -> dict[str, Any]:
    """Predict which ops ``edgetpu_compiler`` maps and how it partitions the graph.

    Args:
        graph: the parsed model.
        target: the Edge TPU profile.

    Returns:
        The report dict (``ops``, ``summary``, ``partition``), see ``edgeopt.inspect``.
    """
    ops = graph.ops
    own = [op_reasons(op, target) for op in ops]
    dynamic = _dynamic_tensors(graph) if target.shapes.static else []
    if dynamic:
        # edgetpu_compiler 16 rejects the whole model ("Attempting to use a delegate that only
        # supports static-sized tensors..."), so no op maps, not only the dynamic ones.
        whole = R.reason(
            R.DYNAMIC_SHAPE,
            f"the model has dynamic-size tensors ('{dynamic[0].name}' {R.shape_str(dynamic[0])}"
            f"{' and more' if len(dynamic) > 1 else ''}): edgetpu_compiler rejects the whole model",
        )
        own = [r if any(x["code"] == R.DYNAMIC_SHAPE for x in r) else r + [whole] for r in own]
    supported = [not r for r in own]
    subsets = partition(ops, supported)
    delegated = [s for s in subsets if s.delegated]
    tpu = set(delegated[0].ops) if delegated else set()
    anc = ancestors(ops)
    # An unmapped op "breaks" the graph when it follows TPU ops and supported ops depend on it.
    stranded = [i for i in range(len(ops)) if supported[i] and i not in tpu]
    breakers = sorted(
        {
            min((a for a in anc[i] if not supported[a] and anc[a] & tpu), default=-1)
            for i in stranded
        }
        - {-1}
    )
    entries = []
    for op in ops:
        i = op.index
        if i in tpu:
            entries.append(R.op_entry(op, DELEGATE, True, [], None, _notes(op)))
            continue
        reasons = list(own[i])
        if not reasons:
            blocker = min((a for a in anc[i] if not supported[a] and anc[a] & tpu), default=None)
            where = f"op #{blocker} {ops[blocker].name}" if blocker is not None else "a CPU op"
            reasons = [
                R.reason(
                    R.AFTER_UNMAPPED,
                    f"supported, but it depends on {where}, which runs on the CPU after TPU ops: "
                    "the compiler maps only one subgraph, so this op runs on the CPU",
                )
            ]
        entries.append(R.op_entry(op, "cpu", False, reasons, _suggestion(op, own[i])))
    for b in breakers:
        entries[b]["suggestion"] = (
            (entries[b]["suggestion"] or "replace this op")
            + "; it splits the graph: every op that depends on it runs on the CPU"
            " (or compile with `edgetpu_compiler -a` for several TPU subgraphs, each switch"
            " costs a CPU round trip)"
        )
    first = R.blocking_info(entries[breakers[0]]) if breakers else None
    return {
        "delegate": DELEGATE,
        "ops": entries,
        "summary": R.summary(entries, "the Edge TPU", first),
        "partition": _partition_block(graph, entries, tpu, breakers, len(delegated)),
        "notes": _model_notes(graph, bool(dynamic)),
    }


def _dynamic_tensors(graph: TFLiteGraph) -> list[TensorInfo]:
    return [t for t in graph.tensors if not t.is_constant and t.is_dynamic]


def _model_notes(graph: TFLiteGraph, dynamic: bool) -> list[str]:
    notes = [
        "prediction: Coral's documented rules + TFLite's partitioner; edgetpu_compiler is "
        "closed-source and can still leave an op on the CPU for size/precision reasons"
    ]
    quantized = any(t.dtype in _INT8 and t.quantization for t in graph.tensors)
    if not quantized:
        notes.append(
            "no int8 tensors: edgetpu_compiler refuses this model ('Invalid model ... Model not "
            "quantized'); convert it with full-integer int8 quantization first"
        )
    if dynamic:
        notes.append(
            "dynamic-size tensors (e.g. an unknown batch): edgetpu_compiler 16 fails with "
            "'Attempting to use a delegate that only supports static-sized tensors with a graph "
            "that has dynamic-sized tensors' (google-coral/edgetpu#829); convert with a static "
            "batch size of 1"
        )
    return notes


def _notes(op: OpInfo) -> list[str]:
    """Cases Coral documents as "may not be mapped" without a checkable rule."""
    if op.name in ("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"):
        return ["depending on input/output size the compiler may leave resizes on the CPU"]
    if op.name == "RESHAPE":
        return ["certain reshapes of large tensors may not be mapped"]
    return []


def _param_bytes(graph: TFLiteGraph, tpu: set[int]) -> int:
    seen: dict[int, int] = {}
    for op in graph.ops:
        if op.index in tpu:
            for t in op.inputs:
                if t.is_constant:
                    seen[t.index] = t.constant_bytes
    return sum(seen.values())


def _partition_block(
    graph: TFLiteGraph,
    entries: list[dict[str, Any]],
    tpu: set[int],
    breakers: list[int],
    n_delegated: int,
) -> dict[str, Any]:
    params = _param_bytes(graph, tpu)
    cpu = [e["index"] for e in entries if not e["delegated"]]
    edge = [i for i in cpu if entries[i]["reasons"][0]["code"] != R.AFTER_UNMAPPED]
    if params <= USABLE_CACHE_BYTES:
        fit = "fits in the on-chip cache"
    elif params <= ON_CHIP_CACHE_BYTES:
        fit = "borderline: the compiler may stream part of it from off-chip memory"
    else:
        fit = "does not fit: the rest streams from host memory on every inference"
    return {
        "tpu_ops": sorted(tpu),
        "cpu_ops": cpu,
        "cpu_ops_not_splitting": [i for i in edge if i not in breakers],
        "subgraphs": 1 if tpu else 0,
        "subgraphs_if_multiple_allowed": n_delegated,
        "first_unmapped_op": R.blocking_info(entries[breakers[0]]) if breakers else None,
        "parameter_bytes": params,
        "on_chip_cache_bytes": ON_CHIP_CACHE_BYTES,
        "fits_on_chip": params <= USABLE_CACHE_BYTES,
        "parameter_estimate": (
            f"{params / 2**20:.2f} MiB of constant tensors (weights, biases) read by TPU ops vs "
            f"~8 MiB on-chip SRAM: {fit}"
        ),
    }


# ---- the real compiler -------------------------------------------------------------------

COMPILER = "edgetpu_compiler"
_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
_MEM = {
    "on_chip_bytes": "On-chip memory used for caching model parameters",
    "on_chip_remaining_bytes": "On-chip memory remaining for caching model parameters",
    "off_chip_bytes": "Off-chip memory used for streaming uncached model parameters",
}
_INTS = {
    "subgraphs": "Number of Edge TPU subgraphs",
    "total_ops": "Total number of operations",
    "ops_tpu": "Number of operations that will run on Edge TPU",
    "ops_cpu": "Number of operations that will run on CPU",
}
_ROW = re.compile(r"^([A-Z][A-Z0-9_]*|CUSTOM\S*)\s+(\d+)\s+(\S.*?)\s*$")
_MAPPED = "Mapped to Edge TPU"


def _bytes(text: str) -> int | None:
    m = re.match(r"([\d.]+)\s*(B|KiB|MiB|GiB)", text.strip())
    return int(round(float(m.group(1)) * _UNITS[m.group(2)])) if m else None


def parse_compiler_output(text: str) -> dict[str, Any]:
    """Parse ``edgetpu_compiler -s`` console output (or its ``*_edgetpu.log`` file).

    Args:
        text: what the compiler printed.

    Returns:
        ``{"version", "compiled", "output_model", "on_chip_bytes", "on_chip_remaining_bytes",
        "off_chip_bytes", "subgraphs", "total_ops", "ops_tpu", "ops_cpu", "operators": [{"op",
        "count", "status", "mapped"}], "error"}``; missing values are None.
    """
    out: dict[str, Any] = {k: None for k in ("version", "output_model", "error", *_MEM, *_INTS)}
    out["compiled"] = "Model compiled successfully" in text
    if m := re.search(r"Edge TPU Compiler version (\S+)", text):
        out["version"] = m.group(1)
    if m := re.search(r"^Output(?: model)?: (.+?)\s*$", text, re.M):
        out["output_model"] = m.group(1)
    for key, label in _MEM.items():
        if m := re.search(re.escape(label) + r":\s*(.+)", text):
            out[key] = _bytes(m.group(1))
    for key, label in _INTS.items():
        if m := re.search(re.escape(label) + r":\s*(\d+)", text):
            out[key] = int(m.group(1))
    out["operators"] = _operator_rows(text)
    rows = out["operators"]
    if rows and out["ops_tpu"] is None:  # fully mapped models print no "will run on" lines
        out["ops_tpu"] = sum(r["count"] for r in rows if r["mapped"])
        out["ops_cpu"] = sum(r["count"] for r in rows if not r["mapped"])
    out["error"] = _error(text, out["compiled"])
    return out


def _operator_rows(text: str) -> list[dict[str, Any]]:
    rows = []
    in_table = False
    for line in text.splitlines():
        if re.match(r"^Operator\s+Count\s+Status", line):
            in_table = True
            continue
        if in_table and (m := _ROW.match(line.strip())):
            status = m.group(3)
            rows.append(
                {
                    "op": m.group(1),
                    "count": int(m.group(2)),
                    "status": status,
                    "mapped": status.startswith(_MAPPED),
                }
            )
    return rows


def _error(text: str, compiled: bool) -> str | None:
    if compiled:
        return None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        if ln.startswith("Invalid model"):
            detail = lines[i + 1] if i + 1 < len(lines) else ""
            return f"{ln}: {detail}".rstrip(": ")
    picked = [
        ln
        for ln in lines
        if ln.startswith(("ERROR", "Compilation failed", "Internal compiler error"))
        or "Aborting" in ln
    ]
    if picked:
        return " | ".join(dict.fromkeys(picked))
    return lines[-1] if lines else "the compiler printed nothing"


def compile_if_available(
    tflite_path: str | Path,
    out_dir: str | Path,
    timeout: float = 600.0,
    prediction: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the real ``edgetpu_compiler -s -o OUT_DIR MODEL`` when it is on PATH.

    The compiler writes into a temporary folder inside ``out_dir``; ``*_edgetpu.tflite`` and
    ``*_edgetpu.log`` are moved into ``out_dir`` only after a successful compile.

    Args:
        tflite_path: the full-integer int8 model.
        out_dir: where the compiled model and its log go.
        timeout: seconds before the compiler is killed.
        prediction: the pre-flight report of the same model (``analyze`` / ``preflight``);
            when given, ``differences`` lists where the compiler disagrees with it.

    Returns:
        ``{"available": False, "reason": ...}`` when the compiler is missing; else
        ``{"available": True, "ok", "command", "returncode", "edgetpu_model", "log_file",
        "stdout_tail", "differences", ...parse_compiler_output fields...}``.
    """
    exe = shutil.which(COMPILER)
    if exe is None:
        return {
            "available": False,
            "reason": f"{COMPILER} not found on PATH (Coral's Debian package edgetpu-compiler, "
            "x86-64 Linux only); the report shows the pre-flight prediction instead",
        }
    tflite_path = Path(tflite_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".edgetpu-", dir=out_dir))
    cmd = [exe, "-s", "-o", str(work), str(tflite_path)]
    try:
        result = _run(cmd, timeout)
        result.update(_collect(work, out_dir, tflite_path, result))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if prediction is not None:
        result["differences"] = compare_with_prediction(result, prediction)
    return result


def _run(cmd: list[str], timeout: float) -> dict[str, Any]:
    base: dict[str, Any] = {"available": True, "command": cmd}
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=dict(os.environ)
        )
    except subprocess.TimeoutExpired as exc:
        text = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        parsed = parse_compiler_output(text)
        parsed.update(base, ok=False, returncode=None, stdout_tail=_tail(text))
        parsed["error"] = f"{cmd[0]} timed out after {timeout:g} s"
        return parsed
    except OSError as exc:
        return {**base, "ok": False, "returncode": None, "error": f"cannot run {cmd[0]}: {exc}"}
    text = proc.stdout + ("\n" + proc.stderr if proc.stderr else "")
    parsed = parse_compiler_output(text)
    ok = proc.returncode == 0 and parsed["compiled"]
    if not ok and parsed["error"] is None:
        parsed["error"] = f"exit code {proc.returncode}"
    parsed.update(base, ok=ok, returncode=proc.returncode, stdout_tail=_tail(text))
    return parsed


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _collect(work: Path, out_dir: Path, src: Path, result: dict[str, Any]) -> dict[str, Any]:
    """Move the compiler's files into ``out_dir`` (only after success) and read the model."""
    found: dict[str, Any] = {"edgetpu_model": None, "log_file": None, "cpu_ops_in_output": None}
    if not result.get("ok"):
        return found
    model = work / f"{src.stem}_edgetpu.tflite"
    if not model.is_file():
        result["ok"] = False
        result["error"] = f"compiler reported success but wrote no {model.name}"
        return found
    log = work / f"{src.stem}_edgetpu.log"
    if log.is_file():
        os.replace(log, out_dir / log.name)
        found["log_file"] = str(out_dir / log.name)
    os.replace(model, out_dir / model.name)
    found["edgetpu_model"] = str(out_dir / model.name)
    found["cpu_ops_in_output"] = _cpu_ops_of(out_dir / model.name)
    return found


def _cpu_ops_of(path: Path) -> list[dict[str, Any]] | None:
    """Ops left outside ``edgetpu-custom-op`` in a compiled model: exactly what runs on the CPU.

    None when the file cannot be read or holds no ``edgetpu-custom-op`` (then it says nothing
    about placement).
    """
    try:
        graph = read_tflite(path)
    except Exception:  # noqa: BLE001 - the compiled model is informative only
        return None
    if not any(op.name == "CUSTOM:edgetpu-custom-op" for op in graph.ops):
        return None
    return [
        {"op": op.name, "outputs": [t.name for t in op.outputs]}
        for op in graph.ops
        if op.name != "CUSTOM:edgetpu-custom-op"
    ]


def compare_with_prediction(compiled: dict[str, Any], prediction: dict[str, Any]) -> list[str]:
    """Where the compiler's result differs from the pre-flight prediction (empty = agrees).

    Args:
        compiled: ``compile_if_available`` / ``parse_compiler_output`` result.
        prediction: the pre-flight report of the same model.

    Returns:
        Human-readable differences, one per line.
    """
    if not compiled.get("ok"):
        return [
            f"the compiler failed ({compiled.get('error')}); the prediction was: "
            f"{prediction['summary']['verdict']}"
        ]
    diffs: list[str] = []
    predicted: dict[str, list[int]] = {}
    for e in prediction["ops"]:
        counts = predicted.setdefault(e["op"], [0, 0])
        counts[0 if e["delegated"] else 1] += 1
    actual: dict[str, list[int]] = {}
    for row in compiled.get("operators") or []:
        counts = actual.setdefault(row["op"], [0, 0])
        counts[0 if row["mapped"] else 1] += row["count"]
    for name in sorted(set(predicted) | set(actual)):
        p, a = predicted.get(name, [0, 0]), actual.get(name)
        if a is None:
            continue  # ops the compiler folded away or did not list
        if p != a:
            diffs.append(
                f"{name}: predicted {p[0]} on the TPU / {p[1]} on the CPU, "
                f"compiler mapped {a[0]} / left {a[1]} on the CPU"
            )
    n_sub = prediction.get("partition", {}).get("subgraphs")
    made = compiled.get("subgraphs")
    if made is not None and n_sub is not None and made != n_sub:
        diffs.append(f"subgraphs: predicted {n_sub}, compiler made {compiled['subgraphs']}")
    diffs += _compare_cpu_ops(compiled, prediction)
    return diffs


def _compare_cpu_ops(compiled: dict[str, Any], prediction: dict[str, Any]) -> list[str]:
    """Per-op comparison through the compiled model's CPU ops, matched by output tensor name."""
    cpu_ops = compiled.get("cpu_ops_in_output")
    if cpu_ops is None:
        return []
    actual = {name for op in cpu_ops for name in op["outputs"]}
    diffs = []
    for e in prediction["ops"]:
        outs = [t["name"] for t in e["outputs"]]
        on_cpu = any(name in actual for name in outs)
        label = f"op #{e['index']} {e['op']}"
        if on_cpu and e["delegated"]:
            diffs.append(f"{label}: predicted on the TPU, compiler left it on the CPU")
        elif not on_cpu and not e["delegated"]:
            diffs.append(f"{label}: predicted on the CPU, compiler mapped it")
    return diffs
