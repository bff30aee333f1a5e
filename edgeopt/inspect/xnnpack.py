"""ARM CPU: which ops the XNNPACK delegate takes, and which stay on TFLite's built-in kernels.

Placement is *measured*: the model is loaded in a subprocess with LiteRT's interpreter, which
applies XNNPACK by default, and the ``DELEGATE`` nodes it creates are mapped back to the original
ops (walking back from each delegate node's outputs to its inputs). The XNNPACK delegate code is
the same on x86 and ARM, so this holds for the device as long as it runs the same
``ai-edge-litert`` version; a subprocess because LiteRT can crash on a malformed file.

When the measurement is unavailable, or to explain an op XNNPACK left out, a rule table is used.
Its source is the XNNPACK delegate README (tensorflow/lite/delegates/xnnpack/README.md,
"Floating-Point Operators" / "Quantized Operators"): float32 ops and 8-bit quantized ops it
lists, fused activations limited to NONE/RELU/RELU_N1_TO_1/RELU6, static weights and biases,
no dynamically allocated tensors. Newer XNNPACK builds take more quantized ops than the README
lists (measured here with ai-edge-litert 2.3: int8 MEAN is delegated; int8 SOFTMAX and
QUANTIZE are not), which is why the measurement wins when the two disagree.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from edgeopt.targets import TargetProfile

from . import report as R
from .tflite_graph import OpInfo, TFLiteGraph

DELEGATE = "xnnpack"
_TIMEOUT = 120.0

FLOAT_OPS = frozenset(
    """ABS ADD AVERAGE_POOL_2D CEIL CONCATENATION CONV_2D DEPTH_TO_SPACE DEPTHWISE_CONV_2D DIV ELU
    FULLY_CONNECTED FLOOR HARD_SWISH LEAKY_RELU LOGISTIC MAX_POOL_2D MAXIMUM MEAN MINIMUM MUL NEG
    PAD PRELU RELU RELU6 RELU_N1_TO_1 RESHAPE RESIZE_BILINEAR ROUND SOFTMAX SQRT SQUARE
    SQUARED_DIFFERENCE SUB""".split()
)
QUANT_OPS = frozenset(
    "ADD CONV_2D DEPTHWISE_CONV_2D ELU FULLY_CONNECTED LOGISTIC MAX_POOL_2D MUL PAD SUB".split()
)
_ACTS_OK = {"NONE", "RELU", "RELU_N1_TO_1", "RELU6"}


def rule_reasons(op: OpInfo) -> list[dict[str, str]]:
    """Why XNNPACK would not take ``op`` according to its README (empty = it would).

    Args:
        op: one op.

    Returns:
        ``{"code", "message"}`` reasons.
    """
    acts = [t for t in (*op.inputs, *op.outputs) if not t.is_constant]
    dtypes = {t.dtype for t in acts}
    if dtypes <= {"float32"}:
        table, kind = FLOAT_OPS, "float32"
    elif dtypes <= {"int8", "uint8"}:
        table, kind = QUANT_OPS, "8-bit quantized"
    else:
        return [
            R.reason(
                R.UNSUPPORTED_DTYPE,
                f"tensor types {sorted(dtypes)} (XNNPACK: float32 or 8-bit quantized)",
            )
        ]
    reasons = []
    if op.name not in table:
        reasons.append(R.reason(R.OP_NOT_SUPPORTED, f"{op.name} is not in XNNPACK's {kind} list"))
    act = op.options.get("fused_activation_function", "NONE")
    if act not in _ACTS_OK:
        reasons.append(R.reason(R.UNSUPPORTED_PARAM, f"fused {act} activation"))
    if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
        if any(not t.is_constant for t in op.inputs[1:]):
            reasons.append(R.reason(R.UNSUPPORTED_PARAM, f"{op.name} weights/bias not constant"))
    if op.name == "SOFTMAX" and op.options.get("beta", 1.0) != 1.0:
        reasons.append(R.reason(R.UNSUPPORTED_PARAM, "SOFTMAX beta != 1"))
    return reasons


def measure(path: str) -> dict[str, Any]:
    """Load the model with LiteRT (XNNPACK applied by default) in a subprocess.

    Args:
        path: the ``.tflite`` file.

    Returns:
        ``{"available": True, "delegate_nodes": [{"inputs": [...], "outputs": [...]}]}`` or
        ``{"available": False, "error": ...}``.
    """
    code = (
        "import json, sys\n"
        "from ai_edge_litert.interpreter import Interpreter\n"
        "it = Interpreter(model_path=sys.argv[1])\n"
        "it.allocate_tensors()  # XNNPACK is applied lazily, on the first allocation\n"
        "nodes = [{'inputs': [int(i) for i in d['inputs']], "
        "'outputs': [int(o) for o in d['outputs']]} "
        "for d in it._get_ops_details() if d['op_name'] == 'DELEGATE']\n"
        "sys.stdout.write(json.dumps(nodes))\n"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, path], capture_output=True, text=True, timeout=_TIMEOUT
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"available": False, "error": f"LiteRT did not run: {exc}"}
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return {"available": False, "error": f"LiteRT could not load the model: {why}"}
    try:
        return {"available": True, "delegate_nodes": json.loads(proc.stdout)}
    except ValueError:
        return {"available": False, "error": "unexpected LiteRT output"}


def covered_ops(graph: TFLiteGraph, nodes: list[dict[str, Any]]) -> set[int]:
    """Original op indices inside the given delegate nodes (walk back from outputs to inputs)."""
    producer = graph.producers()
    ops_by_index = {op.index: op for op in graph.ops}
    covered: set[int] = set()
    for node in nodes:
        boundary = set(node["inputs"])
        stack = [t for t in node["outputs"] if t in producer]
        while stack:
            i = producer[stack.pop()]
            if i in covered:
                continue
            covered.add(i)
            stack += [
                t.index
                for t in ops_by_index[i].inputs
                if t.index in producer and t.index not in boundary
            ]
    return covered


def _suggestion(op: OpInfo, reasons: list[dict[str, str]]) -> str | None:
    if op.name in ("QUANTIZE", "DEQUANTIZE"):
        return "float model IO: use int8 model IO to drop this conversion, or keep it at the edges"
    codes = {r["code"] for r in reasons}
    if R.UNSUPPORTED_PARAM in codes:
        return "use a NONE/RELU/RELU6 fused activation and constant weights"
    return f"{op.name} runs on TFLite's built-in CPU kernel; fine if it is cheap"


def analyze(graph: TFLiteGraph, target: TargetProfile, measured: bool = True) -> dict[str, Any]:
    """Report which ops XNNPACK takes on the ARM CPU target.

    Args:
        graph: the parsed model.
        target: the arm-cpu profile (unused beyond the name: XNNPACK has no shape rules here).
        measured: load the model with LiteRT to see what XNNPACK really takes.

    Returns:
        The report dict with a ``measurement`` block.
    """
    meas = measure(graph.path) if measured else {"available": False, "error": "not run"}
    rules = [rule_reasons(op) for op in graph.ops]
    if meas.get("available"):
        taken = covered_ops(graph, meas["delegate_nodes"])
        source = "measured with LiteRT's XNNPACK delegate"
    else:
        taken = {op.index for op in graph.ops if not rules[op.index]}
        source = "XNNPACK README rule table (measurement unavailable)"
    entries, disagree = [], []
    for op in graph.ops:
        i = op.index
        if i in taken:
            notes = (
                ["outside the README's list, but this XNNPACK build takes it"] if rules[i] else []
            )
            if rules[i]:
                disagree.append(i)
            entries.append(R.op_entry(op, DELEGATE, True, [], None, notes))
            continue
        reasons = rules[i] or [
            R.reason(R.NOT_IN_DELEGATED_PARTITION, "XNNPACK did not take this op in this build")
        ]
        entries.append(R.op_entry(op, "cpu", False, reasons, _suggestion(op, reasons)))
    first = next((e for e in entries if not e["delegated"]), None)
    notes = [
        "ops not taken by XNNPACK run on TFLite's built-in (optimized reference) CPU "
        "kernels; each switch between XNNPACK and them costs a little",
        f"placement {source}",
    ]
    flex = sorted({op.name[7:] for op in graph.ops if op.name.startswith("CUSTOM:Flex")})
    if flex:
        notes.append(
            f"Select TF ops {', '.join(flex)} need the Flex delegate on the device "
            "(ai-edge-litert alone cannot load this model)"
        )
    n_nodes = len(meas.get("delegate_nodes", [])) if meas.get("available") else None
    return {
        "delegate": DELEGATE,
        "ops": entries,
        "summary": R.summary(entries, "XNNPACK", R.blocking_info(first) if first else None),
        "measurement": {
            "available": bool(meas.get("available")),
            "source": source,
            "delegate_nodes": n_nodes,
            "error": meas.get("error"),
            "rule_table_disagrees_on": disagree,
        },
        "notes": notes,
    }
