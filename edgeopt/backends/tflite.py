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

from ..recipes import Recipe
from ..recipes.ranges import BadRange, bad_ranges
from ..recipes.ranges import summary as range_summary
from ..sources import ModelSource
from ..targets import KeepFloatPolicy, Scheme, TargetProfile
from . import Backend, BuildRequest, Built, Shapes, keep_float_names, register_backend
from ._frameworks import import_tf, log_failure, stdout_to_stderr
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
        if source.format == "onnx":  # through onnx2tf (edgeopt.backends.onnx2tf)
            from .onnx2tf import missing_helpers

            return missing_helpers()
        return None

    def precisions(self, profile: TargetProfile) -> list[str]:
        order = [profile.quantization.scheme, *profile.tflite.extra_variants]
        return list(dict.fromkeys(s.value for s in order))

    def build_float(self, source: ModelSource, input_shapes: Shapes, workdir: Path) -> Path:
        if source.format == "onnx":
            from .onnx2tf import convert_onnx

            conv = convert_onnx(source, input_shapes, workdir)
            return self.build_float(conv.source, conv.shapes, workdir)
        # a SavedModel made in workdir (onnx2tf) gets its own float model per folder
        made = f"_{source.path.parent.name}" if workdir in source.path.parents else ""
        out = workdir / f"float32_{_shape_tag(input_shapes)}{made}.tflite"
        if not out.is_file():
            converter = _converter(source, input_shapes, workdir)
            out.write_bytes(_convert(converter, source, "float32"))
        return out

    def build(self, req: BuildRequest) -> Built:
        """Build ``req``'s recipe (``int8`` / ``int16x8`` / ``float16`` / ``dynamic`` /
        ``float32``); int8 calibrates once, keeps float what the recipe names and every tensor
        whose calibrated range is unquantizable, then quantizes the calibrated model."""
        if req.source.format == "onnx":
            from .onnx2tf import build_via_onnx2tf

            return build_via_onnx2tf(self, req)
        tf = import_tf()
        recipe = req.resolved(self.name)
        converter = _converter(req.source, req.input_shapes, req.workdir)
        details: dict[str, Any] = {"io_dtype": "float32", "recipe": recipe.to_dict(),
                                   "recipe_key": recipe.key()}
        notes: list[str] = []
        scheme = Scheme(recipe.mode)
        wanted: set[str] = set()  # output tensors of ops kept float on purpose
        bad: list[BadRange] = []
        if scheme in (Scheme.INT8, Scheme.INT16X8):
            _integer_options(tf, converter, req, scheme, recipe.per_channel)
            if scheme is Scheme.INT8:
                details["io_dtype"] = req.profile.tflite.io_dtype.value
            if req.calib_method.value != "minmax" and req.recipe is None:
                notes.append(
                    f"the TFLite converter calibrates with min/max only; "
                    f"{req.calib_method.value!r} applies to the ONNX artifact"
                )
            if scheme is Scheme.INT8:
                data, wanted, bad = _int8(tf, converter, req, recipe, details, notes)
            else:
                data = _convert(converter, req.source, recipe.precision)
        elif scheme is Scheme.FLOAT16:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
            data = _convert(converter, req.source, recipe.precision)
        elif scheme is Scheme.DYNAMIC:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter._experimental_disable_per_channel = not recipe.per_channel  # noqa: SLF001
            data = _convert(converter, req.source, recipe.precision)
        else:
            data = _convert(converter, req.source, recipe.precision)
        req.out_path.write_bytes(data)
        ops = _op_io(data)
        float_ops = [op for op, float_io, _ in ops if float_io and op not in _EDGE_OPS]
        details["ops"] = dict(Counter(op for op, _, _ in ops))
        details["float_ops"] = dict(Counter(float_ops))
        if scheme in (Scheme.INT8, Scheme.INT16X8) and not req.profile.quantization.float_fallback:
            _refuse_float_ops(req, ops, wanted, bad, notes)
        return Built(req.out_path, self.name, recipe.precision, details, notes)


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


def _integer_options(tf: Any, converter: Any, req: BuildRequest, scheme: Scheme,
                     per_channel: bool) -> None:
    profile = req.profile
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative(req)
    converter._experimental_disable_per_channel = not per_channel  # noqa: SLF001
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
        log_failure(f"TFLite {precision} conversion of {source.path}", exc)
        summary = _error_summary(exc)
        raise UnsupportedOpError(
            f"{source.path}: TFLite {precision} conversion failed: {summary}"
            f"{_read_variable_hint(source) if 'READ_VARIABLE' in summary else ''}"
        ) from None


def _read_variable_hint(source: ModelSource) -> str:
    """READ_VARIABLE failing while calibrating: a SavedModel whose weights are resource
    variables read at run time (Keras 3 ``tf.saved_model.save(model)``) with a dynamic batch;
    the converter freezes them once the batch is fixed (measured: the same SavedModel converts
    with --input-shape NAME=1,...)."""
    fixes = " ".join(
        f"--input-shape {s.name}=" + ",".join("1" if i == 0 and d is None else
                                              "?" if d is None else str(d)
                                              for i, d in enumerate(s.shape))
        for s in source.inputs)
    return (f"; the SavedModel reads its weights as resource variables, which the TFLite "
            f"converter does not freeze with a dynamic batch: fix the batch with {fixes} "
            "(replace any ? by the size), or save the model with model.export(DIR) or as .keras")


def _error_summary(exc: BaseException) -> str:
    text = str(exc)
    found = _ERROR_LINE.findall(text)
    line = found[0] if found else (text.strip().splitlines() or [type(exc).__name__])[-1]
    return line.strip()  # whole: the cause is often at the end of a long line


def _int8(tf: Any, converter: Any, req: BuildRequest, recipe: Recipe, details: dict,
          notes: list[str]) -> tuple[bytes, set[str], list[BadRange]]:
    """Calibrate once, then quantize all but the recipe's keep-float nodes and the tensors
    whose calibrated range cannot be quantized (``edgeopt.recipes.ranges``).

    This is the converter's own int8 path split in two (``_experimental_calibrate_only``, then
    ``mlir_quantize`` on the calibrated model, as ``QuantizationDebugger`` does), so the
    calibrated ranges can be read in between.

    Returns:
        (model bytes, output tensors of the ops kept float on purpose, the bad ranges found).
    """
    from tensorflow.lite.python import convert as tfl_convert
    from tensorflow.lite.python import util as tfl_util

    converter._experimental_calibrate_only = True  # noqa: SLF001
    calibrated = _convert(converter, req.source, recipe.precision)
    tensors = _calibrated_tensors(calibrated)
    names = [name for _op, _ins, outs in tensors["ops"] for name in outs]
    deny = keep_float_names(names, recipe, details)
    bad = bad_ranges(tensors["ranges"])
    if bad:
        wanted_bad = {b.tensor for b in bad}
        # The producer keeps the tensor float; its readers would quantize it again, so they
        # stay float too.
        touching = [outs for _op, ins, outs in tensors["ops"] if wanted_bad & set(ins + outs)]
        deny = list(dict.fromkeys([*deny, *(o for outs in touching for o in outs)]))
        details["kept_float_ranges"] = [b.to_dict() for b in bad]
        notes.append(range_summary(bad))
        # an inf calibrated range makes mlir_quantize segfault even for denylisted ops (a
        # damaged ONNX source with a 2.2e38 bias: MEAN's range (0, inf)); these stay float
        calibrated = _without_ranges(calibrated, wanted_bad)
    try:
        with stdout_to_stderr():
            data = tfl_convert.mlir_quantize(
                calibrated,
                disable_per_channel=not recipe.per_channel,
                fully_quantize=False,
                denylisted_nodes=deny,
            )
            io = req.profile.tflite.io_dtype.value
            if io != "float32":
                data = tfl_util.modify_model_io_type(data, getattr(tf, io), getattr(tf, io))
    except Exception as exc:  # the quantizer raises RuntimeError / ValueError
        what = "with --keep-float " if deny else ""
        raise UnsupportedOpError(
            f"{req.source.path}: int8 quantization {what}failed: {_error_summary(exc)}"
        ) from None
    return bytes(data), set(deny), bad


def _without_ranges(data: bytes, names: set[str]) -> bytes:
    """The calibrated model with the calibration statistics of ``names`` removed (primary
    subgraph), so the quantizer leaves those tensors float instead of reading their range."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    for t in model.subgraphs[0].tensors:
        name = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
        if name in names:
            t.quantization = None
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _calibrated_tensors(data: bytes) -> dict[str, Any]:
    """Ops (name, input names, output names) and calibrated (min, max) per tensor of the
    primary subgraph of a calibrate-only model (the calibrator stores them in each tensor's
    quantization parameters)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    graph = model.subgraphs[0]
    names = [t.name.decode() if isinstance(t.name, bytes) else str(t.name) for t in graph.tensors]
    ranges: dict[str, tuple[float, float]] = {}
    for name, t in zip(names, graph.tensors, strict=True):
        q = t.quantization
        if t.type == schema.TensorType.FLOAT32 and q is not None and q.min is not None \
                and q.max is not None and len(q.min) and len(q.max):
            ranges[name] = (float(np.min(q.min)), float(np.max(q.max)))
    codes = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    ops = []
    for op in graph.operators or ():
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        ops.append((codes.get(builtin, str(builtin)),
                    [names[i] for i in op.inputs if i >= 0],
                    [names[i] for i in op.outputs if i >= 0]))
    return {"ops": ops, "ranges": ranges}


def _interpreter(data: bytes) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=data)


def _op_io(data: bytes) -> list[tuple[str, bool, list[str]]]:
    """(op name, whether any input/output tensor is floating point, output tensor names) per
    op of the primary subgraph, in execution order."""
    interp = _interpreter(data)
    tensors = {d["index"]: d for d in interp.get_tensor_details()}
    result = []
    for op in interp._get_ops_details():  # noqa: SLF001 - stable since TF 2.4
        idx = [i for i in (*op["inputs"], *op["outputs"]) if i >= 0]
        result.append((op["op_name"], any(tensors[i]["dtype"] in _FLOAT for i in idx),
                       [tensors[i]["name"] for i in op["outputs"] if i >= 0]))
    return result


def op_dtypes(data: bytes) -> list[tuple[str, bool]]:
    """(op name, whether any of its input/output tensors is floating point) per op."""
    return [(op, float_io) for op, float_io, _ in _op_io(data)]


def _refuse_float_ops(req: BuildRequest, ops: list[tuple[str, bool, list[str]]],
                      wanted: set[str], bad: list[BadRange], notes: list[str]) -> None:
    """On a target without float fallback: float ops the recipe asked for are a CPU partition
    (allowed unless the target's keep-float policy is ``never``); any other float op is an
    error naming the op types, or the unquantizable tensors that forced them."""
    chosen = [op for op, float_io, outs in ops
              if float_io and op not in _EDGE_OPS and set(outs) & wanted]
    silent = [op for op, float_io, outs in ops
              if float_io and op not in _EDGE_OPS and not set(outs) & wanted]
    policy = req.profile.recipes.keep_float
    forced = bad and any(set(outs) & {b.tensor for b in bad} for _o, _f, outs in ops)
    if forced or (chosen and policy is KeepFloatPolicy.NEVER):
        why = (range_summary(bad) if forced else
               f"the recipe keeps {', '.join(sorted(set(chosen)))} float")
        raise UnsupportedOpError(
            f"{req.source.path}: target {req.profile.name!r} allows no float ops "
            f"(quantization.float_fallback = false) but {why}; remove the masking constant "
            "from the model, or use a target that allows float fallback (e.g. arm-cpu)"
        )
    if chosen:
        notes.append(f"{len(chosen)} op(s) kept float on purpose run on the host CPU "
                     f"({', '.join(f'{o} x{n}' for o, n in Counter(chosen).items())}): the "
                     "accelerator graph is split there")
    if not silent:
        return
    counts = ", ".join(f"{op} x{n}" for op, n in Counter(silent).items())
    raise UnsupportedOpError(
        f"{req.source.path}: target {req.profile.name!r} allows no float ops "
        f"(quantization.float_fallback = false) but these have no int8 kernel: {counts}; "
        "replace those layers, or use a target that allows float fallback (e.g. arm-cpu)"
    )


BACKEND: Backend = TFLiteBackend()
register_backend(BACKEND)
