"""Per-layer localisation of quantization error: which layers lose the most, worst first.

Two methods, one result layout (a ``per_layer`` section of the report, see
docs/report-schema.md):

* TFLite — ``tf.lite.experimental.QuantizationDebugger`` on the float source model (Keras or
  SavedModel) and calibration data. The debug model runs every quantized op next to its float
  twin fed with the *same* dequantized inputs, so each layer's error is its own, not the
  accumulated error of the layers before it.
* ONNX QDQ — ONNX Runtime's ``qdq_loss_debug`` approach: expose every intermediate tensor of the
  float and of the QDQ model as outputs, run both on the same inputs and match tensors by name.
  The ranking key is the local SQNR across each tensor's QuantizeLinear/DequantizeLinear pair;
  the cumulative SQNR (float model vs QDQ model at that tensor) is reported next to it, and
  weights quantized by ORT get their own entries.

Names are mapped back to source (Keras) layers where the tensor names carry them, which is the
case for TFLite conversion and tf2onnx. tensorflow / onnx are imported inside the functions.
"""

from __future__ import annotations

import logging
import math
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from edgeopt_runtime.errors import InputError, ModelLoadError

from edgeopt.drift import sqnr_db

log = logging.getLogger(__name__)

TFLITE_METHOD = "tflite-quantization-debugger"
ONNX_METHOD = "onnx-qdq-activation-matching"
Sample = Mapping[str, np.ndarray]


def unavailable(reason: str, method: str | None = None) -> dict[str, Any]:
    """The ``per_layer`` section when localisation could not run, with the reason."""
    return {"available": False, "method": method, "reason": reason, "layers": []}


def rank_layers(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sort entries worst (lowest SQNR) first, undefined SQNR last; set ``rank`` from 1."""

    def key(e: dict[str, Any]) -> tuple[int, float]:
        s = e.get("sqnr_db")
        if s is None or math.isnan(s):
            return (2, 0.0)
        return (1, 0.0) if math.isinf(s) else (0, s)

    ranked = sorted(entries, key=key)
    for i, e in enumerate(ranked, 1):
        e["rank"] = i
    return ranked


# --------------------------------------------------------------------------- name mapping

_SUFFIX = re.compile(r"_\d+$")


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


def _keras_output_layers(model: Any) -> list[str | None]:
    """The layer producing each model output (for converted names like ``Identity:0``)."""
    result: list[str | None] = []
    for t in getattr(model, "outputs", None) or []:
        history = getattr(t, "_keras_history", None)
        op = history[0] if history else None
        result.append(getattr(op, "name", None))
    return result


# --------------------------------------------------------------------------- TFLite


def _load_source(source: Any) -> tuple[Any, Any]:
    """(TFLiteConverter, keras model or None) for a Keras model object, .keras/.h5 or SavedModel."""
    from edgeopt.backends._frameworks import import_keras, import_tf

    tf = import_tf()

    if not isinstance(source, (str, Path)):
        return tf.lite.TFLiteConverter.from_keras_model(source), source
    path = Path(source)
    if not path.exists():
        raise ModelLoadError(f"{path}: no such source model (file or SavedModel directory)")
    if path.is_dir():
        if not (path / "saved_model.pb").exists():
            raise ModelLoadError(f"{path}: directory is not a SavedModel (no saved_model.pb)")
        return tf.lite.TFLiteConverter.from_saved_model(str(path)), None
    if path.suffix not in (".keras", ".h5"):
        raise ModelLoadError(
            f"{path}: per-layer TFLite analysis needs the float source model "
            f"(.keras, .h5 or a SavedModel directory), got {path.suffix or 'no extension'}"
        )
    model = import_keras().models.load_model(str(path), compile=False)
    return tf.lite.TFLiteConverter.from_keras_model(model), model


def _ordered_inputs(
    samples: Sequence[Sample], names: list[str]
) -> list[list[np.ndarray]]:
    """Samples as lists in the TFLite input order, batch dimension 1, float32."""

    def base(n: str) -> str:  # "serving_default_x:0" -> "x"
        return n.split(":")[0].removeprefix("serving_default_")

    out = []
    for s in samples:
        if len(s) != len(names):
            raise InputError(f"per-layer: samples have {len(s)} inputs, model has {len(names)}")
        if len(s) == 1:
            arrays = list(s.values())
        else:
            by_base = {base(k): v for k, v in s.items()}
            try:
                arrays = [by_base[base(n)] for n in names]
            except KeyError as exc:
                raise InputError(f"per-layer: no data for model input {exc}; data has "
                                 f"{sorted(s)}") from None
        out.append([np.asarray(a, np.float32) for a in arrays])
    return out


def tflite_layer_report(
    source: Any,
    samples: Sequence[Sample],
    *,
    calibration: Sequence[Sample] | None = None,
) -> dict[str, Any]:
    """Per-layer error of TFLite int8 quantization, worst layer first.

    Args:
        source: float Keras model (object, .keras/.h5 path) or SavedModel directory.
        samples: inputs to measure on, one dict (input name -> array with batch dim 1) each.
        calibration: inputs for the representative dataset; default ``samples``.

    Returns:
        ``{"available": True, "method", "metric", "scope", "num_samples", "layers": [...]}``,
        each layer ``{"rank", "tensor", "layer", "op", "kind", "sqnr_db", "mse",
        "max_abs_error", "rmse_steps", "scale", "zero_point", "num_elements"}``.

    Raises:
        ModelLoadError: the source is not a Keras model or SavedModel.
        InputError: samples do not match the model inputs.
    """
    from edgeopt.backends._frameworks import import_tf, stdout_to_stderr

    tf = import_tf()
    # TF and Keras print progress on stdout; `--json` promises stdout holds only the report.
    with stdout_to_stderr():
        converter, keras_model = _load_source(source)
        dbg = _run_debugger(tf, converter, samples,
                            calibration if calibration is not None else samples)
    layer_names = keras_layer_names(keras_model) if keras_model is not None else []
    outputs = _keras_output_layers(keras_model) if keras_model is not None else []
    entries = [_tflite_entry(dbg, name, stats, layer_names, outputs)
               for name, stats in dbg.layer_statistics.items()]
    return {
        "available": True,
        "method": TFLITE_METHOD,
        "metric": "sqnr_db",
        "scope": "per op: int8 op vs its float twin fed the same dequantized inputs "
                 "(the layer's own error, not accumulated)",
        "num_samples": len(samples),
        "layers": rank_layers(entries),
    }


def _run_debugger(tf: Any, converter: Any, samples: Sequence[Sample],
                  calib: Sequence[Sample]) -> Any:
    """Calibrate, build the debug model and run it with signal/noise power metrics."""
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    # Input order is only known after conversion; the first sample's order serves calibration.
    probe_names = list(calib[0]) if calib else []
    converter.representative_dataset = lambda: iter(_ordered_inputs(calib, probe_names))
    first = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=lambda: iter(_ordered_inputs(samples, probe_names))
    )
    debug_model = first.get_debug_quantized_model()
    names = [d["name"] for d in tf.lite.Interpreter(model_content=debug_model).get_input_details()]
    data = _ordered_inputs(samples, names)
    # Signal and noise power per sample, read straight from the float and int8 tensors; a second
    # debugger from the model bytes keeps all tensors alive (the converter path does not).
    opts = tf.lite.experimental.QuantizationDebugOptions(
        layer_direct_compare_metrics={"signal_power": _signal_power, "noise_power": _noise_power}
    )
    dbg = tf.lite.experimental.QuantizationDebugger(
        quant_debug_model_content=debug_model, debug_dataset=lambda: iter(data),
        debug_options=opts,
    )
    dbg.run()
    return dbg


def _signal_power(f: np.ndarray, q: np.ndarray, scale: float, zp: int) -> float:
    return float(np.mean(np.square(f.astype(np.float64))))


def _noise_power(f: np.ndarray, q: np.ndarray, scale: float, zp: int) -> float:
    deq = (q.astype(np.float64) - zp) * scale
    return float(np.mean(np.square(deq - f.astype(np.float64))))


def _tflite_entry(
    dbg: Any, verify_name: str, stats: Mapping[str, float],
    layer_names: list[str], outputs: list[str | None],
) -> dict[str, Any]:
    interp = dbg._quant_interpreter  # noqa: SLF001 - the debugger exposes op facts nowhere else
    op_info = dbg._numeric_verify_op_details[verify_name]  # noqa: SLF001
    q_idx = int(op_info["inputs"][0])
    detail = interp._get_tensor_details(q_idx, subgraph_index=0)  # noqa: SLF001
    op_name = interp._get_op_details(dbg._defining_op[q_idx])["op_name"]  # noqa: SLF001
    qp = detail["quantization_parameters"]
    scale = float(qp["scales"][0]) if len(qp["scales"]) else float("nan")
    zp = int(qp["zero_points"][0]) if len(qp["zero_points"]) else 0
    signal, noise = float(stats["signal_power"]), float(stats["noise_power"])
    tensor = detail["name"]
    layer = map_to_source(tensor, layer_names)
    if layer is None and len(outputs) == 1 and tensor.startswith(("StatefulPartitionedCall",
                                                                   "Identity")):
        layer = outputs[0]  # the model output tensor carries no layer name
    return {
        "tensor": tensor,
        "layer": layer,
        "op": op_name,
        "kind": "activation",
        "sqnr_db": _sqnr_from_power(signal, noise),
        "mse": float(stats["mean_squared_error"]),
        "max_abs_error": float(stats["max_abs_error"]),
        # RMSE in quantization steps: ~0.29 (1/sqrt(12)) is ideal rounding noise.
        "rmse_steps": math.sqrt(float(stats["mean_squared_error"])) / scale if scale else None,
        "scale": scale,
        "zero_point": zp,
        "num_elements": int(stats["num_elements"]),
    }


def _sqnr_from_power(signal: float, noise: float) -> float:
    if signal == 0.0:
        return float("nan")
    if noise == 0.0:
        return float("inf")
    return 10.0 * math.log10(signal / noise)


# --------------------------------------------------------------------------- ONNX QDQ


def onnx_layer_report(
    float_model: str | Path,
    qdq_model: str | Path,
    samples: Sequence[Sample],
    *,
    source_layers: Sequence[str] = (),
) -> dict[str, Any]:
    """Per-tensor error of an ONNX QDQ model against its float original, worst first.

    Args:
        float_model: the float .onnx file.
        qdq_model: its QDQ-quantized version (QuantizeLinear/DequantizeLinear pairs).
        samples: input dicts (input name -> array shaped as the model input).
        source_layers: names of the source model's layers, to map tensor names back.

    Returns:
        The ``per_layer`` section (see :func:`tflite_layer_report`). Activation entries carry
        ``sqnr_db`` (this tensor's own loss, see :func:`_local_sqnr`), ``sqnr_db_cumulative``
        (float vs QDQ model at the tensor) and ``sqnr_db_qdq`` (across the Q/DQ pair alone);
        quantized weights are listed under ``weights``. ``available`` is False with a reason
        when the model has no Q/DQ pairs.
    """
    import onnx
    from onnxruntime.quantization import qdq_loss_debug as qld

    qdq = onnx.load(str(qdq_model), load_external_data=False)
    if not any(n.op_type == "DequantizeLinear" for n in qdq.graph.node):
        return unavailable(f"{Path(qdq_model).name} has no DequantizeLinear nodes: not a QDQ "
                           "model (QOperator / float models cannot be matched per tensor)",
                           ONNX_METHOD)
    fmodel = onnx.load(str(float_model), load_external_data=False)
    feeds = [dict(s) for s in samples]
    with tempfile.TemporaryDirectory(prefix="edgeopt-layers-") as tmp:
        acts = {}
        for tag, path in (("float", float_model), ("qdq", qdq_model)):
            aug = Path(tmp) / f"{tag}_augmented.onnx"
            qld.modify_model_output_intermediate_tensors(str(path), str(aug))
            acts[tag] = qld.collect_activations(str(aug), feeds)
    matched = qld.create_activation_matching(acts["qdq"], acts["float"])
    entries = _onnx_activations(fmodel, matched, source_layers)
    return {
        "available": True,
        "method": ONNX_METHOD,
        "metric": "sqnr_db",
        "scope": "per tensor: SQNR this tensor adds on top of its inputs (estimated from "
                 "float-vs-QDQ SQNR at the tensor and at its inputs); sqnr_db_cumulative is "
                 "the float vs QDQ model SQNR at the tensor",
        "num_samples": len(feeds),
        "layers": rank_layers(entries),
        "weights": rank_layers(_onnx_weights(fmodel, qdq, source_layers)),
    }


def _concat(arrays: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.ravel(a).astype(np.float64) for a in arrays])


def _noise_ratio(sqnr: float) -> float:
    """noise / signal power from an SQNR in dB (0 for a perfect match)."""
    return 0.0 if math.isinf(sqnr) else 10.0 ** (-sqnr / 10.0)


def _onnx_activations(
    fmodel: Any, matched: Mapping[str, Mapping[str, Sequence[np.ndarray]]],
    source_layers: Sequence[str],
) -> list[dict[str, Any]]:
    producers = {out: n for n in fmodel.graph.node for out in n.output}
    consts = {i.name for i in fmodel.graph.initializer}
    cumulative: dict[str, float] = {}
    entries: dict[str, dict[str, Any]] = {}
    for name, m in matched.items():
        pre, post = _concat(m["pre_qdq"]), _concat(m["post_qdq"])
        node = producers.get(name)
        entry: dict[str, Any] = {
            "tensor": name,
            "layer": map_to_source(node.name if node else name, source_layers)
            or (node.name if node else None),
            "op": node.op_type if node else "graph input",
            "kind": "activation",
            "sqnr_db_qdq": sqnr_db(pre, post),
            "num_elements": int(pre.size // max(1, len(m["pre_qdq"]))),
        }
        if m.get("float"):
            ref = _concat(m["float"])
            cumulative[name] = entry["sqnr_db_cumulative"] = sqnr_db(ref, post)
            entry["mse"] = float(np.mean(np.square(post - ref)))
            entry["max_abs_error"] = float(np.max(np.abs(post - ref))) if ref.size else 0.0
        entries[name] = entry
    for name, entry in entries.items():
        entry["sqnr_db"] = _local_sqnr(name, cumulative, producers, consts, entry)
    return list(entries.values())


def _local_sqnr(
    name: str, cumulative: Mapping[str, float], producers: Mapping[str, Any],
    consts: set[str], entry: Mapping[str, Any],
) -> float:
    """SQNR of the noise this tensor adds on top of the noisiest of its inputs.

    Noise-to-signal ratios of independent errors add, so ``r_own = r_out - max(r_in)`` with
    ``r = 10^(-SQNR/10)``; an op that only passes noise on gets ``inf``. Inputs are the nearest
    matched tensors upstream (walking through tensors the QDQ graph fused away, like a ReLU).
    Without a float twin of the tensor, the Q/DQ pair's own SQNR is used.
    """
    if name not in cumulative:
        return entry["sqnr_db_qdq"]
    out = cumulative[name]
    if math.isnan(out):
        return out
    r_in = max((_noise_ratio(cumulative[t]) for t in _matched_inputs(name, cumulative,
                                                                      producers, consts)
                if not math.isnan(cumulative[t])), default=0.0)
    own = _noise_ratio(out) - r_in
    return float("inf") if own <= 0 else -10.0 * math.log10(own)


def _matched_inputs(
    name: str, matched: Mapping[str, float], producers: Mapping[str, Any], consts: set[str]
) -> set[str]:
    """Nearest upstream tensors of ``name`` that have a float-vs-QDQ SQNR."""
    found: set[str] = set()
    node = producers.get(name)
    stack = list(node.input) if node else []
    seen: set[str] = set()
    while stack:
        t = stack.pop()
        if not t or t in seen or t in consts:
            continue
        seen.add(t)
        if t in matched:
            found.add(t)
        elif t in producers:
            stack.extend(producers[t].input)
    return found


def _onnx_weights(fmodel: Any, qdq: Any, source_layers: Sequence[str]) -> list[dict[str, Any]]:
    """Float vs dequantized value of every constant feeding a DequantizeLinear.

    Done here rather than with ORT's ``create_weight_matching``, which subtracts the zero point
    in int8 and wraps around (a bias of 0.1 with zero point -128 reads back as -0.0004).
    """
    from onnx import numpy_helper

    q_inits = {i.name: i for i in qdq.graph.initializer}
    f_inits = {i.name: i for i in fmodel.graph.initializer}
    out = []
    for node in qdq.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in q_inits:
            continue
        qname = node.input[0]
        fname = qname.removesuffix("_quantized")
        if fname not in f_inits or node.input[1] not in q_inits:
            continue
        q = numpy_helper.to_array(q_inits[qname]).astype(np.float64)
        scale = numpy_helper.to_array(q_inits[node.input[1]]).astype(np.float64)
        zp = (numpy_helper.to_array(q_inits[node.input[2]]).astype(np.float64)
              if len(node.input) > 2 and node.input[2] in q_inits else np.zeros_like(scale))
        if scale.size > 1:  # per channel along the node's axis (default 1)
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            shape = [1] * q.ndim
            shape[axis] = -1
            scale, zp = scale.reshape(shape), zp.reshape(shape)
        deq = (q - zp) * scale
        f = numpy_helper.to_array(f_inits[fname]).astype(np.float64)
        out.append({
            "tensor": fname,
            "layer": map_to_source(fname, source_layers) or fname,
            "op": "weight",
            "kind": "weight",
            "per_channel": bool(scale.size > 1),
            "sqnr_db": sqnr_db(f, deq),
            "max_abs_error": float(np.max(np.abs(deq - f))) if f.size else 0.0,
            "num_elements": int(f.size),
        })
    return out
