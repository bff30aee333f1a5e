"""Per-layer error of TFLite int8 from the float source (TFLite's QuantizationDebugger).

The debug model runs every quantized op next to its float twin fed with the *same* dequantized
inputs, so each layer's error is its own, not the accumulated error of the layers before it. It
re-quantizes the source with the given calibration data, so it explains the source's sensitivity
(compare's ``--source``); artifacts are analysed by tensor matching (``tflite_tensors``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from edgeopt_runtime.errors import InputError, ModelLoadError

from .names import keras_layer_names, map_to_source, tflite_regex
from .stats import rank_rows, sqnr_from_power

TFLITE_METHOD = "tflite-quantization-debugger"
Sample = Mapping[str, np.ndarray]


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
        "layers": rank_rows(entries),
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
        "sqnr_db": sqnr_from_power(signal, noise),
        "keep_float": tflite_regex(tensor),
        "mse": float(stats["mean_squared_error"]),
        "max_abs_error": float(stats["max_abs_error"]),
        # RMSE in quantization steps: ~0.29 (1/sqrt(12)) is ideal rounding noise.
        "rmse_steps": math.sqrt(float(stats["mean_squared_error"])) / scale if scale else None,
        "scale": scale,
        "zero_point": zp,
        "num_elements": int(stats["num_elements"]),
    }
