"""Pre-flight target compatibility: which ops a target runs on its accelerator, and why not.

Entry points (stable; ``edgeopt convert`` and ``edgeopt inspect`` call them):

``preflight(model_path, target) -> dict``
    Analyse one ``.tflite`` or ``.onnx`` file for a ``TargetProfile``. No TensorFlow import:
    TFLite files are read with ``ai_edge_litert``'s flatbuffer schema, ONNX files with
    ``onnx`` / ``onnxruntime``. Raises ``ModelLoadError`` for a missing / corrupt file.

``edgeopt.inspect.edgetpu.compile_if_available(tflite_path, out_dir, timeout=600,
prediction=None) -> dict``
    Runs the real ``edgetpu_compiler`` when it is on PATH (see that module).

Report schema ``edgeopt.inspect/1`` (JSON-ready dict)::

    {
      "schema": "edgeopt.inspect/1",
      "model": "/path/model.tflite", "format": "tflite" | "onnx",
      "target": "edgetpu",
      "delegate": "edgetpu" | "gpu" | "xnnpack" | "none" | "<ONNX execution provider>",
      "summary": {
        "delegate": "the Edge TPU", "ops": 70, "delegated": 68, "cpu": 2,
        "fully_delegated": false,
        "first_blocking_op": null | {"index", "op", "reasons", "suggestion"},
        "verdict": "68 of 70 ops run on the Edge TPU, 2 on the CPU"
      },
      "ops": [                                   # execution order
        {"index": 0, "op": "CONV_2D", "version": 3,
         "inputs":  [{"index", "name", "dtype", "shape", "shape_signature", "quantization",
                      "constant_bytes"?, "values"?}],
         "outputs": [...], "options": {"stride_w": 1, "fused_activation_function": "RELU6", ...},
         "runs_on": "edgetpu" | "gpu" | "xnnpack" | "cpu",
         "delegated": true,
         "reasons": [{"code": "not_int8", "message": "not int8: tensor 'x' is float32"}],
         "suggestion": null | "replace HARD_SWISH with RELU6 ...",
         "notes": []}
      ],
      "partition": {...},                        # edgetpu only, see edgetpu._partition_block
      "analyzer": {...},                         # mobile GPU only, see gpu.analyze
      "notes": ["..."]                           # model-level remarks
    }

For ONNX models each entry of ``ops`` is a node: ``{"index", "op" (op_type), "name", "domain",
"quantized", "float_reason", "runs_on" (execution provider), "delegated", "reasons",
"suggestion", "notes"}`` and ``summary`` adds ``quantized`` / ``float`` counts.

Reason codes: op_not_supported, not_int8, dynamic_shape, too_many_non_unit_dims, rank_too_high,
unsupported_param, after_unmapped_op, not_in_delegated_partition, unsupported_dtype.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeopt_runtime.errors import ModelLoadError

from edgeopt.targets import TargetProfile

from . import report as R

__all__ = ["preflight", "SCHEMA"]

SCHEMA = R.SCHEMA


def preflight(model_path: str | Path, target: TargetProfile) -> dict[str, Any]:
    """Analyse one model file for one target.

    Args:
        model_path: a ``.tflite`` or ``.onnx`` file.
        target: the target profile (its delegate / providers decide which analysis runs).

    Returns:
        The report dict described in this module's docstring.

    Raises:
        ModelLoadError: missing, unreadable, corrupt, or neither .tflite nor .onnx.
    """
    path = Path(model_path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: file not found; expected a .tflite or .onnx model")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from .onnx_nodes import analyze as analyze_onnx

        body = analyze_onnx(path, target)
        fmt = "onnx"
    elif suffix == ".tflite":
        body = _tflite(path, target)
        fmt = "tflite"
    else:
        raise ModelLoadError(
            f"{path}: expected a .tflite or .onnx file, got '{suffix or path.name}'"
        )
    return {
        "schema": SCHEMA,
        "model": str(path),
        "format": fmt,
        "target": target.name,
        **body,
        "notes": body.get("notes", []),
    }


def _tflite(path: Path, target: TargetProfile) -> dict[str, Any]:
    from .tflite_graph import read_tflite

    graph = read_tflite(path)
    delegate = target.runtime.tflite_delegate.value
    if delegate == "edgetpu":
        from .edgetpu import analyze
    elif delegate == "gpu":
        from .gpu import analyze
    elif delegate == "xnnpack":
        from .xnnpack import analyze
    else:
        return _cpu_only(graph)
    return analyze(graph, target)


def _cpu_only(graph: Any) -> dict[str, Any]:
    entries = [R.op_entry(op, "cpu", False, [], None) for op in graph.ops]
    result = {"delegate": "none", "ops": entries, "summary": R.summary(entries, "a delegate", None)}
    result["notes"] = ["the target uses no delegate: every op runs on TFLite's CPU kernels"]
    return result
