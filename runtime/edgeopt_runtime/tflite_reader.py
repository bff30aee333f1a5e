"""A ``.tflite`` file as plain Python records: subgraphs, tensors, operators and their options.

The one TFLite flatbuffer reader of the project (the converter's pre-flight,
``edgeopt.inspect.tflite_graph``, builds on it). It runs ``verify.check_tflite`` first, so every
file it decodes has passed the same structural checks the runtime applies before an interpreter
sees it, and it reads through the same bounds-checked ``verify.flatbuffer`` classes with the
schema tables generated from LiteRT's schema: no interpreter, no ``schema_py_generated`` import
(slow), no TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .verify import check_tflite
from .verify.flatbuffer import I8, I32, U8, U32, U64, Reader, Table, read_fields
from .verify.schema_tables import BUILTIN_OPS, ENUMS, OPTIONS
from .verify.tensors import TENSOR_TYPES

# Option fields whose integer values are enum members: field name -> enum.
_ENUM_FIELDS = {
    "fused_activation_function": "ActivationFunctionType",
    "padding": "Padding",
    "weights_format": "FullyConnectedOptionsWeightsFormat",
    "mode": "MirrorPadMode",
}


@dataclass(frozen=True)
class TensorRecord:
    """One tensor of a subgraph."""

    index: int
    name: str
    dtype: str  # lower-case TFLite type name: "int8", "float32", ...
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]  # -1 marks a dynamic dimension (= shape when absent)
    quantization: dict[str, Any] | None  # {"scale": [...], "zero_point": [...], "axis": int}
    buffer: int
    constant_bytes: int  # bytes of constant data (weights); 0 for activations
    is_variable: bool


@dataclass(frozen=True)
class OperatorRecord:
    """One operator, in execution order."""

    index: int
    code: int  # builtin code
    name: str  # builtin name ("CONV_2D") or "CUSTOM:<custom code>"
    version: int
    inputs: tuple[int, ...]  # tensor indices; -1 marks an omitted optional input
    outputs: tuple[int, ...]
    options: dict[str, Any]  # builtin options by snake-case field name, enums by member name


@dataclass(frozen=True)
class SubgraphRecord:
    name: str
    tensors: tuple[TensorRecord, ...]
    operators: tuple[OperatorRecord, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass(frozen=True)
class TFLiteFile:
    """A checked ``.tflite`` model."""

    source: str
    size_bytes: int
    subgraphs: tuple[SubgraphRecord, ...]
    _data: memoryview
    _buffers: tuple[tuple[int, int], ...]  # (position, length) of each buffer's data

    def buffer_data(self, tensor: TensorRecord) -> memoryview:
        """The constant data of ``tensor`` (empty for activations and external buffers)."""
        if not 0 <= tensor.buffer < len(self._buffers):
            return memoryview(b"")
        pos, n = self._buffers[tensor.buffer]
        if pos + n > len(self._data):
            return memoryview(b"")
        return self._data[pos : pos + n]


def read_tflite(data: bytes | bytearray | memoryview, source: str) -> TFLiteFile:
    """Check and decode a TFLite model.

    Args:
        data: the whole file.
        source: file name for messages.

    Returns:
        ``TFLiteFile`` with every subgraph's tensors and operators.

    Raises:
        ModelLoadError: the file fails ``verify.check_tflite`` (one line naming the problem).
    """
    check_tflite(data, source)
    buf = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
    r = Reader(buf)
    root = Table(r, r.deref(0, "root"), "model")
    buffers = tuple(_buffer(t) for t in root.tables(4, "buffer"))
    opcodes = [_opcode(t) for t in root.tables(1, "operator code")]
    subgraphs = tuple(_subgraph(sg, buffers, opcodes) for sg in root.tables(2, "subgraph"))
    return TFLiteFile(source, len(buf), subgraphs, buf, buffers)


def _buffer(t: Table) -> tuple[int, int]:
    start, n = t.vector(0, 1, t.what)
    offset, size = t.scalar(1, U64), t.scalar(2, U64)
    return (offset, size) if offset > 1 else (start, n)


def _opcode(t: Table) -> tuple[int, str, int]:
    code = max(t.scalar(0, I8), t.scalar(3, I32))
    name = BUILTIN_OPS.get(code, f"BUILTIN_{code}")
    if name == "CUSTOM":
        name = "CUSTOM:" + (t.string(1, "custom code") or "")
    return code, name, t.scalar(2, I32, 1)


def _quantization(t: Table) -> dict[str, Any] | None:
    q = t.table(4, "quantization")
    if q is None:
        return None
    scales = q.ints(2, "scales", "f")
    if not scales:
        return None
    zps = q.ints(3, "zero points", "q")
    return {
        "scale": [float(s) for s in scales],
        "zero_point": [int(z) for z in zps],
        "axis": int(q.scalar(6, I32)),
    }


def _tensor(i: int, t: Table, buffers: tuple[tuple[int, int], ...]) -> TensorRecord:
    shape = tuple(t.ints(0, "shape"))
    sig = tuple(t.ints(7, "shape signature")) or shape
    b = t.scalar(2, U32)
    nbytes = buffers[b][1] if 0 < b < len(buffers) else 0  # buffer 0 is the empty sentinel
    return TensorRecord(
        index=i,
        name=t.string(3, "name") or "",
        dtype=TENSOR_TYPES[t.scalar(1, I8)][0],
        shape=shape,
        shape_signature=sig,
        quantization=_quantization(t),
        buffer=b,
        constant_bytes=int(nbytes),
        is_variable=bool(t.scalar(5, U8)),
    )


def _options(op: Table) -> dict[str, Any]:
    kind = op.scalar(3, U8)
    table = op.table(4, "options")
    if not kind or kind not in OPTIONS or table is None:
        return {}  # no options table: LiteRT uses the defaults
    out = read_fields(table, OPTIONS[kind][1])
    for key, enum in _ENUM_FIELDS.items():
        if isinstance(out.get(key), int) and enum in ENUMS:
            out[key] = ENUMS[enum].get(out[key], out[key])
    return out


def _subgraph(
    sg: Table, buffers: tuple[tuple[int, int], ...], opcodes: list[tuple[int, str, int]]
) -> SubgraphRecord:
    tensors = tuple(_tensor(i, t, buffers) for i, t in enumerate(sg.tables(0, "tensor")))
    ops = []
    for i, op in enumerate(sg.tables(3, "operator")):
        code, name, version = opcodes[op.scalar(0, U32)]
        ops.append(
            OperatorRecord(
                index=i,
                code=code,
                name=name,
                version=version,
                inputs=tuple(op.ints(1, "inputs")),
                outputs=tuple(op.ints(2, "outputs")),
                options=_options(op),
            )
        )
    return SubgraphRecord(
        name=sg.string(4, "name") or "",
        tensors=tensors,
        operators=tuple(ops),
        inputs=tuple(sg.ints(1, "inputs")),
        outputs=tuple(sg.ints(2, "outputs")),
    )


__all__ = ["OperatorRecord", "SubgraphRecord", "TFLiteFile", "TensorRecord", "read_tflite"]
