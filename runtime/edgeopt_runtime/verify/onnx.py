"""Format sniffing, and the checks an ONNX model gets before ONNX Runtime sees it.

ONNX Runtime parses protobuf safely, but some *meanings* crash it (issue #10): a zero-size scale
or zero point of a QuantizeLinear/DequantizeLinear pair loads, and the fused QLinear kernel then
reads element 0 of an empty tensor and segfaults in ``run``. ``check_onnx`` walks the protobuf
with a small bounds-checked reader (no ``onnx`` package: the runtime never imports it) and
refuses, in one line naming the tensor:

* a quantization parameter (scale / zero point of Q, DQ, QLinear*, *Integer ops) that is empty,
  not a scalar or 1-D, or a scale that is not finite and > 0;
* a tensor whose data references an external file (a model file must not make the runtime read
  other files), or whose stored data does not match its dims and type;
* negative or overflowing dims, and graphs nested deeper than ``MAX_GRAPH_DEPTH``.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..errors import ModelLoadError
from .tflite import TFLITE_IDENTIFIER

MAX_GRAPH_DEPTH = 64  # If/Loop/Scan bodies inside bodies; real models nest a few levels
MAX_DIMS = 64
_MAX_ELEMENTS = 2**62

# ModelProto field number -> protobuf wire type (0 varint, 2 length-delimited).
_ONNX_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}

# TensorProto.DataType -> (name, bytes per element); None: variable size (string).
_DTYPES: dict[int, tuple[str, int | None]] = {
    1: ("float32", 4), 2: ("uint8", 1), 3: ("int8", 1), 4: ("uint16", 2), 5: ("int16", 2),
    6: ("int32", 4), 7: ("int64", 8), 8: ("string", None), 9: ("bool", 1), 10: ("float16", 2),
    11: ("float64", 8), 12: ("uint32", 4), 13: ("uint64", 8), 14: ("complex64", 8),
    15: ("complex128", 16), 16: ("bfloat16", 2), 17: ("float8e4m3fn", 1),
    18: ("float8e4m3fnuz", 1), 19: ("float8e5m2", 1), 20: ("float8e5m2fnuz", 1),
    21: ("uint4", None), 22: ("int4", None), 23: ("float4e2m1", None),
}  # fmt: skip
_FLOAT, _FLOAT16, _DOUBLE = 1, 10, 11
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL

# op_type -> input positions holding quantization parameters (scales and zero points).
_QPARAMS: dict[str, tuple[int, ...]] = {
    "QuantizeLinear": (1, 2), "DequantizeLinear": (1, 2),
    "QLinearConv": (1, 2, 4, 5, 6, 7), "QLinearMatMul": (1, 2, 4, 5, 6, 7),
    "QLinearAdd": (1, 2, 4, 5, 6, 7), "QLinearMul": (1, 2, 4, 5, 6, 7),
    "QGemm": (1, 2, 4, 5, 7, 8), "QLinearSigmoid": (1, 2, 3, 4),
    "QLinearLeakyRelu": (1, 2, 3, 4), "QLinearSoftmax": (1, 2, 3, 4),
    "QLinearAveragePool": (1, 2, 3, 4), "QLinearGlobalAveragePool": (1, 2, 3, 4),
    "ConvInteger": (2, 3), "MatMulInteger": (2, 3), "MatMulIntegerToFloat": (2, 3, 4, 5),
    "DynamicQuantizeMatMul": (2, 3),
}  # fmt: skip
# op_type -> the positions among _QPARAMS that are scales (the others are zero points).
_SCALES: dict[str, tuple[int, ...]] = {
    "QuantizeLinear": (1,), "DequantizeLinear": (1,), "QLinearConv": (1, 4, 6),
    "QLinearMatMul": (1, 4, 6), "QLinearAdd": (1, 4, 6), "QLinearMul": (1, 4, 6),
    "QGemm": (1, 4, 7), "QLinearSigmoid": (1, 3), "QLinearLeakyRelu": (1, 3),
    "QLinearSoftmax": (1, 3), "QLinearAveragePool": (1, 3), "QLinearGlobalAveragePool": (1, 3),
    "MatMulIntegerToFloat": (2, 3), "DynamicQuantizeMatMul": (2,),
}  # fmt: skip


class _Bad(Exception):
    """One reason the model is unsafe; ``check_onnx`` prefixes the file name."""


# -- protobuf reading --------------------------------------------------------------------------
def _varint(buf: memoryview, pos: int) -> tuple[int | None, int]:
    value = shift = 0
    for i in range(pos, min(pos + 10, len(buf))):
        value |= (buf[i] & 0x7F) << shift
        if buf[i] < 0x80:
            return value, i + 1
        shift += 7
    return None, pos


def _fields(
    buf: memoryview, start: int, end: int, what: str
) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value start, value end or varint value) of one message."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        if key is None or pos > end:
            raise _Bad(f"{what}: malformed protobuf field key")
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, nxt = _varint(buf, pos)
            if value is None or nxt > end:
                raise _Bad(f"{what}: malformed varint in field {number}")
            yield number, wire, pos, value
            pos = nxt
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if length is None or pos + length > end:
                raise _Bad(f"{what}: field {number} runs past the end of its message")
            yield number, wire, pos, pos + length
            pos += length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if pos + size > end:
                raise _Bad(f"{what}: field {number} runs past the end of its message")
            yield number, wire, pos, pos + size
            pos += size
        else:
            raise _Bad(f"{what}: unsupported protobuf wire type {wire} in field {number}")


def _text(buf: memoryview, a: int, b: int) -> str:
    return str(buf[a:b], "utf-8", "replace")


def _packed_varints(buf: memoryview, a: int, b: int, what: str) -> list[int]:
    out = []
    pos = a
    while pos < b:
        v, pos = _varint(buf, pos)
        if v is None or pos > b:
            raise _Bad(f"{what}: malformed packed varints")
        out.append(v)
    return out


_HIGH_BYTES = bytes(range(128))


def _count_varints(buf: memoryview, a: int, b: int) -> int:
    """Number of packed varints in ``buf[a:b]`` (each ends with a byte < 0x80), in C speed."""
    chunk = bytes(buf[a:b])
    return len(chunk) - len(chunk.translate(None, _HIGH_BYTES))


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


@dataclass
class _Tensor:
    """What the checks need of one TensorProto."""

    name: str = ""
    dims: list[int] = field(default_factory=list)
    dtype: int = 0
    raw: tuple[int, int] | None = None  # raw_data span
    floats: tuple[int, int] | None = None  # packed float_data span
    typed_count: int = 0  # elements stored in the typed *_data fields
    external: bool = False

    @property
    def elements(self) -> int:
        return math.prod(self.dims)


_TYPED_FIELDS = {4: 4, 5: 0, 7: 0, 10: 8, 11: 0}  # float, int32, int64, double, uint64 data


def _tensor(buf: memoryview, a: int, b: int, what: str) -> _Tensor:
    t = _Tensor()
    for num, wire, s, e in _fields(buf, a, b, what):
        if num == 1:
            dims = _packed_varints(buf, s, e, what) if wire == 2 else [e]
            t.dims += [_signed64(d) for d in dims]
        elif num == 2 and wire == 0:
            t.dtype = e
        elif num == 8 and wire == 2:
            t.name = _text(buf, s, e)
        elif num == 9 and wire == 2:
            t.raw = (s, e)
        elif num == 13:
            t.external = True
        elif num == 14 and wire == 0:
            t.external = t.external or e == _EXTERNAL
        elif num in _TYPED_FIELDS:
            width = _TYPED_FIELDS[num]
            if wire == 2 and width:
                t.typed_count += (e - s) // width
                if num == 4:
                    t.floats = (s, e)
            elif wire == 2:
                t.typed_count += _count_varints(buf, s, e)
            else:
                t.typed_count += 1
        elif num == 6:
            t.typed_count += 1  # one string_data entry
    where = f"{what} '{t.name[:80]}'" if t.name else what
    if t.external:
        raise _Bad(
            f"{where} keeps its data in an external file; the runtime loads self-contained "
            "models only (a model file must not make it read other files)"
        )
    if len(t.dims) > MAX_DIMS or any(d < 0 for d in t.dims):
        raise _Bad(f"{where} has dims {t.dims[:8]}: negative or more than {MAX_DIMS}")
    if t.elements > _MAX_ELEMENTS:
        raise _Bad(f"{where} has dims {t.dims[:8]}: too many elements")
    name, size = _DTYPES.get(t.dtype, ("?", None))
    if size is not None and t.raw is not None and t.raw[1] - t.raw[0] != t.elements * size:
        raise _Bad(
            f"{where}: raw data holds {t.raw[1] - t.raw[0]} bytes, dims {t.dims} {name} need "
            f"{t.elements * size}"
        )
    if t.raw is None and t.typed_count and size is not None and t.dtype not in (14, 15):
        # one value per element (float16 travels in int32_data); complex types use two
        if t.typed_count != t.elements:
            raise _Bad(f"{where}: holds {t.typed_count} values, dims {t.dims} need {t.elements}")
    return t


@dataclass
class _Node:
    op_type: str = ""
    domain: str = ""
    name: str = ""
    inputs: list[str] = field(default_factory=list)


@dataclass
class _Graph:
    tensors: dict[str, _Tensor] = field(default_factory=dict)  # initializers and Constant outputs
    nodes: list[_Node] = field(default_factory=list)


def _graph(buf: memoryview, a: int, b: int, depth: int, what: str) -> _Graph:
    if depth > MAX_GRAPH_DEPTH:
        raise _Bad(f"graphs nested more than {MAX_GRAPH_DEPTH} levels deep")
    g = _Graph()
    for num, wire, s, e in _fields(buf, a, b, what):
        if wire != 2:
            continue
        if num == 5:  # initializer
            t = _tensor(buf, s, e, "initializer")
            g.tensors[t.name] = t
        elif num == 15:  # sparse_initializer: values (1) and indices (2) are TensorProtos
            for n2, w2, s2, e2 in _fields(buf, s, e, "sparse initializer"):
                if n2 in (1, 2) and w2 == 2:
                    _tensor(buf, s2, e2, "sparse initializer")
        elif num == 1:  # node
            _node(buf, s, e, depth, g)
    _check_quant_params(g, buf)
    return g


def _node(buf: memoryview, a: int, b: int, depth: int, g: _Graph) -> None:
    n = _Node()
    outputs: list[str] = []
    value: _Tensor | None = None
    for num, wire, s, e in _fields(buf, a, b, "node"):
        if wire != 2:
            continue
        if num == 1:
            n.inputs.append(_text(buf, s, e))
        elif num == 2:
            outputs.append(_text(buf, s, e))
        elif num == 3:
            n.name = _text(buf, s, e)
        elif num == 4:
            n.op_type = _text(buf, s, e)
        elif num == 7:
            n.domain = _text(buf, s, e)
        elif num == 5:
            value = _attribute(buf, s, e, depth, n) or value
    if n.op_type == "Constant" and value is not None and outputs:
        g.tensors[outputs[0]] = value
    g.nodes.append(n)


def _attribute(buf: memoryview, a: int, b: int, depth: int, n: _Node) -> _Tensor | None:
    """Check tensors and subgraphs inside an attribute; return its tensor (``value``)."""
    what = f"node '{n.name[:60]}' attribute" if n.name else "attribute"
    found = None
    for num, wire, s, e in _fields(buf, a, b, what):
        if wire != 2:
            continue
        if num in (5, 10):  # t, tensors
            found = _tensor(buf, s, e, f"{what} tensor")
        elif num in (6, 11):  # g, graphs
            _graph(buf, s, e, depth + 1, f"{what} subgraph")
        elif num in (22, 23):  # sparse_tensor(s)
            for n2, w2, s2, e2 in _fields(buf, s, e, f"{what} sparse tensor"):
                if n2 in (1, 2) and w2 == 2:
                    _tensor(buf, s2, e2, f"{what} sparse tensor")
    return found


def _check_quant_params(g: _Graph, buf: memoryview) -> None:
    for n in g.nodes:
        positions = _QPARAMS.get(n.op_type)
        if positions is None or n.domain not in ("", "ai.onnx", "com.microsoft"):
            continue
        scales = _SCALES.get(n.op_type, ())
        for k in positions:
            if k >= len(n.inputs) or not n.inputs[k] or n.inputs[k] not in g.tensors:
                continue
            t = g.tensors[n.inputs[k]]
            kind = "scale" if k in scales else "zero point"
            where = f"{n.op_type} node '{(n.name or '?')[:60]}' {kind} '{t.name[:60]}'"
            if t.elements == 0:
                raise _Bad(f"{where} is empty (dims {t.dims}); ONNX Runtime would read past it")
            if len(t.dims) > 1:
                raise _Bad(f"{where} has dims {t.dims}; expected a scalar or a 1-D tensor")
            if k in scales:
                _check_scale_values(buf, t, where)


def _check_scale_values(buf: memoryview, t: _Tensor, where: str) -> None:
    if t.dtype != _FLOAT:
        return  # float16 scales: rare, left to ORT
    if t.raw is not None:
        a, b = t.raw
    elif t.floats is not None:
        a, b = t.floats
    else:
        return
    values = struct.unpack_from(f"<{(b - a) // 4}f", buf, a)
    bad = next((v for v in values if not (math.isfinite(v) and v > 0)), None)
    if bad is not None:
        raise _Bad(f"{where} holds {bad:g}; scales must be finite and > 0")


def check_onnx(data: bytes | bytearray | memoryview, source: str) -> None:
    """Check that an ONNX model is safe to hand to ONNX Runtime.

    Args:
        data: the whole ``.onnx`` file.
        source: file name used in the error message.

    Raises:
        ModelLoadError: one line naming the file and the first unsafe structure found.
    """
    check_onnx_header(data, source)
    buf = memoryview(data).cast("B")
    try:
        for num, wire, s, e in _fields(buf, 0, len(buf), "model"):
            if num == 7 and wire == 2:
                _graph(buf, s, e, 0, "graph")
            elif num == 25 and wire == 2:  # local functions hold nodes (and their Constants)
                g = _Graph()
                for n2, w2, s2, e2 in _fields(buf, s, e, "function"):
                    if n2 == 7 and w2 == 2:
                        _node(buf, s2, e2, 1, g)
                _check_quant_params(g, buf)
    except _Bad as exc:
        raise ModelLoadError(f"{source}: unsafe ONNX model: {exc}") from None
    except RecursionError:
        raise ModelLoadError(f"{source}: unsafe ONNX model: nested too deeply") from None


# -- format sniffing ---------------------------------------------------------------------------
def sniff_format(source: bytes | bytearray | memoryview | str | os.PathLike[str]) -> str | None:
    """Tell a TFLite flatbuffer from an ONNX protobuf by content, not by file name.

    Args:
        source: the model bytes, or a path (only the first 64 KiB are read).

    Returns:
        ``"tflite"``, ``"onnx"`` or ``None`` when neither is recognised.
    """
    if isinstance(source, (str, os.PathLike)):
        try:
            with open(source, "rb") as f:
                head = memoryview(f.read(65536))
        except OSError:
            return None
    else:
        head = memoryview(source).cast("B")[:65536]
    if len(head) >= 8 and bytes(head[4:8]) == TFLITE_IDENTIFIER:
        return "tflite"
    fields = _protobuf_fields(head, partial=True)
    if fields and fields[0] in _ONNX_FIELDS and {1, 7, 8} & set(fields):
        return "onnx"
    return None


def _protobuf_fields(buf: memoryview, *, partial: bool, limit: int = 64) -> list[int] | None:
    """Field numbers of the top-level protobuf fields, or None if the bytes are not protobuf.

    ``partial``: ``buf`` may be a prefix, so a field running past its end is fine.
    """
    pos, end, out = 0, len(buf), []
    while pos < end and len(out) < limit:
        key, pos = _varint(buf, pos)
        if key is None:
            return None
        number, wire = key >> 3, key & 7
        if number == 0 or _ONNX_FIELDS.get(number, wire) != wire:
            return None
        if wire == 0:
            _, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            pos = pos + length if length is not None else None
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            return None
        if pos is None or (pos > end and not partial):
            return None
        out.append(number)
    return out


def check_onnx_header(data: bytes | bytearray | memoryview, source: str) -> None:
    """Cheap sanity check that the bytes are an ONNX ``ModelProto`` (``check_onnx`` does more).

    Raises:
        ModelLoadError: empty file, not protobuf, or no graph.
    """
    buf = memoryview(data).cast("B")
    if not len(buf):
        raise ModelLoadError(f"{source}: file is empty, expected an ONNX model")
    if sniff_format(buf) == "tflite":
        raise ModelLoadError(f"{source}: named like an ONNX model but is really a TFLite file")
    fields = _protobuf_fields(buf, partial=False, limit=1 << 20)
    if fields is None:
        raise ModelLoadError(
            f"{source}: not an ONNX model (the bytes do not parse as a protobuf ModelProto; "
            "truncated or corrupt?)"
        )
    if 7 not in fields:
        raise ModelLoadError(f"{source}: ONNX ModelProto without a graph (truncated or corrupt?)")


__all__ = ["MAX_GRAPH_DEPTH", "check_onnx", "check_onnx_header", "sniff_format"]
