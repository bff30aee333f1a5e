"""Read a ``.tflite`` flatbuffer into plain Python objects: ops in execution order with their
tensors (dtype, shape, shape signature, quantization) and builtin options.

Uses only ``ai_edge_litert.schema_py_generated`` (pure-Python flatbuffers accessors): no
TensorFlow import, no interpreter. A pure-Python reader cannot crash the process on a corrupt
file (the LiteRT interpreter can segfault on one), so every malformed file becomes a
``ModelLoadError``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeopt_runtime.errors import ModelLoadError

_FILE_ID = b"TFL3"


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a subgraph."""

    index: int
    name: str
    dtype: str  # lower-case TFLite type name: "int8", "float32", ...
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]  # -1 marks a dynamic dimension
    quantization: dict[str, Any] | None  # {"scale": [...], "zero_point": [...], "axis": int}
    constant_bytes: int  # bytes of constant data (weights); 0 for activations
    is_variable: bool = False
    values: tuple[int, ...] | None = None  # contents of small integer constants (axes, paddings)

    @property
    def is_constant(self) -> bool:
        return self.constant_bytes > 0

    @property
    def is_dynamic(self) -> bool:
        return any(d < 0 for d in self.shape_signature)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "index": self.index,
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "shape_signature": list(self.shape_signature),
            "quantization": self.quantization,
        }
        if self.is_constant:
            out["constant_bytes"] = self.constant_bytes
        if self.values is not None:
            out["values"] = list(self.values)
        return out


@dataclass(frozen=True)
class OpInfo:
    """One operator, in execution order."""

    index: int
    name: str  # builtin name ("CONV_2D") or "CUSTOM:<custom code>"
    version: int
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def activations_in(self) -> tuple[TensorInfo, ...]:
        """Non-constant inputs (what flows in from other ops or the model inputs)."""
        return tuple(t for t in self.inputs if not t.is_constant)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "op": self.name,
            "version": self.version,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "options": self.options,
        }


@dataclass(frozen=True)
class TFLiteGraph:
    """The main subgraph (subgraph 0) of a TFLite model."""

    path: str
    ops: tuple[OpInfo, ...]
    tensors: tuple[TensorInfo, ...]
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    subgraph_count: int
    size_bytes: int

    def producers(self) -> dict[int, int]:
        """Map tensor index -> index of the op that writes it."""
        return {t.index: op.index for op in self.ops for t in op.outputs}


# ---- enum lookups built once from the generated schema -------------------------------------


def _schema() -> Any:
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError as exc:  # pragma: no cover - ai-edge-litert is a runtime dependency
        from edgeopt_runtime.errors import MissingDependencyError

        raise MissingDependencyError(
            "ai-edge-litert", "ai-edge-litert", "to read .tflite files"
        ) from exc
    return schema_py_generated


def _enum_names(enum_cls: type) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


_ENUM_FIELDS = {
    "fused_activation_function": "ActivationFunctionType",
    "padding": "Padding",
    "weights_format": "FullyConnectedOptionsWeightsFormat",
    "mode": "MirrorPadMode",
}


def _snake(name: str) -> str:
    """``dilationWFactor`` -> ``dilation_w_factor``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def _plain_options(options: Any, schema: Any) -> dict[str, Any]:
    """Turn a generated ``*OptionsT`` object into a JSON-ready dict with enum names."""
    if options is None:
        return {}
    out: dict[str, Any] = {}
    for key, value in vars(options).items():
        skey = _snake(key)
        if hasattr(value, "tolist"):
            value = value.tolist()
        elif value is not None and not isinstance(value, (bool, int, float, str, list)):
            continue  # nested tables (e.g. quant specs) are not needed for compatibility rules
        enum_name = _ENUM_FIELDS.get(skey)
        if enum_name and isinstance(value, int) and hasattr(schema, enum_name):
            value = _enum_names(getattr(schema, enum_name)).get(value, value)
        out[skey] = value
    return out


def _quantization(tensor: Any) -> dict[str, Any] | None:
    q = tensor.Quantization()
    if q is None or q.ScaleLength() == 0:
        return None
    return {
        "scale": [float(s) for s in q.ScaleAsNumpy()],
        "zero_point": [int(z) for z in q.ZeroPointAsNumpy()] if q.ZeroPointLength() else [],
        "axis": int(q.QuantizedDimension()),
    }


def _buffer_bytes(model: Any, index: int) -> int:
    if index <= 0 or index >= model.BuffersLength():
        return 0  # buffer 0 is the empty sentinel
    buf = model.Buffers(index)
    if buf is None:
        return 0
    if buf.Offset() > 1:  # > 2 GB models keep data outside the flatbuffer
        return int(buf.Size())
    return int(buf.DataLength())


_SMALL_INT = {"int32": "<i4", "int64": "<i8"}
_SMALL_LIMIT = 64  # elements: axes, paddings, strides, shapes; never weights


def _small_values(model: Any, buffer_index: int, dtype: str, nbytes: int) -> tuple[int, ...] | None:
    """Contents of a small int32/int64 constant, which the op rules need (axes, paddings...)."""
    np_type = _SMALL_INT.get(dtype)
    if np_type is None or nbytes == 0 or nbytes > _SMALL_LIMIT * 8:
        return None
    buf = model.Buffers(buffer_index)
    if buf is None or buf.DataLength() != nbytes:
        return None  # data stored outside the flatbuffer: not needed for the rules
    import numpy as np

    return tuple(int(v) for v in np.frombuffer(buf.DataAsNumpy().tobytes(), dtype=np_type))


def _tensor(model: Any, sub: Any, index: int, type_names: dict[int, str]) -> TensorInfo:
    t = sub.Tensors(index)
    shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
    sig = tuple(int(d) for d in t.ShapeSignatureAsNumpy()) if t.ShapeSignatureLength() else shape
    dtype = type_names.get(t.Type(), f"type{t.Type()}").lower()
    nbytes = _buffer_bytes(model, t.Buffer())
    return TensorInfo(
        index=index,
        name=(t.Name() or b"").decode("utf-8", "replace"),
        dtype=dtype,
        shape=shape,
        shape_signature=sig,
        quantization=_quantization(t),
        constant_bytes=nbytes,
        is_variable=bool(t.IsVariable()),
        values=_small_values(model, t.Buffer(), dtype, nbytes),
    )


def _op_names(model: Any, schema: Any) -> list[tuple[str, int]]:
    builtin = _enum_names(schema.BuiltinOperator)
    names = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        # Old files store the code in the int8 field; new ones use both (max is the real one).
        num = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
        name = builtin.get(num, f"BUILTIN_{num}")
        if name == "CUSTOM":
            name = "CUSTOM:" + (code.CustomCode() or b"").decode("utf-8", "replace")
        names.append((name, int(code.Version())))
    return names


def read_tflite(path: str | Path) -> TFLiteGraph:
    """Parse a ``.tflite`` file.

    Args:
        path: the model file.

    Returns:
        The main subgraph's ops (execution order), tensors, inputs and outputs.

    Raises:
        ModelLoadError: the file is missing, unreadable, not a TFLite flatbuffer, or corrupt.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: file not found; expected a .tflite model") from None
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot read: {exc.strerror}") from None
    if len(data) < 8 or data[4:8] != _FILE_ID:
        raise ModelLoadError(
            f"{path}: not a TFLite flatbuffer (expected file identifier 'TFL3' at byte 4, "
            f"got {data[4:8]!r})"
        )
    try:
        return _parse(path, data)
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoding failure means a corrupt file
        raise ModelLoadError(
            f"{path}: corrupt TFLite flatbuffer ({type(exc).__name__}: {exc})"
        ) from None


def _parse(path: Path, data: bytes) -> TFLiteGraph:
    schema = _schema()
    model = schema.Model.GetRootAs(data, 0)
    if model.SubgraphsLength() < 1:
        raise ModelLoadError(f"{path}: TFLite model has no subgraph")
    sub = model.Subgraphs(0)
    type_names = _enum_names(schema.TensorType)
    tensors = tuple(_tensor(model, sub, i, type_names) for i in range(sub.TensorsLength()))
    op_names = _op_names(model, schema)
    ops = []
    for i in range(sub.OperatorsLength()):
        raw = sub.Operators(i)
        name, version = op_names[raw.OpcodeIndex()]
        unpacked = schema.OperatorT.InitFromObj(raw)
        in_idx = raw.InputsAsNumpy() if raw.InputsLength() else ()
        out_idx = raw.OutputsAsNumpy() if raw.OutputsLength() else ()
        ins = tuple(tensors[j] for j in in_idx if j >= 0)  # -1 = omitted optional input
        outs = tuple(tensors[j] for j in out_idx if j >= 0)
        ops.append(
            OpInfo(
                index=i,
                name=name,
                version=version,
                inputs=ins,
                outputs=outs,
                options=_plain_options(unpacked.builtinOptions, schema),
            )
        )
    model_in = tuple(tensors[j] for j in sub.InputsAsNumpy()) if sub.InputsLength() else ()
    model_out = tuple(tensors[j] for j in sub.OutputsAsNumpy()) if sub.OutputsLength() else ()
    return TFLiteGraph(
        path=str(path),
        ops=tuple(ops),
        tensors=tensors,
        inputs=model_in,
        outputs=model_out,
        subgraph_count=int(model.SubgraphsLength()),
        size_bytes=len(data),
    )
