"""Mobile GPU (TFLite GPU delegate) compatibility.

Two sources, reported side by side:

* LiteRT's model analyzer with ``gpu_compatibility=True`` (the code behind
  ``tf.lite.experimental.Analyzer.analyze``; ``ai_edge_litert`` ships the same wrapper, so no
  TensorFlow import). It runs in a subprocess because the C++ analyzer can crash the process on
  a malformed file. Its per-op ``GPU COMPATIBILITY WARNING:`` lines are parsed. Measured here
  (TF 2.21 / ai-edge-litert 2.3): the shipped analyzer reports *every* model compatible, even
  with TOPK_V2 or Flex ops, so it cannot be trusted alone.
* edgeopt's own rules, ported from ``tensorflow/lite/tools/versioning/gpu_compatibility.cc``
  (the check the analyzer is meant to run: op list, fused SIGN_BIT, depthwise multiplier,
  FC weights format, softmax beta, strided-slice masks, constant int32 axes, paddings shape,
  cast types, gather indices) plus what the delegate needs at run time: static shapes (it is a
  static-shape delegate), rank <= 4 (BHWC tensors), no int64 / string / complex tensors.

Placement then follows TFLite's partitioner with the GPU delegate's default
``max_delegated_partitions = 1``: only the largest delegated subset runs on the GPU.
Int8 models are accepted (the delegate dequantizes and computes in fp16/fp32).
"""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

from edgeopt.targets import TargetProfile

from . import report as R
from .partition import partition
from .tflite_graph import OpInfo, TFLiteGraph

DELEGATE = "gpu"
_ANALYZER_TIMEOUT = 120.0

# gpu_compatibility.cc: CheckGpuDelegateCompatibility's switch (builtin ops it accepts).
GPU_OPS = frozenset(
    """ABS ADD ADD_N ATAN2 AVERAGE_POOL_2D BATCH_MATMUL CAST CEIL CONCATENATION CONV_2D COS CUMSUM
    DENSIFY DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE DIV DYNAMIC_UPDATE_SLICE ELU
    EMBEDDING_LOOKUP EQUAL EXP FLOOR FLOOR_DIV FLOOR_MOD FULLY_CONNECTED GATHER GELU GREATER
    GREATER_EQUAL HARD_SWISH LEAKY_RELU LESS LESS_EQUAL LOG LOGICAL_AND LOGISTIC LSTM MAXIMUM
    MAX_POOL_2D MEAN MINIMUM MIRROR_PAD MUL NEG NOT_EQUAL ONE_HOT PACK PAD PADV2 POW PRELU
    QUANTIZE REDUCE_MAX REDUCE_MIN REDUCE_PROD RELU RELU6 RELU_N1_TO_1 RESHAPE RESIZE_BILINEAR
    RESIZE_NEAREST_NEIGHBOR RSQRT SELECT SELECT_V2 SIGN SIN SLICE SOFTMAX SPACE_TO_DEPTH SPLIT
    SPLIT_V SQRT SQUARE SQUARED_DIFFERENCE STABLEHLO_CLAMP STRIDED_SLICE SUB SUM TANH TILE
    TRANSPOSE TRANSPOSE_CONV""".split()
)
GPU_CUSTOM_OPS = frozenset(
    {"Convolution2DTransposeBias", "MaxPoolingWithArgmax2D", "MaxUnpooling2D", "Resampler"}
)
_BAD_DTYPES = {"int64", "string", "complex64", "complex128", "float64", "resource", "variant"}
_ACT_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "MAX_POOL_2D", "MUL", "SUB", "DIV"}


def _param_reasons(op: OpInfo) -> list[str]:
    """The parameter checks of gpu_compatibility.cc that matter in practice."""
    name, opt = op.name, op.options
    msgs: list[str] = []
    if name in _ACT_OPS and opt.get("fused_activation_function") == "SIGN_BIT":
        msgs.append(f"{name} with fused SIGN_BIT activation")
    if name == "DEPTHWISE_CONV_2D" and op.inputs:
        mult = opt.get("depth_multiplier", 1)
        if mult != 1 and op.inputs[0].shape[-1:] != (1,):
            msgs.append(f"depth_multiplier {mult} with more than one input channel")
    if name == "FULLY_CONNECTED":
        if opt.get("weights_format", "DEFAULT") != "DEFAULT":
            msgs.append(f"FULLY_CONNECTED weights format {opt['weights_format']}")
        if op.inputs and op.inputs[0].is_constant:
            msgs.append("FULLY_CONNECTED with a constant input")
    if name == "SOFTMAX" and opt.get("beta", 1.0) != 1.0:
        msgs.append(f"SOFTMAX beta {opt['beta']} != 1")
    if name == "STRIDED_SLICE":
        for mask in ("ellipsis_mask", "new_axis_mask", "shrink_axis_mask"):
            if opt.get(mask):
                msgs.append(f"STRIDED_SLICE with {mask}")
    if name in ("SLICE", "STRIDED_SLICE") and op.inputs and len(op.inputs[0].shape) not in (3, 4):
        msgs.append(f"{name} on a {len(op.inputs[0].shape)}-D tensor (3-D or 4-D only)")
    if name in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD") and len(op.inputs) > 1:
        axes = op.inputs[1]
        if not axes.is_constant or axes.dtype != "int32":
            msgs.append(f"{name} axes must be a constant int32 tensor")
    if name in ("PAD", "PADV2", "MIRROR_PAD") and len(op.inputs) > 1:
        pads = op.inputs[1].shape
        if len(pads) != 2 or pads[0] not in (3, 4) or pads[1] != 2:
            msgs.append(f"{name} paddings shape {list(pads)} (3x2 or 4x2 only)")
        if name == "MIRROR_PAD" and opt.get("mode") not in (None, "REFLECT"):
            msgs.append("MIRROR_PAD other than REFLECT")
    if name == "CAST" and op.inputs and op.outputs:
        pair = (op.inputs[0].dtype, op.outputs[0].dtype)
        ok = {("bool", "float32"), ("bool", "float16"), ("float32", "bool"), ("float16", "bool")}
        ok |= {(a, b) for a in ("float32", "int32") for b in ("float32", "int32")}
        if pair not in ok:
            msgs.append(f"CAST from {pair[0]} to {pair[1]}")
    if name == "GATHER" and len(op.inputs) > 1:
        if op.inputs[0].dtype == "int32" or op.inputs[1].dtype != "int32":
            msgs.append("GATHER needs non-int32 data and int32 indices")
        elif len(op.inputs[1].shape) != 1:
            msgs.append("GATHER with indices that are not 1-D")
    if name == "ADD_N" and len(op.inputs) != 2:
        msgs.append(f"ADD_N with {len(op.inputs)} inputs (2 only)")
    if name == "DEQUANTIZE" and op.inputs and op.inputs[0].dtype == "int16":
        msgs.append("DEQUANTIZE of int16")
    return msgs


def op_reasons(op: OpInfo, target: TargetProfile) -> list[dict[str, str]]:
    """Why the GPU delegate would not take ``op`` (empty = it would).

    Args:
        op: one op.
        target: the mobile-GPU profile (shape rules).

    Returns:
        ``{"code", "message"}`` reasons.
    """
    reasons = []
    if op.name.startswith("CUSTOM:"):
        if op.name[7:] not in GPU_CUSTOM_OPS:
            reasons.append(
                R.reason(R.OP_NOT_SUPPORTED, f"custom op {op.name[7:]} has no GPU kernel")
            )
    elif op.name not in GPU_OPS:
        reasons.append(R.reason(R.OP_NOT_SUPPORTED, f"{op.name} has no GPU delegate kernel"))
    for t in (*op.inputs, *op.outputs):
        if t.is_constant:
            continue
        if t.dtype in _BAD_DTYPES:
            reasons.append(R.reason(R.UNSUPPORTED_DTYPE, f"tensor '{t.name}' is {t.dtype}"))
        # An unknown batch alone is fine: LiteRT allocates the stored shape (batch 1) and the
        # delegate is built for it (most Keras-converted models look like that). Other unknown
        # dimensions come from shape-dependent ops whose outputs are resized at run time.
        if target.shapes.static and any(d < 0 for d in t.shape_signature[1:]):
            reasons.append(
                R.reason(R.DYNAMIC_SHAPE, f"dynamic shape: tensor '{t.name}' is {R.shape_str(t)}")
            )
        if target.shapes.max_rank and len(t.shape_signature) > target.shapes.max_rank:
            reasons.append(
                R.reason(R.RANK_TOO_HIGH, f"tensor '{t.name}' has rank {len(t.shape_signature)}")
            )
    reasons += [R.reason(R.UNSUPPORTED_PARAM, m) for m in _param_reasons(op)]
    seen: set[str] = set()
    return [r for r in reasons if not (r["message"] in seen or seen.add(r["message"]))]


def _suggestion(op: OpInfo, reasons: list[dict[str, str]]) -> str | None:
    codes = {r["code"] for r in reasons}
    if R.DYNAMIC_SHAPE in codes:
        return "set static input shapes (batch 1) before converting: the GPU delegate needs them"
    if R.OP_NOT_SUPPORTED in codes:
        return f"replace {op.name} with GPU-supported ops or move it to the end of the graph"
    if R.UNSUPPORTED_DTYPE in codes:
        return "keep int64/string tensors out of the graph body (cast indices to int32)"
    if R.RANK_TOO_HIGH in codes:
        return "reshape to at most 4-D (BHWC) tensors"
    if reasons:
        return "change the parameters listed in the reason"
    return None


def run_analyzer(path: str) -> dict[str, Any]:
    """Run LiteRT's model analyzer with GPU compatibility in a subprocess and parse it.

    Args:
        path: the ``.tflite`` file.

    Returns:
        ``{"available", "tool", "compatible", "warnings": {op_index: message}, "error"}``.
    """
    code = (
        "import sys\n"
        "try:\n"
        "    from ai_edge_litert import _pywrap_analyzer_wrapper as a\n"
        "    tool = 'ai_edge_litert ModelAnalyzer'\n"
        "except ImportError:\n"
        "    from tensorflow.lite.python.analyzer_wrapper import _pywrap_analyzer_wrapper as a\n"
        "    tool = 'tf.lite.experimental.Analyzer'\n"
        "sys.stdout.write(tool + '\\n' + a.ModelAnalyzer(sys.argv[1], True, True))\n"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, path],
            capture_output=True,
            text=True,
            timeout=_ANALYZER_TIMEOUT,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"available": False, "error": f"analyzer did not run: {exc}"}
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return {"available": False, "error": f"analyzer failed: {why}"}
    tool, _, text = proc.stdout.partition("\n")
    return {"available": True, "tool": tool, **parse_analyzer(text)}


def parse_analyzer(text: str) -> dict[str, Any]:
    """Parse the analyzer's text dump: per-op ``GPU COMPATIBILITY WARNING`` lines (subgraph 0).

    Args:
        text: the analyzer output.

    Returns:
        ``{"compatible": bool | None, "warnings": {op_index: message}}``.
    """
    warnings: dict[int, str] = {}
    current: int | None = None
    subgraph = -1
    for line in text.splitlines():
        if m := re.match(r"^Subgraph#(\d+)", line):
            subgraph = int(m.group(1))
        elif m := re.match(r"^\s+Op#(\d+) ", line):
            current = int(m.group(1))
        elif line.startswith("GPU COMPATIBILITY WARNING: ") and "has GPU delegate" not in line:
            if subgraph == 0 and current is not None:
                warnings[current] = line.split(": ", 1)[1].strip()
    compatible = None
    if "looks compatible with GPU delegate" in text:
        compatible = True
    elif "has GPU delegate compatibility issues" in text:
        compatible = False
    return {"compatible": compatible, "warnings": warnings}


def analyze(graph: TFLiteGraph, target: TargetProfile, analyzer: bool = True) -> dict[str, Any]:
    """Predict which ops the TFLite GPU delegate runs.

    Args:
        graph: the parsed model.
        target: the mobile-GPU profile.
        analyzer: also run LiteRT's analyzer (a subprocess, ~1 s).

    Returns:
        The report dict with an ``analyzer`` block.
    """
    ana = run_analyzer(graph.path) if analyzer else {"available": False, "error": "not run"}
    warn = ana.get("warnings", {}) if ana.get("available") else {}
    own = []
    for op in graph.ops:
        reasons = op_reasons(op, target)
        if op.index in warn:
            reasons.append(R.reason(R.ANALYZER, f"LiteRT analyzer: {warn[op.index]}"))
        own.append(reasons)
    subsets = [s for s in partition(graph.ops, [not r for r in own]) if s.delegated]
    largest = max(subsets, key=lambda s: len(s.ops)) if subsets else None
    on_gpu = set(largest.ops) if largest else set()
    entries = []
    for op in graph.ops:
        if op.index in on_gpu:
            entries.append(R.op_entry(op, DELEGATE, True, [], None))
            continue
        reasons = own[op.index] or [
            R.reason(
                R.NOT_IN_DELEGATED_PARTITION,
                "supported, but outside the largest GPU partition (the delegate's default "
                "max_delegated_partitions is 1): runs on the CPU",
            )
        ]
        entries.append(R.op_entry(op, "cpu", False, reasons, _suggestion(op, own[op.index])))
    first = next((e for e in entries if not e["delegated"] and own[e["index"]]), None)
    notes = _notes(graph, ana, own)
    return {
        "delegate": DELEGATE,
        "ops": entries,
        "summary": R.summary(entries, "the GPU", R.blocking_info(first) if first else None),
        "analyzer": {k: ana.get(k) for k in ("available", "tool", "compatible", "error")}
        | {"warnings": {str(k): v for k, v in warn.items()}},
        "partitions": len(subsets),
        "notes": notes,
    }


def _notes(graph: TFLiteGraph, ana: dict[str, Any], own: list[list[dict[str, str]]]) -> list[str]:
    notes = []
    if any(t.shape_signature[:1] == (-1,) for t in graph.inputs):
        notes.append(
            "the batch dimension is dynamic: the GPU delegate is built for the stored batch (1); "
            "resizing the input re-initializes it"
        )
    if any(t.dtype in ("int8", "uint8") and t.quantization for t in graph.tensors):
        notes.append("int8 model: the GPU delegate dequantizes and computes in fp16/fp32")
    flagged = sum(1 for r in own if any(x["code"] != R.ANALYZER for x in r))
    if ana.get("available") and ana.get("compatible") and flagged:
        notes.append(
            f"LiteRT's analyzer reported the model GPU-compatible, but edgeopt's rules (ported "
            f"from gpu_compatibility.cc) flag {flagged} op(s); the analyzer in this LiteRT build "
            "reports every model compatible"
        )
    if not ana.get("available"):
        notes.append(f"LiteRT analyzer unavailable ({ana.get('error')}): rules only")
    return notes
