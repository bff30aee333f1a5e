"""TFLite backend: ``tf.lite.TFLiteConverter`` from a SavedModel signature.

Precisions: ``int8`` (full integer with a representative dataset), ``int16x8``, ``float16``,
``dynamic`` (int8 weights, float activations) and ``float32``.

Two TF 2.21 facts shape this module (measured):

* ``supported_ops = [TFLITE_BUILTINS_INT8]`` does NOT make the converter fail on an op without
  an int8 kernel: it silently leaves that op in float between DEQUANTIZE/QUANTIZE. So on targets
  without float fallback we inspect the produced model and refuse it (``UnsupportedOpError``).
* ``--keep-float``: the converter has no public per-layer denylist. The same mechanism
  ``tf.lite.experimental.QuantizationDebugger`` uses does work: calibrate only
  (``_experimental_calibrate_only``), then ``convert.mlir_quantize(..., denylisted_nodes=...)``
  on the calibrated model; the IO type is then set with ``util.modify_model_io_type`` (the
  converter's own last step), because ``mlir_quantize`` cannot emit uint8 IO.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from edgeopt_runtime.errors import UnsupportedOpError

from ..sources import ModelSource
from ..targets import Scheme, TargetProfile
from . import Backend, BuildRequest, Built, Shapes, matching, register_backend
from ._frameworks import import_tf, stdout_to_stderr
from ._tfgraph import SIGNATURE, saved_model

_EDGE_OPS = {"QUANTIZE", "DEQUANTIZE"}
_FLOAT = {np.float32, np.float16, np.float64}
# Lines of TF converter errors that say what went wrong (the rest is MLIR location noise).
_ERROR_LINE = re.compile(r"error: (.*)")


class TFLiteBackend:
    """Keras / SavedModel sources to ``.tflite``."""

    name = "tflite"
    extension = ".tflite"

    def refuses(self, source: ModelSource) -> str | None:
        if source.format == "onnx":
            return (
                "ONNX sources cannot be converted to TFLite by edgeopt (no ONNX-to-TF converter "
                "is bundled); convert the original Keras/SavedModel model, or use onnx2tf first"
            )
        return None

    def precisions(self, profile: TargetProfile) -> list[str]:
        order = [profile.quantization.scheme, *profile.tflite.extra_variants]
        return list(dict.fromkeys(s.value for s in order))

    def build_float(self, source: ModelSource, input_shapes: Shapes, workdir: Path) -> Path:
        out = workdir / f"float32_{_shape_tag(input_shapes)}.tflite"
        if not out.is_file():
            converter = _converter(source, input_shapes, workdir)
            out.write_bytes(_convert(converter, source, "float32"))
        return out

    def build(self, req: BuildRequest) -> Built:
        tf = import_tf()
        converter = _converter(req.source, req.input_shapes, req.workdir)
        details: dict[str, Any] = {"io_dtype": "float32"}
        notes: list[str] = []
        scheme = Scheme(req.precision)
        if scheme in (Scheme.INT8, Scheme.INT16X8):
            _integer_options(tf, converter, req, scheme)
            if scheme is Scheme.INT8:
                details["io_dtype"] = req.profile.tflite.io_dtype.value
            if req.calib_method.value != "minmax":
                notes.append(
                    f"the TFLite converter calibrates with min/max only; "
                    f"{req.calib_method.value!r} applies to the ONNX artifact"
                )
            if req.keep_float:
                data = _quantize_with_denylist(tf, converter, req, details)
            else:
                data = _convert(converter, req.source, req.precision)
        elif scheme is Scheme.FLOAT16:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
            data = _convert(converter, req.source, req.precision)
        elif scheme is Scheme.DYNAMIC:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            data = _convert(converter, req.source, req.precision)
        else:
            data = _convert(converter, req.source, req.precision)
        req.out_path.write_bytes(data)
        ops = op_dtypes(data)
        float_ops = [op for op, float_io in ops if float_io and op not in _EDGE_OPS]
        details["ops"] = dict(Counter(op for op, _ in ops))
        details["float_ops"] = dict(Counter(float_ops))
        if scheme in (Scheme.INT8, Scheme.INT16X8) and not req.profile.quantization.float_fallback:
            _refuse_float_ops(req, float_ops)
        return Built(req.out_path, self.name, req.precision, details, notes)


def _shape_tag(shapes: Shapes) -> str:
    return "dynamic" if any(d is None for s in shapes.values() for d in s) else "static"


def _converter(source: ModelSource, shapes: Shapes, workdir: Path) -> Any:
    tf = import_tf()
    folder = saved_model(source, shapes, workdir)
    key = source.signature_key if folder == source.path else SIGNATURE
    with stdout_to_stderr():
        return tf.lite.TFLiteConverter.from_saved_model(str(folder), signature_keys=[key])


def _representative(req: BuildRequest) -> Any:
    """The converter's representative dataset: dicts keyed by signature input names."""
    dtypes = {s.name: np.dtype(s.dtype) for s in req.source.inputs}

    def gen() -> Any:
        for sample in req.calib or ():
            yield {k: np.asarray(v, dtype=dtypes[k]) for k, v in sample.items()}

    return gen


def _integer_options(tf: Any, converter: Any, req: BuildRequest, scheme: Scheme) -> None:
    profile = req.profile
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative(req)
    converter._experimental_disable_per_channel = not profile.quantization.per_channel  # noqa: SLF001
    if scheme is Scheme.INT16X8:
        ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    else:
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        io = profile.tflite.io_dtype.value
        if io != "float32":
            converter.inference_input_type = getattr(tf, io)
            converter.inference_output_type = getattr(tf, io)
    if profile.quantization.float_fallback:
        ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
    converter.target_spec.supported_ops = ops


def _convert(converter: Any, source: ModelSource, precision: str) -> bytes:
    """Run the converter; converter failures become one-line ``UnsupportedOpError``s."""
    try:
        with stdout_to_stderr():
            return converter.convert()
    except Exception as exc:  # ConverterError, RuntimeError, ValueError from the calibrator
        if type(exc).__name__ in ("MemoryError",):
            raise
        raise UnsupportedOpError(
            f"{source.path}: TFLite {precision} conversion failed: {_error_summary(exc)}"
        ) from None


def _error_summary(exc: BaseException) -> str:
    text = str(exc)
    found = _ERROR_LINE.findall(text)
    line = found[0] if found else (text.strip().splitlines() or [type(exc).__name__])[-1]
    return line.strip()[:300]


def _quantize_with_denylist(tf: Any, converter: Any, req: BuildRequest, details: dict) -> bytes:
    """Calibrate, then quantize everything except the nodes ``--keep-float`` names."""
    from tensorflow.lite.python import convert as tfl_convert
    from tensorflow.lite.python import util as tfl_util

    converter._experimental_calibrate_only = True  # noqa: SLF001
    calibrated = _convert(converter, req.source, req.precision)
    names = [name for _op, outs in _op_outputs(calibrated) for name in outs]
    deny = matching(names, req.keep_float)
    details["keep_float"] = deny
    if not deny:
        details["keep_float_unmatched"] = [p.pattern for p in req.keep_float]
    try:
        with stdout_to_stderr():
            data = tfl_convert.mlir_quantize(
                calibrated,
                disable_per_channel=not req.profile.quantization.per_channel,
                fully_quantize=False,
                denylisted_nodes=deny,
            )
            io = req.profile.tflite.io_dtype.value
            if io != "float32":
                data = tfl_util.modify_model_io_type(data, getattr(tf, io), getattr(tf, io))
    except Exception as exc:  # the quantizer raises RuntimeError / ValueError
        raise UnsupportedOpError(
            f"{req.source.path}: int8 quantization with --keep-float failed: {_error_summary(exc)}"
        ) from None
    return bytes(data)


def _interpreter(data: bytes) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=data)


def _op_outputs(data: bytes) -> list[tuple[str, list[str]]]:
    """(op name, output tensor names) of the primary subgraph, in execution order."""
    interp = _interpreter(data)
    names = {d["index"]: d["name"] for d in interp.get_tensor_details()}
    return [
        (op["op_name"], [names[i] for i in op["outputs"] if i >= 0])
        for op in interp._get_ops_details()  # noqa: SLF001 - stable since TF 2.4
    ]


def op_dtypes(data: bytes) -> list[tuple[str, bool]]:
    """(op name, whether any of its input/output tensors is floating point) per op."""
    interp = _interpreter(data)
    dtypes = {d["index"]: d["dtype"] for d in interp.get_tensor_details()}
    result = []
    for op in interp._get_ops_details():  # noqa: SLF001
        tensors = [i for i in (*op["inputs"], *op["outputs"]) if i >= 0]
        result.append((op["op_name"], any(dtypes[i] in _FLOAT for i in tensors)))
    return result


def _refuse_float_ops(req: BuildRequest, float_ops: list[str]) -> None:
    if not float_ops:
        return
    counts = ", ".join(f"{op} x{n}" for op, n in Counter(float_ops).items())
    raise UnsupportedOpError(
        f"{req.source.path}: target {req.profile.name!r} allows no float ops "
        f"(quantization.float_fallback = false) but these have no int8 kernel: {counts}; "
        "replace those layers, or use a target that allows float fallback (e.g. arm-cpu)"
    )


BACKEND: Backend = TFLiteBackend()
register_backend(BACKEND)
