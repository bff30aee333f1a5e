"""Sparsity pre-flight: would XNNPACK's sparse inference path run this pruned model faster?

XNNPACK's conditions (TFLite ``delegates/xnnpack/README.md``, "Sparse Inference", and
XNNPACK's ``xnn_is_chw_compatible_config``), checked here on a float TFLite build of the model:

1. weights stored sparse: the converter with ``Optimize.EXPERIMENTAL_SPARSITY`` writes them as
   ``DENSIFY`` ops (the delegate then sets ``XNN_FLAG_HINT_SPARSE_INFERENCE``);
2. float only: XNNPACK has no sparse int8 kernels, so int8 artifacts always run dense;
3. the sparse subgraph starts with a 3x3 stride-2 ``CONV_2D`` on 3 input channels, ends with a
   spatial ``MEAN`` (or ``DEPTH_TO_SPACE``), and holds only 1x1 ``CONV_2D`` (at least 2/3 of
   their weights zero), 3x3 / 5x5 ``DEPTHWISE_CONV_2D``, ``ADD``/``MUL``, ``RESIZE_BILINEAR``
   and unary elementwise ops;
4. the processor: XNNPACK enables its CHW (sparse) kernels on ARM; on x86 only without AVX
   ("on processors with AVX ISA dense inference is expected to be faster than sparse").

So on an x86 host with AVX (this one) the path is off whatever the model; the verdict for an
ARM device is what conditions 1-3 say.
"""

from __future__ import annotations

import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

SPARSE_OK_OPS = {
    "CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MUL", "MEAN", "RESIZE_BILINEAR", "DEPTH_TO_SPACE",
    "ABS", "CEIL", "ELU", "FLOOR", "HARD_SWISH", "LEAKY_RELU", "LOGISTIC", "NEG", "RELU",
    "RELU6", "RELU_N1_TO_1", "ROUND", "SIGMOID", "SQUARE", "DENSIFY",
}
MIN_1X1_SPARSITY = 2 / 3


def host_sparse_path() -> dict[str, Any]:
    """Whether XNNPACK's sparse kernels are enabled on this machine, and why."""
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "i386", "i686"):
        avx = _cpu_has("avx")
        return {"machine": machine, "avx": avx, "enabled": not avx,
                "why": "x86 with AVX: XNNPACK disables its sparse (CHW) kernels, dense is faster"
                if avx else "x86 without AVX: XNNPACK's SSE sparse kernels are enabled"}
    if machine.startswith(("arm", "aarch64")):
        return {"machine": machine, "avx": None, "enabled": True,
                "why": "ARM: XNNPACK enables its sparse (CHW) kernels"}
    return {"machine": machine, "avx": None, "enabled": False,
            "why": f"unknown processor {machine!r}"}


def _cpu_has(flag: str) -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return flag in line.split(":", 1)[1].split()
    return False


def preflight(keras_model: Any, conv1x1_sparsity: float | None) -> dict[str, Any]:
    """The sparse-path verdict for a (pruned) float Keras model.

    Args:
        keras_model: the compressed float model.
        conv1x1_sparsity: fraction of zero weights over its 1x1 convolutions (None: none).
    """
    host = host_sparse_path()
    try:
        ops, densify = _sparse_float_ops(keras_model)
    except Exception as exc:  # the converter's sparsity pass is experimental; say it failed
        return {"verdict": f"could not build a sparse float TFLite: {str(exc).splitlines()[0]}",
                "arm_device": False, "this_host": host, "int8": _INT8}
    checks = _pattern(ops)
    checks["weights_stored_sparse"] = {"ok": densify > 0, "densify_ops": densify}
    ok_1x1 = conv1x1_sparsity is not None and conv1x1_sparsity >= MIN_1X1_SPARSITY
    checks["conv1x1_sparsity"] = {"ok": ok_1x1, "value": conv1x1_sparsity,
                                  "needs": round(MIN_1X1_SPARSITY, 4)}
    failed = [k for k, v in checks.items() if not v["ok"]]
    arm = not failed
    verdict = ("on an ARM device XNNPACK would run the float model's sparse subgraph with its "
               "sparse kernels" if arm else
               "XNNPACK's sparse path would not apply on an ARM device: " + "; ".join(
                   _why(k, checks[k]) for k in failed))
    if not host["enabled"]:
        verdict += f"; off on this host ({host['why']})"
    return {"verdict": verdict, "arm_device": arm, "checks": checks, "this_host": host,
            "int8": _INT8}


_INT8 = "int8 artifacts run dense: XNNPACK has no sparse int8 kernels (size is the gain)"


def _why(key: str, check: dict[str, Any]) -> str:
    texts = {
        "weights_stored_sparse": "no DENSIFY ops (the converter stored the weights dense)",
        "conv1x1_sparsity": f"1x1 convolutions are {check.get('value')} sparse, need >= 2/3"
        if check.get("value") is not None else "no 1x1 convolutions",
        "starts_with_3x3_s2_conv": f"the graph starts with {check.get('found')}, not a 3x3 "
        "stride-2 CONV_2D on 3 channels",
        "ends_with_spatial_mean": "no spatial MEAN / DEPTH_TO_SPACE ends the conv stack",
        "only_supported_ops": f"ops outside the sparse set: {check.get('found')}",
    }
    return texts.get(key, key)


def _sparse_float_ops(model: Any) -> tuple[list[Any], int]:
    """Ops of the float TFLite built with EXPERIMENTAL_SPARSITY, and its DENSIFY count."""
    from ..backends._frameworks import import_tf, stdout_to_stderr
    from ..inspect.tflite_graph import read_tflite

    tf = import_tf()
    with tempfile.TemporaryDirectory(prefix="edgeopt-sparse-") as tmp, stdout_to_stderr():
        model.export(str(Path(tmp) / "sm"), verbose=False)
        conv = tf.lite.TFLiteConverter.from_saved_model(str(Path(tmp) / "sm"))
        conv.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
        data = conv.convert()
        path = Path(tmp) / "sparse.tflite"
        path.write_bytes(data)
        graph = read_tflite(path)
    ops = list(graph.ops)
    return ops, sum(1 for op in ops if op.name == "DENSIFY")


def _pattern(ops: list[Any]) -> dict[str, dict[str, Any]]:
    compute = [op for op in ops if op.name not in ("DENSIFY", "QUANTIZE", "DEQUANTIZE")]
    first = compute[0] if compute else None
    start_ok, found = False, first.name if first else "nothing"
    if first is not None and first.name == "CONV_2D" and len(first.inputs) > 1:
        w = first.inputs[1].shape  # [O, kh, kw, I]
        opts = first.options
        start_ok = (len(w) == 4 and w[1] == 3 and w[2] == 3 and w[3] == 3
                    and opts.get("stride_h") == 2 and opts.get("stride_w") == 2)
        found = f"CONV_2D {w[1]}x{w[2]} stride {opts.get('stride_h')} on {w[3]} channels"
    names = [op.name for op in compute]
    end_ok = "MEAN" in names or "DEPTH_TO_SPACE" in names
    cut = next((i for i, n in enumerate(names) if n in ("MEAN", "DEPTH_TO_SPACE")), len(names))
    outside = sorted({n for n in names[:cut] if n not in SPARSE_OK_OPS})
    return {
        "starts_with_3x3_s2_conv": {"ok": start_ok, "found": found},
        "ends_with_spatial_mean": {"ok": end_ok},
        "only_supported_ops": {"ok": not outside, "found": outside},
    }


def conv1x1_sparsity(model: Any) -> float | None:
    """Fraction of zeros over all 1x1 Conv2D kernels of a Keras model (None: none)."""
    from .graph import walk_layers

    zeros = total = 0
    for _path, layer in walk_layers(model):
        if type(layer).__name__ == "Conv2D" and tuple(layer.kernel.shape[:2]) == (1, 1):
            k = np.asarray(layer.kernel.numpy())
            zeros += int(np.count_nonzero(k == 0))
            total += k.size
    return round(zeros / total, 4) if total else None
