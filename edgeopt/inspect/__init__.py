"""Pre-flight target compatibility: which ops a target runs on its accelerator, and why not.

Entry points (stable; ``edgeopt convert`` and ``edgeopt inspect`` call them):

``preflight(model_path, target) -> dict``
    Analyse one ``.tflite`` or ``.onnx`` file for a ``TargetProfile``; the target's entry in
    the accelerator registry (``edgeopt.accelerators``) says which analysis module of this
    package runs (``edgetpu``, ``gpu``, ``xnnpack``, ``onnx_nodes``). No TensorFlow import:
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
from typing import TYPE_CHECKING, Any

from edgeopt_runtime.errors import ModelLoadError

from edgeopt.targets import TargetProfile

from . import report as R

if TYPE_CHECKING:
    from edgeopt.accelerators import Accelerator

__all__ = ["preflight", "SCHEMA"]

SCHEMA = R.SCHEMA
_FORMATS = {".tflite": "tflite", ".onnx": "onnx"}


def preflight(model_path: str | Path, target: TargetProfile,
              accelerator: Accelerator | None = None) -> dict[str, Any]:
    """Analyse one model file for one target.

    Args:
        model_path: a ``.tflite`` or ``.onnx`` file.
        target: the target profile.
        accelerator: the registry entry whose analysis runs (default: the target's for the
            file's format, ``edgeopt.accelerators.for_target``).

    Returns:
        The report dict described in this module's docstring.

    Raises:
        ModelLoadError: missing, unreadable, corrupt, or neither .tflite nor .onnx.
    """
    from edgeopt.accelerators import for_target

    path = Path(model_path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: file not found; expected a .tflite or .onnx model")
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ModelLoadError(
            f"{path}: expected a .tflite or .onnx file, got '{path.suffix or path.name}'"
        )
    body = (accelerator or for_target(target, fmt)).analyze(path, target)
    return {
        "schema": SCHEMA,
        "model": str(path),
        "format": fmt,
        "target": target.name,
        **body,
        "notes": body.get("notes", []),
    }
