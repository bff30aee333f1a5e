"""Read a ``.tflite`` flatbuffer into plain Python objects: ops in execution order with their
tensors (dtype, shape, shape signature, quantization) and builtin options.

Built on the runtime's reader (``edgeopt_runtime.tflite_reader``: the one TFLite flatbuffer
reader of the project, bounds-checked, after ``edgeopt_runtime.verify.check_tflite``): no
TensorFlow import, no interpreter, and a corrupt file is a ``ModelLoadError``, never a crash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeopt_runtime import tflite_reader
from edgeopt_runtime.errors import ModelLoadError
from edgeopt_runtime.files import MAX_MODEL_BYTES, read_capped
from edgeopt_runtime.tflite_reader import TensorRecord, TFLiteFile

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


# ---- built on the runtime's checked reader ---------------------------------------------------

_SMALL_INT = {"int32": "<i4", "int64": "<i8"}
_SMALL_LIMIT = 64  # elements: axes, paddings, strides, shapes; never weights


def _small_values(model: TFLiteFile, t: TensorRecord) -> tuple[int, ...] | None:
    """Contents of a small int32/int64 constant, which the op rules need (axes, paddings...)."""
    np_type = _SMALL_INT.get(t.dtype)
    if np_type is None or t.constant_bytes == 0 or t.constant_bytes > _SMALL_LIMIT * 8:
        return None
    data = model.buffer_data(t)
    if len(data) != t.constant_bytes or len(data) % int(np_type[-1]):
        return None
    import numpy as np

    return tuple(int(v) for v in np.frombuffer(data, dtype=np_type))


def _tensor(model: TFLiteFile, t: TensorRecord) -> TensorInfo:
    return TensorInfo(
        index=t.index,
        name=t.name,
        dtype=t.dtype,
        shape=t.shape,
        shape_signature=t.shape_signature,
        quantization=t.quantization,
        constant_bytes=t.constant_bytes,
        is_variable=t.is_variable,
        values=_small_values(model, t),
    )


def read_tflite(path: str | Path) -> TFLiteGraph:
    """Parse a ``.tflite`` file.

    Args:
        path: the model file.

    Returns:
        The main subgraph's ops (execution order), tensors, inputs and outputs.

    Raises:
        ModelLoadError: the file is missing, unreadable, not a TFLite flatbuffer, or fails the
            runtime's structural checks (``edgeopt_runtime.verify``).
    """
    path = Path(path)
    data = read_capped(path, max_bytes=MAX_MODEL_BYTES, what="model file")
    if len(data) < 8 or data[4:8] != _FILE_ID:
        raise ModelLoadError(
            f"{path}: not a TFLite flatbuffer (expected file identifier 'TFL3' at byte 4, "
            f"got {data[4:8]!r})"
        )
    model = tflite_reader.read_tflite(data, str(path))
    sub = model.subgraphs[0]
    tensors = tuple(_tensor(model, t) for t in sub.tensors)
    ops = tuple(
        OpInfo(
            index=op.index,
            name=op.name,
            version=op.version,
            inputs=tuple(tensors[j] for j in op.inputs if j >= 0),  # -1 = omitted optional input
            outputs=tuple(tensors[j] for j in op.outputs if j >= 0),
            options=dict(op.options),
        )
        for op in sub.operators
    )
    return TFLiteGraph(
        path=str(path),
        ops=ops,
        tensors=tensors,
        inputs=tuple(tensors[j] for j in sub.inputs),
        outputs=tuple(tensors[j] for j in sub.outputs),
        subgraph_count=len(model.subgraphs),
        size_bytes=model.size_bytes,
    )
