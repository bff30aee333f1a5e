"""ONNX artifacts: which nodes are quantized, which stay float and why, and where ORT runs them.

Two views of the same model:

* the file as written (QDQ form): a compute node is *QDQ-wrapped* when its activation inputs
  come from ``DequantizeLinear`` nodes; ``QLinear*`` / ``*Integer`` nodes are QOperator int8
  nodes. A float node gets a reason: ORT's quantizer has no int8 rule for its op type (checked
  against the installed ``onnxruntime.quantization.registry``), or the quantizer left it out.
* what ONNX Runtime actually runs: the model is loaded in a subprocess with the target's
  execution providers (those this onnxruntime build has), graph optimizations at
  ``ORT_ENABLE_EXTENDED`` (QDQ fusion, no hardware-specific layout) and verbose logging. The
  optimized graph shows whether a QDQ-wrapped node became an int8 kernel (``QLinearConv``...)
  or still runs in float between DequantizeLinear and QuantizeLinear (ORT has no int8 kernel
  for it), and the session log's "Node placements" section says which provider runs each node.
  Fused nodes keep the name of the node they replaced, which is how the two views are joined.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from edgeopt_runtime.errors import ModelLoadError

from edgeopt.targets import TargetProfile

from . import report as R

_QDQ = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
_INT8_KERNELS = re.compile(r"^(QLinear\w+|QGemm|\w*Integer\w*|DynamicQuantizeMatMul|QAttention)$")
_NO_MATH = {
    "Shape", "Constant", "ConstantOfShape", "Identity", "Cast", "Size", "Range", "Unsqueeze",
    "Squeeze", "Reshape", "Flatten", "Transpose", "Concat", "Gather", "Slice", "Split",
}  # fmt: skip
_TIMEOUT = 300.0


def _quantizable_ops() -> set[str]:
    """Op types ORT's quantizer has an int8 rule for (QDQ, QOperator or dynamic)."""
    try:
        from onnxruntime.quantization import registry
    except ImportError:
        return set()
    return (
        set(registry.QDQRegistry)
        | set(registry.QLinearOpsRegistry)
        | set(registry.IntegerOpsRegistry)
    )


def _load(path: Path) -> Any:
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises many types for a bad file
        raise ModelLoadError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None


def classify(model: Any) -> list[dict[str, Any]]:
    """Per node of the file as written: QDQ-wrapped / QOperator int8 / float (with a reason).

    Args:
        model: a loaded ``onnx.ModelProto``.

    Returns:
        One dict per node: ``{"index", "op", "name", "domain", "form", "float_reason"}`` where
        form is "qdq", "qoperator", "quantize_op", "float" or "no_math".
    """
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    quantizable = _quantizable_ops()
    float_model = not any(n.op_type in _QDQ or _INT8_KERNELS.match(n.op_type) for n in graph.node)
    rows = []
    for i, node in enumerate(graph.node):
        acts = [x for x in node.input if x and x not in inits]
        fed_by_dq = [x for x in acts if x in producer and producer[x].op_type == "DequantizeLinear"]
        if node.op_type in _QDQ:
            form, why = "quantize_op", None
        elif _INT8_KERNELS.match(node.op_type):
            form, why = "qoperator", None
        elif acts and len(fed_by_dq) == len(acts):
            form, why = "qdq", None
        elif node.op_type in _NO_MATH:
            form, why = "no_math", None
        else:
            form = "float"
            if float_model:
                why = "the model is not quantized (no QuantizeLinear/DequantizeLinear nodes)"
            elif node.op_type not in quantizable:
                why = f"ORT's quantizer has no int8 rule for {node.op_type}"
            else:
                why = (
                    "its inputs are not quantized (excluded via nodes_to_exclude, dynamic "
                    "quantization, or no calibrated range)"
                )
        rows.append(
            {
                "index": i,
                "op": node.op_type,
                "name": node.name,
                "domain": node.domain or "ai.onnx",
                "form": form,
                "float_reason": why,
            }
        )
    return rows


_PROBE = r"""
import json, sys, onnx, onnxruntime as ort
path, opt_path, providers = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
so = ort.SessionOptions()
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
so.optimized_model_filepath = opt_path
so.log_severity_level = 0
so.log_verbosity_level = 0
ort.InferenceSession(path, so, providers=providers)
nodes = [[n.op_type, n.name] for n in onnx.load(opt_path, load_external_data=False).graph.node]
sys.stdout.write(json.dumps(nodes))
"""


def run_session(path: Path, providers: list[str]) -> dict[str, Any]:
    """Load the model in ORT (subprocess) and return the optimized nodes and their placement.

    Args:
        path: the ``.onnx`` file.
        providers: execution providers to request (must be available in this ORT build).

    Returns:
        ``{"available": True, "optimized": [[op_type, name]], "placement": {name: provider},
        "all_on": provider | None}`` or ``{"available": False, "error": ...}``.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="edgeopt-ort-") as tmp:
        opt = str(Path(tmp) / "optimized.onnx")
        args = [sys.executable, "-c", _PROBE, str(path), opt, json.dumps(providers)]
        try:
            proc = subprocess.run(args, capture_output=True, text=True, timeout=_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return {"available": False, "error": f"onnxruntime did not run: {exc}"}
    if proc.returncode != 0:
        err = [ln for ln in proc.stderr.splitlines() if "[E:" in ln or "Error" in ln]
        return {"available": False, "error": (err or ["onnxruntime failed"])[-1][-300:]}
    all_on, placement = parse_placement(proc.stderr)
    return {
        "available": True,
        "optimized": json.loads(proc.stdout),
        "placement": placement,
        "all_on": all_on,
    }


def parse_placement(log: str) -> tuple[str | None, dict[str, str]]:
    """Parse ORT's verbose "Node placements" section.

    Args:
        log: the session's stderr at verbose level.

    Returns:
        (provider when "All nodes placed on [X]", else None; {node name: provider}).
    """
    if m := re.search(r"All nodes placed on \[(\w+)\]", log):
        return m.group(1), {}
    placement: dict[str, str] = {}
    current = None
    for line in log.splitlines():
        if m := re.search(r"Node\(s\) placed on \[(\w+)\]", line):
            current = m.group(1)
        elif current and (m := re.search(r"\]\s+(\w+) \((.*)\)\s*$", line)):
            placement[m.group(2)] = current
    return None, placement


def analyze(path: Path, target: TargetProfile, run: bool = True) -> dict[str, Any]:
    """Report quantization form and execution-provider placement of every node.

    Args:
        path: the ``.onnx`` file.
        target: the target profile (``runtime.onnx_providers``).
        run: also load the model in ONNX Runtime (subprocess) to see the real kernels.

    Returns:
        The report dict (ops are nodes), see ``edgeopt.inspect``.
    """
    import onnxruntime as ort

    rows = classify(_load(path))
    wanted = list(target.runtime.onnx_providers) or ["CPUExecutionProvider"]
    have = set(ort.get_available_providers())
    usable = [p for p in wanted if p in have] or ["CPUExecutionProvider"]
    notes = [f"{p} is not in this onnxruntime build" for p in wanted if p not in have]
    sess = run_session(path, usable) if run else {"available": False, "error": "not run"}
    if not sess["available"]:
        notes.append(f"placement not measured ({sess['error']}): assumed {usable[0]}")
    kernels = {name: op for op, name in sess.get("optimized", [])}
    entries = [_entry(row, kernels, sess, usable[0]) for row in rows]
    quantized = sum(1 for e in entries if e["quantized"])
    float_math = sum(1 for e in entries if e["form"] == "float" or e["int8_kernel"] is False)
    first = next((e for e in entries if not e["delegated"]), None)
    summary = R.summary(entries, usable[0], R.blocking_info(first) if first else None)
    summary.update(quantized=quantized, float=float_math)
    summary["verdict"] += f"; {quantized} node(s) run int8, {float_math} compute node(s) in float"
    return {
        "delegate": usable[0],
        "ops": entries,
        "summary": summary,
        "runtime": {
            "providers": usable,
            "measured": sess["available"],
            "optimized_nodes": len(sess.get("optimized", [])),
            "int8_kernels": sorted({op for op in kernels.values() if _INT8_KERNELS.match(op)}),
        },
        "notes": notes,
    }


def _entry(
    row: dict[str, Any], kernels: dict[str, str], sess: dict[str, Any], default_ep: str
) -> dict[str, Any]:
    name, form = row["name"], row["form"]
    measured = sess.get("available", False)
    runs_on = sess.get("all_on") or sess.get("placement", {}).get(name) or default_ep
    kernel = kernels.get(name)
    int8_kernel: bool | None = None
    reasons, notes = [], []
    if form in ("qdq", "qoperator") and measured:
        if kernel is None:
            notes.append("fused into a neighbouring node by ORT's optimizer")
        else:
            int8_kernel = bool(_INT8_KERNELS.match(kernel))
            if not int8_kernel:
                reasons.append(
                    R.reason(
                        R.NOT_INT8,
                        f"QDQ-wrapped, but ORT runs it as float {kernel} between "
                        "DequantizeLinear and QuantizeLinear (no int8 kernel on this provider)",
                    )
                )
            elif kernel != row["op"]:
                notes.append(f"runs as the int8 kernel {kernel}")
    if form == "float":
        reasons.append(R.reason(R.NOT_INT8, f"stays float: {row['float_reason']}"))
    quantized = form == "qoperator" or (form == "qdq" and int8_kernel is not False)
    return {
        **row,
        "kernel": kernel,
        "int8_kernel": int8_kernel,
        "quantized": quantized,
        "runs_on": runs_on,
        "delegated": runs_on == default_ep,
        "reasons": reasons,
        "suggestion": _suggestion(row, int8_kernel),
        "notes": notes,
    }


def _suggestion(row: dict[str, Any], int8_kernel: bool | None) -> str | None:
    if int8_kernel is False:
        return (
            "exclude this node from quantization (nodes_to_exclude): its Q/DQ pair only adds work"
        )
    if row["form"] != "float":
        return None
    if row["float_reason"] and row["float_reason"].startswith("the model is not quantized"):
        return "convert with an int8 scheme (edgeopt convert) to quantize it"
    return "add this op type to op_types_to_quantize, or accept it as float"
