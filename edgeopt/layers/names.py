"""Tensor names -> source layers, keep-float regexes and the suggestion each row carries."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

_SUFFIX = re.compile(r"_\d+$")
# Ops that rarely quantize well in transformers (Optimum keeps them float; design.md anchors).
_FRAGILE_OPS = {"Softmax", "LayerNormalization", "ReduceMean", "Pow", "Sqrt", "Div", "Erf",
                "Gelu", "FastGelu", "SkipLayerNormalization", "SOFTMAX", "MEAN", "RSQRT",
                "SQUARED_DIFFERENCE", "GELU", "LOG_SOFTMAX", "EXP", "LOG"}
_WEIGHT_OPS = {"MatMul", "Gemm", "Conv", "ConvTranspose", "FULLY_CONNECTED", "CONV_2D",
               "DEPTHWISE_CONV_2D", "BATCH_MATMUL", "TRANSPOSE_CONV"}


def map_to_source(tensor_name: str, layer_names: Iterable[str]) -> str | None:
    """The source layer a converted tensor name comes from, or None.

    TFLite and tf2onnx names look like ``functional_1/conv2_1/Conv2D;functional_1/conv2_1/Relu``
    (Keras 3 adds ``_N`` to name scopes). The innermost path component naming a known layer,
    exactly or without that suffix, wins.
    """
    names = set(layer_names)
    first = tensor_name.split(";")[0].split(":")[0]
    for part in reversed(first.split("/")):
        if part in names:
            return part
        stripped = _SUFFIX.sub("", part)
        if stripped in names:
            return stripped
    return None


def keras_layer_names(model: Any) -> list[str]:
    """Names of all layers of a Keras model, nested models flattened."""
    out: list[str] = []
    for layer in getattr(model, "layers", []):
        out.append(layer.name)
        if hasattr(layer, "layers"):
            out.extend(keras_layer_names(layer))
    return out


def onnx_regex(nodes: Sequence[str]) -> str:
    """The ``--keep-float`` regex naming exactly these ONNX nodes (``(/|$)``: ORT's
    pre-processing names a fused node ``<name>/<Fusion>_...``)."""
    names = [n for n in dict.fromkeys(nodes) if n]
    if len(names) == 1:
        return f"^{re.escape(names[0])}(/|$)"
    return "^(" + "|".join(re.escape(n) for n in names) + ")(/|$)"


def tflite_regex(tensor: str) -> str:
    """The ``--keep-float`` regex naming one TFLite tensor (the backend matches op outputs)."""
    return f"^{re.escape(tensor)}$"


def suggestion(row: dict[str, Any], *, fmt: str, scheme: str) -> str:
    """What to do about one row, as a command-line fix.

    Args:
        row: a per-layer row (``op``, ``nonfinite``, ``origin``, ``keep_float``, ``scale_problem``).
        fmt: ``onnx`` | ``tflite``.
        scheme: ``static`` (QDQ / full int8), ``dynamic`` or ``float``.
    """
    keep = row.get("keep_float")
    flag = f"--keep-float '{keep}'" if keep else "keep this layer float"
    op = str(row.get("op") or "")
    if row.get("broken_scale") and not row.get("nonfinite"):
        return (f"broken quantization ({row['scale_problem']}): {flag}; a -inf / -FLT_MAX "
                "mask must stay float (`edgeopt convert` keeps such tensors float itself)")
    if row.get("nonfinite"):
        if not row.get("origin"):
            return f"inherits NaN/inf from upstream (fix the first NaN row: {row.get('cause')})"
        why = row.get("scale_problem") or "its quantized value is NaN/inf where float is finite"
        return (f"NaN/inf starts here ({why}): {flag}; a -inf / -FLT_MAX mask must stay "
                "float")
    if row.get("quantized") is False:
        return ("runs in float in this artifact: its error is noise from the quantized ops "
                "upstream (nothing to keep float here; see the rows feeding it)")
    if op in _FRAGILE_OPS:
        return f"{flag} (softmax / normalisation ops rarely survive int8)"
    if scheme == "static" and fmt == "onnx" and op in ("MatMul", "Gemm"):
        return (f"{flag}, or use dynamic quantization for the MatMuls ([onnx] scheme = "
                "\"dynamic\" in the target profile; `edgeopt tune` tries it)")
    if scheme == "dynamic" and op in ("MatMul", "Gemm"):
        return (f"{flag}, or per-channel weights ([onnx] per_channel = true) / the "
                "outlier-split transform (`edgeopt tune`)")
    if scheme == "static" and fmt == "tflite" and op in _WEIGHT_OPS:
        return f"{flag}, or dynamic-range quantization (scheme = \"dynamic\")"
    return flag
