"""Post-training compression of ONNX models: magnitude pruning and weight clustering of the
weight initializers (``Conv`` / ``ConvTranspose`` / ``Gemm`` / ``MatMul`` weights), no retraining.

ONNX files carry no training graph, so nothing here fine-tunes: the accuracy cost is measured
and reported instead. To prune or quantize-aware-train a PyTorch model with recovery, use the
framework's own tools before exporting (``torch.nn.utils.prune``, ``torch.ao.quantization``
QAT, or NNCF), then pass the exported ``.onnx`` to ``edgeopt convert``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from edgeopt_runtime.errors import ModelLoadError

from . import cluster
from .magnitude import magnitude_mask, sparsity_of
from .options import CompressOptionError, CompressOptions

WEIGHT_INPUT = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}
RETRAIN_HINT = (
    "ONNX files cannot be fine-tuned here; for pruning / QAT with retraining use your "
    "framework before export (PyTorch: torch.nn.utils.prune, torch.ao.quantization QAT, or NNCF), "
    "then pass the exported .onnx to edgeopt convert"
)


def refuse_unsupported(opts: CompressOptions, path: Path) -> None:
    """ONNX takes post-training --prune / --cluster only.

    Raises:
        CompressOptionError: a step that needs retraining or a Keras graph.
    """
    wanted = [name for name, on in (("--prune-channels", opts.prune_channels is not None),
                                    ("--distill", opts.distill), ("--qat", opts.qat)) if on]
    if wanted:
        raise CompressOptionError(
            f"{path}: {', '.join(wanted)} need(s) a trainable Keras model; ONNX sources take "
            f"post-training --prune and --cluster only. {RETRAIN_HINT}"
        )


def weight_initializers(model: Any, skip: tuple[re.Pattern[str], ...]) -> dict[str, str]:
    """Initializer name -> the first node that uses it as a weight."""
    inits = {t.name for t in model.graph.initializer}
    out: dict[str, str] = {}
    for node in model.graph.node:
        i = WEIGHT_INPUT.get(node.op_type)
        if i is None or len(node.input) <= i:
            continue
        name = node.input[i]
        label = node.name or name
        if name in inits and name not in out and not any(p.search(label) or p.search(name)
                                                         for p in skip):
            out[name] = label
    return out


def compress_onnx(model: Any, opts: CompressOptions, skip: tuple[re.Pattern[str], ...]
                  ) -> tuple[Any, list[dict[str, Any]]]:
    """Prune and/or cluster the weight initializers of a copy of ``model``.

    Returns:
        (the new ModelProto, one row per touched initializer).

    Raises:
        ModelLoadError: no weight initializer to compress.
    """
    import onnx
    from onnx import numpy_helper

    new = onnx.ModelProto()
    new.CopyFrom(model)
    targets = weight_initializers(new, skip)
    if not targets:
        raise ModelLoadError(
            "the ONNX model has no prunable layers (no Conv/Gemm/MatMul weight initializer)"
        )
    rows = []
    for init in new.graph.initializer:
        if init.name not in targets:
            continue
        w = numpy_helper.to_array(init)
        if not np.issubdtype(w.dtype, np.floating) or w.size < 2:
            continue
        before_unique = int(np.unique(w).size)
        if opts.prune is not None:
            w = w * magnitude_mask(w, opts.prune).astype(w.dtype)
        if opts.cluster is not None:
            c = cluster.cluster_kernel(w, opts.cluster, opts.prune is not None)
            w = c.weights().astype(w.dtype)
        init.CopyFrom(numpy_helper.from_array(w.astype(w.dtype), init.name))
        rows.append({"layer": targets[init.name], "weight": init.name, "shape": list(w.shape),
                     "size": int(w.size), "sparsity": round(sparsity_of(w), 4),
                     "unique_values": int(np.unique(w).size),
                     "unique_values_before": before_unique})
    return new, rows


def save_onnx(model: Any, path: Path) -> None:
    import onnx

    onnx.save_model(model, str(path))


def run_float(path: Path, inputs: list[np.ndarray], names: list[str]) -> list[np.ndarray]:
    """Outputs of an ONNX float model on stacked inputs (edgeopt_runtime, sample by sample
    when the batch dim is fixed)."""
    import edgeopt_runtime as rt

    model = rt.load(path, threads=1)
    outs = model.run_batch(dict(zip(names, inputs, strict=True)))
    return [np.asarray(outs[i]) for i in range(len(model.outputs))]
