"""Checks that run before any interpreter sees a model file.

A corrupt ``.tflite`` can kill the process that loads it. ai-edge-litert 2.3 runs the flatbuffer
verifier (older ``tflite_runtime`` / ``tf.lite`` fallbacks may not), but nothing checks what the
flatbuffer *means*: tensor indices, operator arity, omitted inputs, tensor types, quantization
parameters. Kernels and XNNPACK trust those and segfault or abort (``tests/runtime/test_fuzz.py``
and ``tests/stress/fuzz_models.py`` found each rule below the structural ones).
``check_tflite`` walks the whole flatbuffer with bounds-checked reads (``struct.unpack_from`` on a
memoryview: no copies; ~3 ms for a 14 MB MobileNetV2) and raises ``ModelLoadError`` with one line
naming what is wrong. ONNX Runtime parses protobuf safely, so ``check_onnx_header`` only makes
sure the bytes are a protobuf ``ModelProto`` at all.

``probe_in_subprocess`` is the last line of defence for files without a trusted manifest: it loads,
allocates and invokes the model once in a child process and refuses the model if the child dies.
"""

from __future__ import annotations

import math
import os
import re
import signal
import struct
import subprocess
import sys
from pathlib import Path

from .errors import ModelLoadError

TFLITE_IDENTIFIER = b"TFL3"
TFLITE_SCHEMA_VERSION = 3
MAX_BUILTIN_CODE = 209  # STABLEHLO_CASE in the schema ai-edge-litert 2.3 ships
CUSTOM_CODE = 32
MAX_RANK = 16  # TFLite kernels support rank <= 6; anything far above is corruption
MAX_ELEMENTS = 2**31 - 1  # kernels index tensors with int: more elements overflow

_U8 = struct.Struct("<B")
_I8 = struct.Struct("<b")
_U16 = struct.Struct("<H")
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_HH = struct.Struct("<HH")

# TensorType -> (name, bits per element); None bits: no fixed size (string, resource, variant).
TENSOR_TYPES: dict[int, tuple[str, int | None]] = {
    0: ("float32", 32), 1: ("float16", 16), 2: ("int32", 32), 3: ("uint8", 8),
    4: ("int64", 64), 5: ("string", None), 6: ("bool", 8), 7: ("int16", 16),
    8: ("complex64", 64), 9: ("int8", 8), 10: ("float64", 64), 11: ("complex128", 128),
    12: ("uint64", 64), 13: ("resource", None), 14: ("variant", None), 15: ("uint32", 32),
    16: ("uint16", 16), 17: ("int4", 4), 18: ("bfloat16", 16), 19: ("int2", 2),
    20: ("uint4", 4), 21: ("float8_e4m3fn", 8), 22: ("float8_e5m2", 8),
}  # fmt: skip
_STRING, _RESOURCE, _VARIANT = 5, 13, 14


class _Corrupt(Exception):
    """One reason the flatbuffer is unsafe; ``check_tflite`` prefixes the file name."""


# -- bounds-checked flatbuffer reading -----------------------------------------------------------
class _Reader:
    """Little-endian reads from the model bytes; every read is bounds- and alignment-checked."""

    __slots__ = ("buf", "end")

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf
        self.end = len(buf)

    def need(self, pos: int, size: int, align: int, what: str) -> None:
        """Raise unless ``size`` bytes at ``pos`` lie inside the file, ``align``-aligned."""
        if pos < 0 or pos + size > self.end:
            raise _Corrupt(f"{what} points outside the file (byte {pos}, file is {self.end} bytes)")
        if pos % align:
            raise _Corrupt(f"{what} is misaligned (byte {pos}, needs {align}-byte alignment)")

    def u32(self, pos: int, what: str) -> int:
        self.need(pos, 4, 4, what)
        return _U32.unpack_from(self.buf, pos)[0]

    def deref(self, pos: int, what: str) -> int:
        """Follow the unsigned 32-bit offset stored at ``pos``."""
        return pos + self.u32(pos, what)

    def vector(self, pos: int, elem_size: int, what: str) -> tuple[int, int]:
        """Return (first element position, length) of the vector at ``pos``."""
        n = self.u32(pos, what)
        start = pos + 4
        if n * elem_size > self.end - start:
            raise _Corrupt(
                f"{what} claims {n} elements of {elem_size} bytes: past the end of the file"
            )
        return start, n

    def string(self, pos: int, what: str) -> str:
        start, n = self.vector(pos, 1, what)
        if start + n >= self.end or self.buf[start + n] != 0:
            raise _Corrupt(f"{what} is not a terminated string")
        try:  # flatbuffer strings are UTF-8; LiteRT's Python wrapper fails on anything else
            return str(self.buf[start : start + n], "utf-8")
        except UnicodeDecodeError:
            raise _Corrupt(f"{what} is not valid UTF-8") from None


class _Table:
    """One flatbuffer table: vtable checked on construction, fields checked on access."""

    __slots__ = ("r", "pos", "vt", "nfields", "size", "what")

    def __init__(self, r: _Reader, pos: int, what: str) -> None:
        r.need(pos, 4, 4, what)
        vt = pos - _I32.unpack_from(r.buf, pos)[0]
        r.need(vt, 4, 2, f"{what} (vtable)")
        vt_size, obj_size = _HH.unpack_from(r.buf, vt)
        if vt_size < 4 or vt_size % 2 or vt + vt_size > r.end:
            raise _Corrupt(f"{what} has a malformed vtable (size {vt_size})")
        if obj_size < 4 or pos + obj_size > r.end:
            raise _Corrupt(f"{what} runs past the end of the file")
        self.r, self.pos, self.vt, self.what = r, pos, vt, what
        self.nfields = (vt_size - 4) // 2
        self.size = obj_size

    def field(self, fid: int, size: int) -> int:
        """Position of field ``fid`` (``size`` bytes wide), or 0 when it is absent."""
        if fid >= self.nfields:
            return 0
        off = _U16.unpack_from(self.r.buf, self.vt + 4 + 2 * fid)[0]
        if off == 0:
            return 0
        if off < 4 or off + size > self.size:
            raise _Corrupt(f"{self.what}: field {fid} lies outside its table")
        pos = self.pos + off
        if pos % size:
            raise _Corrupt(f"{self.what}: field {fid} is misaligned")
        return pos

    def scalar(self, fid: int, fmt: struct.Struct, default: int = 0) -> int:
        pos = self.field(fid, fmt.size)
        return fmt.unpack_from(self.r.buf, pos)[0] if pos else default

    def target(self, fid: int, what: str) -> int:
        """Position an offset field points at, or 0 when the field is absent."""
        pos = self.field(fid, 4)
        return self.r.deref(pos, what) if pos else 0

    def table(self, fid: int, what: str) -> _Table | None:
        pos = self.target(fid, what)
        return _Table(self.r, pos, what) if pos else None

    def vector(self, fid: int, elem_size: int, what: str) -> tuple[int, int]:
        pos = self.target(fid, what)
        return self.r.vector(pos, elem_size, what) if pos else (0, 0)

    def ints(self, fid: int, what: str, fmt: str = "i") -> tuple[int, ...]:
        """Decode a vector of 32-bit ints (``fmt`` "i"/"I"/"f") or 64-bit ("q")."""
        start, n = self.vector(fid, struct.calcsize(fmt), what)
        return struct.unpack_from(f"<{n}{fmt}", self.r.buf, start) if n else ()

    def string(self, fid: int, what: str) -> str | None:
        pos = self.target(fid, what)
        return self.r.string(pos, what) if pos else None

    def tables(self, fid: int, what: str) -> list[_Table]:
        start, n = self.vector(fid, 4, what)
        r = self.r
        return [_Table(r, r.deref(start + 4 * i, f"{what} {i}"), f"{what} {i}") for i in range(n)]


# -- model-level checks --------------------------------------------------------------------------
class _Model:
    """Facts gathered while checking, shared by the per-subgraph checks."""

    def __init__(self, r: _Reader, root: _Table) -> None:
        self.r = r
        self.root = root
        self.buffers: list[tuple[int, int]] = []  # (position of the data, byte length)
        self.opcodes: list[int] = []  # effective builtin code per operator code
        self.n_subgraphs = 0
        self.calls: dict[int, set[int]] = {}  # subgraph -> subgraphs its ops call
        self.io: list[tuple[list[_Tensor], list[_Tensor]]] = []  # per subgraph: inputs, outputs
        self.external_ids: set[int] = set()  # ids of weights in external files


class _Tensor:
    """What the operator checks need to know about one tensor."""

    __slots__ = ("kind", "ttype", "shape", "signature", "scales")

    def __init__(
        self,
        kind: int,
        ttype: int,
        shape: tuple[int, ...],
        signature: tuple[int, ...],
        scales: tuple[float, ...],
    ) -> None:
        self.kind, self.ttype, self.shape, self.scales = kind, ttype, shape, scales
        self.signature = signature or shape  # -1 marks a dynamic dim

    def static_dim(self, i: int) -> int | None:
        """Dim ``i`` when it is known before run time, else None."""
        return self.shape[i] if self.signature[i] >= 0 else None


def check_tflite(data: bytes | bytearray | memoryview, source: str) -> None:
    """Check that a TFLite model is safe to hand to the interpreter.

    Args:
        data: the whole ``.tflite`` file (not copied).
        source: file name used in the error message.

    Raises:
        ModelLoadError: one line naming the file and the first unsafe structure found.
    """
    buf = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
    try:
        _check_model(_Reader(buf))
    except _Corrupt as exc:
        raise ModelLoadError(f"{source}: corrupt TFLite model: {_name_ops(str(exc))}") from None
    except Exception as exc:  # noqa: BLE001 - any unanticipated failure still fails cleanly
        raise ModelLoadError(
            f"{source}: corrupt TFLite model (check failed with {type(exc).__name__}: {exc})"
        ) from None


def _check_model(r: _Reader) -> None:
    if r.end < 8:
        raise _Corrupt(f"file is only {r.end} bytes, too short for a flatbuffer")
    ident = bytes(r.buf[4:8])
    if ident != TFLITE_IDENTIFIER:
        raise _Corrupt(f"file identifier is {ident!r}, expected {TFLITE_IDENTIFIER!r}")
    root = _Table(r, r.deref(0, "root table offset"), "model table")
    version = root.scalar(0, _U32)
    if version != TFLITE_SCHEMA_VERSION:
        raise _Corrupt(f"schema version {version}, expected {TFLITE_SCHEMA_VERSION}")
    m = _Model(r, root)
    m.buffers = [_check_buffer(r, t) for t in root.tables(4, "buffer")]
    m.opcodes = [_check_opcode(t) for t in root.tables(1, "operator code")]
    subgraphs = root.tables(2, "subgraph")
    if not subgraphs:
        raise _Corrupt("model has no subgraphs")
    m.n_subgraphs = len(subgraphs)
    m.external_ids = _check_external_buffers(root)
    counts = [_check_subgraph(m, i, sg) for i, sg in enumerate(subgraphs)]
    root.string(3, "model description")
    _check_metadata(m)
    for sg in _check_signatures(m, counts):
        _check_io_types(m, sg)
    _check_call_graph(m.calls)


def _check_buffer(r: _Reader, t: _Table) -> tuple[int, int]:
    start, n = t.vector(0, 1, t.what)
    offset, size = t.scalar(1, _U64), t.scalar(2, _U64)
    if offset > 1:  # models over 2 GB keep buffers after the flatbuffer, addressed from byte 0
        if n:
            raise _Corrupt(f"{t.what} has both inline data and an external offset")
        if offset + size > r.end:
            raise _Corrupt(
                f"{t.what} data at bytes {offset}..{offset + size} lies past the end of the "
                f"{r.end}-byte file"
            )
        return offset, size
    return start, n


def _check_opcode(t: _Table) -> int:
    deprecated = t.scalar(0, _I8)
    builtin = t.scalar(3, _I32)
    code = max(deprecated, builtin)  # how LiteRT's GetBuiltinCode resolves the two fields
    if not 0 <= code <= MAX_BUILTIN_CODE:
        raise _Corrupt(f"{t.what} has unknown builtin code {code}")
    custom = t.string(1, f"{t.what} custom code")
    if code == CUSTOM_CODE and not custom:
        raise _Corrupt(f"{t.what} is a custom op without a custom code")
    if t.scalar(2, _I32, 1) < 1:
        raise _Corrupt(f"{t.what} has version {t.scalar(2, _I32, 1)}, expected >= 1")
    return code


def _check_metadata(m: _Model) -> None:
    nbuf = len(m.buffers)
    for i in m.root.ints(5, "metadata buffer list", "I"):
        if i >= nbuf:
            raise _Corrupt(f"metadata buffer index {i} out of range ({nbuf} buffers)")
    for t in m.root.tables(6, "metadata entry"):
        t.string(0, f"{t.what} name")
        if t.scalar(1, _U32) >= nbuf:
            raise _Corrupt(f"{t.what} names buffer {t.scalar(1, _U32)} of {nbuf}")


def _check_signatures(m: _Model, tensor_counts: list[int]) -> set[int]:
    """Check signature defs; return the subgraphs they expose."""
    exposed = set()
    for sig in m.root.tables(7, "signature"):
        sg = sig.scalar(4, _U32)
        if sg >= m.n_subgraphs:
            raise _Corrupt(f"{sig.what} names subgraph {sg} of {m.n_subgraphs}")
        sig.string(2, f"{sig.what} key")
        for fid, kind in ((0, "input"), (1, "output")):
            for tm in sig.tables(fid, f"{sig.what} {kind}"):
                tm.string(0, f"{tm.what} name")
                idx = tm.scalar(1, _U32)
                if idx >= tensor_counts[sg]:
                    raise _Corrupt(
                        f"{tm.what} names tensor {idx}; subgraph {sg} has {tensor_counts[sg]}"
                    )
        exposed.add(sg)
    return exposed


# Tensor types the LiteRT Python API can hand over as numpy arrays.
_NUMPY_TYPES = frozenset({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 15, 16})


def _check_io_types(m: _Model, sg: int) -> None:
    """Inputs/outputs a caller feeds or reads must have a numpy type (else the wrapper raises)."""
    for kind, tensors in zip(("input", "output"), m.io[sg], strict=True):
        for k, t in enumerate(tensors):
            if t.ttype not in _NUMPY_TYPES:
                raise _Corrupt(
                    f"subgraph {sg} {kind} {k} has type {TENSOR_TYPES[t.ttype][0]}, which "
                    "cannot be passed to or from the interpreter as an array"
                )


def _check_external_buffers(root: _Table) -> set[int]:
    """Check weights kept in external files; return the ids tensors may refer to."""
    groups = root.tables(8, "external buffer group")
    for g in groups:
        g.string(0, f"{g.what} name")
    ids = set()
    for t in root.tables(9, "external buffer"):
        if t.scalar(1, _U32) >= len(groups):
            raise _Corrupt(f"{t.what} names group {t.scalar(1, _U32)} of {len(groups)}")
        t.scalar(2, _U64), t.scalar(3, _U64)
        t.string(4, f"{t.what} packing")
        ids.add(t.scalar(0, _U32))
    return ids


def _check_call_graph(calls: dict[int, set[int]]) -> None:
    """Control-flow ops must not call their own subgraph, directly or not (infinite recursion)."""
    state: dict[int, int] = {}  # 1: on the current path, 2: done

    def visit(sg: int, path: list[int]) -> None:
        state[sg] = 1
        for callee in sorted(calls.get(sg, ())):
            if state.get(callee) == 1:
                cycle = " -> ".join(str(s) for s in [*path, sg, callee])
                raise _Corrupt(f"control-flow ops call subgraphs in a cycle ({cycle})")
            if callee not in state:
                visit(callee, [*path, sg])
        state[sg] = 2

    for sg in sorted(calls):
        if sg not in state:
            visit(sg, [])


# -- subgraphs, tensors, operators ---------------------------------------------------------------
def _check_subgraph(m: _Model, index: int, sg: _Table) -> int:
    """Check one subgraph; return its tensor count."""
    where = f"subgraph {index}"
    tensors = sg.tables(0, f"{where} tensor")
    n = len(tensors)
    infos = [_check_tensor(m, t) for t in tensors]
    const = [t.kind == _CONSTANT for t in infos]
    ios = {}
    for fid, kind in ((1, "input"), (2, "output")):
        ios[kind] = sg.ints(fid, f"{where} {kind} list")
        for k, idx in enumerate(ios[kind]):
            if not 0 <= idx < n:
                raise _Corrupt(f"{where} {kind} {k} is tensor {idx}; the subgraph has {n}")
            if kind == "input" and const[idx]:
                raise _Corrupt(f"{where} input {k} (tensor {idx}) is a constant")
    sg.string(4, f"{where} name")
    m.io.append(([infos[i] for i in ios["input"]], [infos[i] for i in ios["output"]]))
    if index == 0:  # the entry point; signature subgraphs are checked once signatures are read
        _check_io_types(m, 0)
    _check_operators(m, index, sg, infos, ios["input"], ios["output"])
    return n


def _check_operators(
    m: _Model,
    index: int,
    sg: _Table,
    infos: list[_Tensor],
    inputs: tuple[int, ...],
    outputs: tuple[int, ...],
) -> None:
    """Check each operator, and the data flow: LiteRT runs operators in file order, so every
    input must be a constant, a variable, a subgraph input or an earlier operator's output."""
    const = [t.kind == _CONSTANT for t in infos]
    ready = {i for i, t in enumerate(infos) if t.kind != _ACTIVATION} | set(inputs)
    for op in sg.tables(3, f"subgraph {index} operator"):
        op_in, op_out = _check_operator(m, index, op, len(infos), const)
        code = m.opcodes[op.scalar(0, _U32)]
        _check_op_tensors(op.what, code, op_in, op_out, infos)
        _check_op_options(op, code, op_in, op_out, infos)
        for k, t in enumerate(op_in):
            if t != -1 and t not in ready:
                raise _Corrupt(f"{op.what} input {k} (tensor {t}) is read before it is written")
        ready.update(op_out)
    for k, t in enumerate(outputs):
        if t not in ready:
            raise _Corrupt(f"subgraph {index} output {k} (tensor {t}) is never written")


_ACTIVATION, _CONSTANT, _VARIABLE = 0, 1, 2


def _check_tensor(m: _Model, t: _Table) -> _Tensor:
    """Check one tensor; its kind is _CONSTANT (holds data), _VARIABLE or _ACTIVATION."""
    name = t.string(3, f"{t.what} name")
    if name:
        t.what = f"{t.what} ({name[:60]})"
    ttype = t.scalar(1, _I8)
    if ttype not in TENSOR_TYPES:
        raise _Corrupt(f"{t.what} has unknown type {ttype}")
    shape = t.ints(0, f"{t.what} shape")
    elements = _check_shape(t, shape)
    sig = t.ints(7, f"{t.what} shape signature")
    if sig and (len(sig) != len(shape) or any(d < -1 for d in sig)):
        raise _Corrupt(f"{t.what} shape signature {list(sig)} does not fit shape {list(shape)}")
    for v in t.tables(9, f"{t.what} variant subtype"):
        _check_shape(v, v.ints(0, f"{v.what} shape"))
        if v.scalar(1, _I8) not in TENSOR_TYPES:
            raise _Corrupt(f"{v.what} has unknown type {v.scalar(1, _I8)}")
    external = t.scalar(10, _U32)
    if external and external not in m.external_ids:
        raise _Corrupt(f"{t.what} uses external buffer {external}, which the model lacks")
    b = t.scalar(2, _U32)
    if b >= len(m.buffers):
        raise _Corrupt(f"{t.what} uses buffer {b}; the model has {len(m.buffers)}")
    scales = _check_quantization(t, shape, ttype)
    sparsity = t.table(6, f"{t.what} sparsity")
    dense = _check_sparsity(sparsity, shape) if sparsity else None
    pos, nbytes = m.buffers[b]
    if nbytes:
        _check_tensor_data(m.r, t, ttype, shape, elements if dense is None else dense, pos, nbytes)
        kind = _CONSTANT
    else:
        kind = _VARIABLE if t.scalar(5, _U8) else _ACTIVATION
    # Kernels turn scales into fixed-point multipliers and abort (TFLITE_CHECK) on a zero one;
    # only per-channel constant scales (all-zero weight channels) may be 0.
    if scales and (len(scales) == 1 or kind != _CONSTANT) and min(scales) < _MIN_SCALE:
        raise _Corrupt(
            f"{t.what} has quantization scale {min(scales):g}, expected a positive normal float"
        )
    return _Tensor(kind, ttype, shape, sig, scales)


def _check_shape(t: _Table, shape: tuple[int, ...]) -> int:
    if len(shape) > MAX_RANK:
        raise _Corrupt(f"{t.what} has rank {len(shape)} (at most {MAX_RANK} supported)")
    elements = 1
    for d in shape:
        if d < 0:
            raise _Corrupt(f"{t.what} has negative dimension in shape {list(shape)}")
        elements *= d
    if elements > MAX_ELEMENTS:
        raise _Corrupt(f"{t.what} shape {list(shape)} has {elements} elements (max 2^31-1)")
    return elements


def _check_tensor_data(
    r: _Reader, t: _Table, ttype: int, shape: tuple[int, ...], elements: int, pos: int, nbytes: int
) -> None:
    tname, bits = TENSOR_TYPES[ttype]
    if ttype in (_RESOURCE, _VARIANT):
        raise _Corrupt(f"{t.what} is a {tname} tensor with constant data")
    if ttype == _STRING:
        _check_string_data(r, t, elements, pos, nbytes)
        return
    assert bits is not None
    want = elements * bits // 8 if bits >= 8 else -(-elements * bits // 8)
    # Sub-byte types may be stored packed or one value per byte.
    if nbytes != want and not (bits < 8 and nbytes == elements):
        raise _Corrupt(
            f"{t.what}: constant buffer holds {nbytes} bytes, shape {list(shape)} {tname} "
            f"needs {want}"
        )


def _check_string_data(r: _Reader, t: _Table, elements: int, pos: int, nbytes: int) -> None:
    """String tensors: count, then count+1 offsets into the buffer, non-decreasing."""
    if nbytes < 8:
        raise _Corrupt(f"{t.what}: string buffer of {nbytes} bytes is too short")
    count = _I32.unpack_from(r.buf, pos)[0]
    if count != elements or (count + 2) * 4 > nbytes:
        raise _Corrupt(f"{t.what}: string buffer holds {count} strings, shape needs {elements}")
    offsets = struct.unpack_from(f"<{count + 1}i", r.buf, pos + 4)
    prev = (count + 2) * 4
    if offsets[0] != prev or offsets[-1] != nbytes:
        raise _Corrupt(f"{t.what}: string buffer offsets do not span the buffer")
    for off in offsets:
        if off < prev:
            raise _Corrupt(f"{t.what}: string buffer offsets decrease")
        prev = off


_MIN_SCALE = 1.1754944e-38  # smallest normal float32; XNNPACK and kernels need normal scales


# Storage type -> zero-point range (kernels index lookup tables with value - zero point).
_ZERO_POINT_RANGE = {
    9: (-128, 127), 3: (0, 255), 7: (-32768, 32767), 17: (-8, 7), 20: (0, 15),
    16: (0, 65535), 2: (-(2**31), 2**31 - 1),
}  # fmt: skip


def _check_quantization(t: _Table, shape: tuple[int, ...], ttype: int) -> tuple[float, ...]:
    """Check quantization parameters; return the scales."""
    q = t.table(4, f"{t.what} quantization")
    if q is None:
        return ()
    q.ints(0, f"{q.what} min", "f"), q.ints(1, f"{q.what} max", "f")
    scales = q.ints(2, f"{q.what} scales", "f")
    zps = q.ints(3, f"{q.what} zero points", "q")
    if scales and len(zps) != len(scales):
        raise _Corrupt(f"{q.what}: {len(scales)} scales but {len(zps)} zero points")
    lo, hi = _ZERO_POINT_RANGE.get(ttype, (-(2**63), 2**63 - 1))
    if zps and not lo <= min(zps) <= max(zps) <= hi:
        bad = min(zps) if min(zps) < lo else max(zps)
        raise _Corrupt(
            f"{q.what}: zero point {bad} outside the {TENSOR_TYPES[ttype][0]} range [{lo}, {hi}]"
        )
    if any(not math.isfinite(s) or s < 0 for s in scales):
        raise _Corrupt(f"{q.what}: scales must be finite and >= 0")
    dim = q.scalar(6, _I32)
    if len(scales) > 1 or dim:
        if not 0 <= dim < max(len(shape), 1):
            raise _Corrupt(f"{q.what}: quantized dimension {dim} outside rank {len(shape)}")
        if len(scales) > 1 and shape and shape[dim] != len(scales):
            raise _Corrupt(
                f"{q.what}: {len(scales)} per-channel scales but dimension {dim} of shape "
                f"{list(shape)} has {shape[dim]} channels"
            )
    _check_union(q, 4, 5, _QUANT_DETAILS, f"{q.what} details", None)
    return scales


def _check_sparsity(sp: _Table, shape: tuple[int, ...]) -> int:
    """Check sparse-tensor metadata the way the reference verifier does; return stored values."""
    order = sp.ints(0, f"{sp.what} traversal order")
    block_map = sp.ints(1, f"{sp.what} block map")
    dims = sp.tables(2, f"{sp.what} dimension")
    rank, total = len(shape), len(order)
    bad = _Corrupt(f"{sp.what} is inconsistent with shape {list(shape)}")
    if total < rank or len(dims) != total or len(block_map) != total - rank:
        raise bad
    if sorted(order[:rank]) != list(range(rank)) or sorted(order[rank:]) != list(
        range(rank, total)
    ):
        raise bad
    sizes = list(shape) + [0] * (total - rank)
    for i, mapped in enumerate(block_map):
        block = dims[rank + i].scalar(1, _I32)
        if block <= 0 or not 0 <= mapped < rank:
            raise bad
        sizes[order[rank + i]] = block
        sizes[mapped] //= block
    count = 1
    for level, dim in enumerate(order):
        dm = dims[level]
        if dm.scalar(0, _U8) == 0:  # dense: every index stored implicitly
            if dm.scalar(1, _I32) != sizes[dim]:
                raise bad
            count *= sizes[dim]
            continue
        segments = _sparse_index_vector(dm, 2, 3)
        indices = _sparse_index_vector(dm, 4, 5)
        if len(segments) != count + 1 or segments[0] < 0 or segments[-1] != len(indices):
            raise bad
        if any(a > b for a, b in zip(segments, segments[1:], strict=False)):
            raise bad
        if any(not 0 <= i < sizes[dim] for i in indices):
            raise bad
        count = len(indices)
        if count > MAX_ELEMENTS:
            raise bad
    return count


def _sparse_index_vector(dm: _Table, type_fid: int, value_fid: int) -> tuple[int, ...]:
    kind = dm.scalar(type_fid, _U8)
    fmt = {1: "i", 2: "H", 3: "B"}.get(kind)
    table = dm.table(value_fid, f"{dm.what} index vector")
    if fmt is None or table is None:
        raise _Corrupt(f"{dm.what}: sparse dimension without a valid index vector")
    return table.ints(0, f"{table.what} values", fmt)


def _check_operator(
    m: _Model, sg: int, op: _Table, n: int, const: list[bool]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Check one operator; return its (inputs, outputs) tensor indices."""
    idx = op.scalar(0, _U32)
    if idx >= len(m.opcodes):
        raise _Corrupt(f"{op.what} uses operator code {idx}; the model has {len(m.opcodes)}")
    code = m.opcodes[idx]
    op.what = f"{op.what} (<op {code}>)"  # named only if an error is raised (see _name_ops)
    inputs = op.ints(1, f"{op.what} inputs")
    outputs = op.ints(2, f"{op.what} outputs")
    _check_arity(op.what, code, inputs, outputs)
    for kind, idxs in (("input", inputs), ("output", outputs), ("intermediate", op.ints(8, "x"))):
        for k, t in enumerate(idxs):
            if t == -1 and kind == "input":
                continue  # an omitted optional input (positions checked by _check_arity)
            if not 0 <= t < n:
                raise _Corrupt(f"{op.what} {kind} {k} is tensor {t}; the subgraph has {n}")
            if kind == "output" and const[t]:
                # Outputs of constant (read-only, possibly mmapped) tensors crash on write.
                raise _Corrupt(f"{op.what} output {k} (tensor {t}) is a constant")
    op.vector(5, 1, f"{op.what} custom options")
    op.vector(7, 1, f"{op.what} mutating variable inputs")
    offset, size = op.scalar(9, _U64), op.scalar(10, _U64)
    if offset > 1 and offset + size > m.r.end:
        raise _Corrupt(f"{op.what} custom options lie past the end of the file")
    callees = m.calls.setdefault(sg, set())
    _check_union(op, 3, 4, _OPTIONS, f"{op.what} options", (m.n_subgraphs, callees))
    _check_union(op, 11, 12, _OPTIONS_2, f"{op.what} options", (m.n_subgraphs, callees))
    return inputs, outputs


_INT8, _UINT8, _INT16 = 9, 3, 7
_QUANT_TYPES = (_INT8, _UINT8, _INT16)


def _check_op_tensors(
    what: str, code: int, inputs: tuple[int, ...], outputs: tuple[int, ...], tensors: list[_Tensor]
) -> None:
    """Tensor types and quantization an operator's kernel (or XNNPACK) relies on without checking.

    Found by tests/runtime/test_fuzz.py: mismatched types slip past XNNPACK's node checks and make
    its setup fail, and XNNPACK's clean-up path then frees memory twice (abort); quantized kernels
    given an int8 tensor without scales, or with per-channel scales where they read one scale,
    turn a zero scale into a multiplier and abort in a TFLITE_CHECK.
    """
    ins = [tensors[t] for t in inputs if t != -1]
    outs = [tensors[t] for t in outputs]
    same = ins + outs if code in _SAME_TYPE else []
    if code in _SAME_TYPE_AS_INPUT and len(inputs) > _SAME_TYPE_AS_INPUT[code]:
        first = inputs[_SAME_TYPE_AS_INPUT[code]]
        same = ([tensors[first]] if first != -1 else []) + outs
    if code in _SHAPE_PRESERVING and ins and outs and ins[0].shape != outs[0].shape:
        # XNNPACK precomputes these outputs from constant inputs into a buffer sized by the
        # declared output shape: a smaller one is a heap overflow.
        raise _Corrupt(
            f"{what} output shape {list(outs[0].shape)} differs from its input's "
            f"{list(ins[0].shape)}"
        )
    if len({t.ttype for t in same}) > 1:
        types = ", ".join(TENSOR_TYPES[t.ttype][0] for t in same)
        raise _Corrupt(f"{what} mixes tensor types ({types}); its kernel needs one type")
    if code in _REQUANTIZING:
        per_channel = _PER_CHANNEL_INPUTS.get(code, ())
        for k, t in [*enumerate(inputs), *((None, t) for t in outputs)]:
            info = tensors[t] if t != -1 else None
            if info is None or info.ttype not in _QUANT_TYPES:
                continue
            if not info.scales:
                raise _Corrupt(f"{what}: tensor {t} is {TENSOR_TYPES[info.ttype][0]} without "
                               "quantization parameters")  # fmt: skip
            if len(info.scales) > 1 and k not in per_channel:
                raise _Corrupt(f"{what}: tensor {t} has per-channel scales where the kernel "
                               "reads one scale")  # fmt: skip
    _check_requantization(what, code, inputs, outputs, tensors)


def _check_requantization(
    what: str, code: int, inputs: tuple[int, ...], outputs: tuple[int, ...], tensors: list[_Tensor]
) -> None:
    """Scale combinations that make a quantized kernel abort in Prepare.

    Quantized ADD/SUB and SQUARED_DIFFERENCE rescale through
    ``QuantizeMultiplierSmallerThanOneExp``, which aborts the process unless the output
    multiplier is < 1: ADD/SUB 2*max(in) / (2^20 * out) (2^15 for int16); SQUARED_DIFFERENCE
    (2*max(in))^2 / (2^14 * out).
    """
    if code in _CONV_LIKE:
        _check_conv_requantization(what, code, inputs, outputs, tensors)
    if code not in (0, 41, 99) or len(inputs) != 2 or -1 in inputs:
        return
    a, b, out = tensors[inputs[0]], tensors[inputs[1]], tensors[outputs[0]]
    if out.ttype not in (_INT8, _UINT8, _INT16) or not (a.scales and b.scales and out.scales):
        return
    twice_max = 2.0 * max(a.scales[0], b.scales[0])
    if code == 99:  # SQUARED_DIFFERENCE
        if out.ttype == _INT16:
            return  # its int16 kernel requantizes without the check
        multiplier = twice_max * twice_max / ((1 << 14) * out.scales[0])
    else:
        multiplier = twice_max / ((1 << (15 if out.ttype == _INT16 else 20)) * out.scales[0])
    if not multiplier < 1.0:
        raise _Corrupt(
            f"{what}: output scale {out.scales[0]:g} is too small for input scales "
            f"{a.scales[0]:g} and {b.scales[0]:g} (the kernel would abort)"
        )


# Builtin code -> (input position, filter position) of ops XNNPACK runs as int8 convolutions.
_CONV_LIKE = {3: (0, 1), 4: (0, 1), 9: (0, 1), 67: (2, 1)}


def _check_conv_requantization(
    what: str, code: int, inputs: tuple[int, ...], outputs: tuple[int, ...], tensors: list[_Tensor]
) -> None:
    """XNNPACK accepts an int8 conv/FC after checking the first filter scale only, then fails to
    create it when another channel's input * filter / output scale is outside [2^-32, 256), and
    its clean-up path frees memory twice (abort). Check every channel."""
    xi, wi = _CONV_LIKE[code]
    if len(inputs) <= max(xi, wi) or inputs[xi] == -1 or inputs[wi] == -1:
        return
    x, w, out = tensors[inputs[xi]], tensors[inputs[wi]], tensors[outputs[0]]
    if out.ttype not in (_INT8, _UINT8) or not (x.scales and w.scales and out.scales):
        return
    for c, ws in enumerate(w.scales):
        r = x.scales[0] * ws / out.scales[0]
        if ws and not 2.0**-32 <= r < 256.0:
            raise _Corrupt(
                f"{what}: requantization scale {r:g} (input {x.scales[0]:g} x filter {ws:g} / "
                f"output {out.scales[0]:g}, channel {c}) is outside [2^-32, 256)"
            )


def _check_op_options(
    op: _Table, code: int, inputs: tuple[int, ...], outputs: tuple[int, ...], tensors: list[_Tensor]
) -> None:
    """Builtin options that XNNPACK or the kernels trust (found by the fuzz tests)."""
    if code in _WINDOW_OPTIONS:
        _check_window(op, code, inputs, outputs, tensors)
    elif code in _COUNT_OPTIONS:
        # XNNPACK's SPLIT visitor indexes the outputs num_splits times before any check.
        options_type, fid, what, io = _COUNT_OPTIONS[code]
        opts = op.table(4, f"{op.what} options") if op.scalar(3, _U8) == options_type else None
        count = opts.scalar(fid, _I32) if opts else 0
        have = len(outputs) if io == "outputs" else len(inputs)
        if count != have:
            raise _Corrupt(f"{op.what}: {what} is {count} but the operator has {have} {io}")


# Builtin code -> (options type, field of the count, its name, what it counts).
_COUNT_OPTIONS = {
    49: (35, 0, "num_splits", "outputs"),  # SPLIT / SplitOptions
    102: (79, 0, "num_splits", "outputs"),  # SPLIT_V / SplitVOptions
    83: (59, 0, "values_count", "inputs"),  # PACK / PackOptions
    88: (64, 0, "num", "outputs"),  # UNPACK / UnpackOptions
}
# Builtin code -> (options type, (padding, stride w, stride h, dilation w, dilation h, filter w,
# filter h) field ids; None: not in these options (dilation 1, filter from the weights)).
_WINDOW_OPTIONS = {
    3: (1, (0, 1, 2, 4, 5, None, None)),  # CONV_2D / Conv2DOptions
    4: (2, (0, 1, 2, 5, 6, None, None)),  # DEPTHWISE_CONV_2D / DepthwiseConv2DOptions
    1: (5, (0, 1, 2, None, None, 3, 4)),  # AVERAGE_POOL_2D / Pool2DOptions
    17: (5, (0, 1, 2, None, None, 3, 4)),  # MAX_POOL_2D
    12: (5, (0, 1, 2, None, None, 3, 4)),  # L2_POOL_2D
}


def _check_window(
    op: _Table, code: int, inputs: tuple[int, ...], outputs: tuple[int, ...], tensors: list[_Tensor]
) -> None:
    """Padding, strides, dilations and filter of a 2-D conv or pool give the declared output.

    LiteRT sizes the output from these at Prepare; a bad padding enum or a window larger than
    the input yields an empty tensor that later kernels (e.g. int16 RESIZE_BILINEAR) overrun.
    """
    options_type, fids = _WINDOW_OPTIONS[code]
    if op.scalar(3, _U8) != options_type or (opts := op.table(4, "x")) is None:
        raise _Corrupt(f"{op.what} lacks its {_OPTIONS[options_type][0]}")
    pad, sw, sh, dw, dh, fw, fh = (
        None if f is None else opts.scalar(f, _I8 if i == 0 else _I32, 0 if i < 3 else 1)
        for i, f in enumerate(fids)
    )
    if pad not in (0, 1):
        raise _Corrupt(f"{op.what} has padding {pad}, expected 0 (SAME) or 1 (VALID)")
    if fw is None:  # conv: the filter is weights [out, h, w, in] / depthwise [1, h, w, out]
        w = tensors[inputs[1]].shape
        fh, fw = (w[1], w[2]) if len(w) == 4 else (1, 1)
    if min(sw, sh, dw or 1, dh or 1, fw, fh) < 1:
        raise _Corrupt(
            f"{op.what} has stride {sw}x{sh}, dilation {dw or 1}x{dh or 1}, filter {fw}x{fh}: "
            "each must be >= 1"
        )
    x, out = tensors[inputs[0]], tensors[outputs[0]]
    if len(x.shape) != 4 or len(out.shape) != 4:
        return  # the kernel rejects other ranks itself
    for axis, f, stride, dil in ((1, fh, sh, dh or 1), (2, fw, sw, dw or 1)):
        size, declared = x.static_dim(axis), out.static_dim(axis)
        if size is None:
            continue
        window = (f - 1) * dil + 1
        expect = -(-size // stride) if pad == 0 else -(-(size - window + 1) // stride)
        if expect < 1 or (declared is not None and declared != expect):
            raise _Corrupt(
                f"{op.what}: input size {size} with window {window}, stride {stride} and "
                f"{('SAME', 'VALID')[pad]} padding gives output size {max(expect, 0)}, "
                f"the model declares {declared}"
            )


def _check_arity(what: str, code: int, inputs: tuple[int, ...], outputs: tuple[int, ...]) -> None:
    """Input/output counts and omitted (-1) inputs the kernels and delegates accept.

    XNNPACK and several kernels index ``node->inputs`` before (or without) checking its size, so
    an op with too few inputs, or -1 where an input is not optional, reads past an array and
    crashes, e.g. XNNPACK's STRIDED_SLICE visitor (found by tests/runtime/test_fuzz.py).
    """
    if code in _ARITY:
        lo_in, hi_in, lo_out, hi_out = _ARITY[code]
    else:  # ops not in the table: only the generic rules
        lo_in = 0 if code in _NO_INPUTS_OK else 1
        lo_out = 0 if code in _NO_OUTPUTS_OK else 1
        hi_in = hi_out = 1 << 30
    if not lo_in <= len(inputs) <= hi_in:
        raise _Corrupt(f"{what} has {len(inputs)} inputs, expected {_range(lo_in, hi_in)}")
    if not lo_out <= len(outputs) <= hi_out:
        raise _Corrupt(f"{what} has {len(outputs)} outputs, expected {_range(lo_out, hi_out)}")
    optional = _OPTIONAL_INPUTS.get(code, ())
    for k, t in enumerate(inputs):
        if t == -1 and optional is not None and k not in optional:
            raise _Corrupt(f"{what} input {k} is omitted (-1) but is not optional")


def _range(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"at least {lo}" if hi >= 1 << 30 else f"{lo}..{hi}"


def _check_union(
    t: _Table,
    type_fid: int,
    value_fid: int,
    schema: dict[int, tuple[str, str]],
    what: str,
    calls: tuple[int, set[int]] | None,
) -> None:
    """Check a union member table against its field layout (see ``_OPTIONS``)."""
    kind = t.scalar(type_fid, _U8)
    table = t.table(value_fid, what)
    if kind == 0:
        return
    if kind not in schema:
        raise _Corrupt(f"{what}: unknown options type {kind}")
    if table is None:
        return  # LiteRT uses defaults for absent options
    name, layout = schema[kind]
    table.what = f"{what} ({name})"
    for fid, code in enumerate(layout.split()):
        _check_field(table, fid, code, calls)


def _check_field(t: _Table, fid: int, code: str, calls: tuple[int, set[int]] | None) -> None:
    if code == "_":
        return
    if code in "1248":
        t.field(fid, int(code))
    elif code == "s":
        t.string(fid, f"{t.what} field {fid}")
    elif code[0] == "v":
        t.vector(fid, int(code[1]), f"{t.what} field {fid}")
    else:  # "g": one subgraph index, "G": a vector of them (control flow)
        # An absent index field reads as 0 (the schema default): the op calls subgraph 0.
        idxs = (t.scalar(fid, _I32),) if code == "g" else t.ints(fid, f"{t.what} field {fid}")
        n_sub, callees = calls if calls else (0, set())
        for i in idxs:
            if not 0 <= i < n_sub:
                raise _Corrupt(f"{t.what} calls subgraph {i}; the model has {n_sub}")
            callees.add(i)


def _name_ops(message: str) -> str:
    """Replace ``<op N>`` markers with builtin op names (the schema module is slow to import)."""
    if "<op " not in message:
        return message
    try:
        from ai_edge_litert import schema_py_generated as schema

        names = {v: k for k, v in vars(schema.BuiltinOperator).items() if isinstance(v, int)}
    except ImportError:  # pragma: no cover - names are cosmetic
        names = {}
    return re.sub(r"<op (\d+)>", lambda m: names.get(int(m[1]), f"builtin {m[1]}"), message)


# -- format sniffing and ONNX --------------------------------------------------------------------
# ModelProto field number -> protobuf wire type (0 varint, 2 length-delimited).
_ONNX_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}


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


def _varint(buf: memoryview, pos: int) -> tuple[int | None, int]:
    value = shift = 0
    for i in range(pos, min(pos + 10, len(buf))):
        value |= (buf[i] & 0x7F) << shift
        if buf[i] < 0x80:
            return value, i + 1
        shift += 7
    return None, pos


def check_onnx_header(data: bytes | bytearray | memoryview, source: str) -> None:
    """Cheap sanity check that the bytes are an ONNX ``ModelProto`` (ORT checks the rest).

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


# -- isolated probe ------------------------------------------------------------------------------
_PROBE = r"""
import sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter
try:
    it = Interpreter(model_path=sys.argv[1], num_threads=1)
    it.allocate_tensors()
except Exception as exc:
    print("LOAD-ERROR:", str(exc).strip().splitlines()[0] if str(exc).strip() else
          type(exc).__name__, file=sys.stderr)
    sys.exit(3)
rng = np.random.default_rng(0)
for d in it.get_input_details():
    dt, shape = np.dtype(d["dtype"]), tuple(d["shape"])
    scales = d["quantization_parameters"]["scales"]
    if dt.kind == "f":
        a = rng.standard_normal(shape).astype(dt)
    elif dt.kind in "iu" and len(scales):  # quantized values: any value is plausible
        info = np.iinfo(dt)
        a = rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dt)
    else:  # ids, indices, flags, strings: zeros are the safest plausible value
        a = np.zeros(shape, dt)
    it.set_tensor(d["index"], a)
try:
    it.invoke()
except Exception:
    pass  # a model may refuse random inputs; only a crash is grounds for refusal
"""


def probe_in_subprocess(path: str | os.PathLike[str], timeout: float = 120.0) -> None:
    """Load, allocate and invoke a TFLite model once in a child process.

    Args:
        path: the ``.tflite`` file.
        timeout: seconds before the probe counts as hung.

    Raises:
        ModelLoadError: the child crashed (signal), hung, or the interpreter refused the model.
    """
    cmd = [sys.executable, "-I", "-c", _PROBE, str(Path(path))]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ModelLoadError(
            f"{path}: the isolated probe did not finish within {timeout:g} s; refusing to load"
        ) from None
    if proc.returncode < 0:
        sig = -proc.returncode
        try:
            name = f"signal {sig}, {signal.Signals(sig).name}"
        except ValueError:
            name = f"signal {sig}"
        raise ModelLoadError(
            f"{path}: the model crashed the interpreter ({name}) in an isolated probe; "
            "refusing to load"
        )
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        detail = next(
            (ln for ln in lines if ln.startswith("LOAD-ERROR:")), lines[-1] if lines else ""
        )
        detail = detail.removeprefix("LOAD-ERROR:").strip()
        raise ModelLoadError(
            f"{path}: the TFLite interpreter refused the model in an isolated probe: {detail}"
        )


# -- operator arity ------------------------------------------------------------------------------
# Builtin code -> (min inputs, max inputs, min outputs, max outputs), from the LiteRT kernels.
def _codes(spec: str) -> tuple[int, ...]:
    """Builtin codes from "NAME=code ..." (names kept next to the numbers for readers)."""
    return tuple(int(item.partition("=")[2]) for item in spec.split())


_UNARY = _codes("""
    ABS=101 CEIL=104 FLOOR=8 ROUND=116 NEG=59 SQRT=75 RSQRT=76 SQUARE=92 EXP=47 LOG=73 SIN=66
    COS=108 TANH=28 LOGISTIC=14 RELU=19 RELU6=21 RELU_N1_TO_1=20 RELU_0_TO_1=152 ELU=111
    GELU=150 HARD_SWISH=117 LEAKY_RELU=98 SOFTMAX=25 LOG_SOFTMAX=50 L2_NORMALIZATION=11
    QUANTIZE=114 DEQUANTIZE=6 SIGN=158 CAST=53 ZEROS_LIKE=93 LOGICAL_NOT=87 AVERAGE_POOL_2D=1
    MAX_POOL_2D=17 L2_POOL_2D=12 SPACE_TO_DEPTH=26 DEPTH_TO_SPACE=5 SQUEEZE=43 SHAPE=77
    LOCAL_RESPONSE_NORMALIZATION=13 READ_VARIABLE=143 DENSIFY=124
""")
_BINARY = _codes("""
    ADD=0 SUB=41 MUL=18 DIV=42 MAXIMUM=55 MINIMUM=57 SQUARED_DIFFERENCE=99 POW=78 PRELU=54
    FLOOR_DIV=90 FLOOR_MOD=95 EQUAL=71 NOT_EQUAL=72 LESS=58 LESS_EQUAL=63 GREATER=61
    GREATER_EQUAL=62 LOGICAL_AND=86 LOGICAL_OR=84 MIRROR_PAD=100 MEAN=40 SUM=74 REDUCE_MAX=82
    REDUCE_MIN=89 REDUCE_PROD=81 REDUCE_ANY=91 TRANSPOSE=39 RESIZE_BILINEAR=23
    RESIZE_NEAREST_NEIGHBOR=97 BATCH_MATMUL=126 GATHER=36 GATHER_ND=107 EXPAND_DIMS=70
    ARG_MAX=56 ARG_MIN=79 TILE=69 BROADCAST_TO=130 FILL=94 CUMSUM=128 REVERSE_V2=105
    EMBEDDING_LOOKUP=7
""")
_TERNARY = _codes("""
    RANGE=96 SELECT=64 SELECT_V2=123 BATCH_TO_SPACE_ND=37 SPACE_TO_BATCH_ND=38 SLICE=65
    SCATTER_ND=122 DYNAMIC_UPDATE_SLICE=151
""")
_MANY = 1 << 30
_ARITY: dict[int, tuple[int, int, int, int]] = {
    **{c: (1, 1, 1, 1) for c in _UNARY},
    **{c: (2, 2, 1, 1) for c in _BINARY},
    **{c: (3, 3, 1, 1) for c in _TERNARY},
    3: (2, 3, 1, 1),  # CONV_2D: input, filter, optional bias
    4: (3, 3, 1, 1),  # DEPTHWISE_CONV_2D: LiteRT's kernel segfaults without a bias input
    9: (2, 3, 1, 2),  # FULLY_CONNECTED (+ shuffled-weights workspace output)
    67: (3, 4, 1, 1),  # TRANSPOSE_CONV: output shape, filter, input, optional bias
    2: (1, _MANY, 1, 1),  # CONCATENATION
    83: (1, _MANY, 1, 1),  # PACK
    88: (1, 1, 1, _MANY),  # UNPACK
    49: (2, 2, 1, _MANY),  # SPLIT: axis, input
    102: (3, 3, 1, _MANY),  # SPLIT_V
    48: (2, 2, 2, 2),  # TOPK_V2
    22: (1, 2, 1, 1),  # RESHAPE: input, optional shape tensor
    34: (2, 3, 1, 1),  # PAD (shares its kernel with PADV2)
    60: (2, 3, 1, 1),  # PADV2: input, paddings, optional constant
    45: (4, 4, 1, 1),  # STRIDED_SLICE
    142: (0, 0, 1, 1),  # VAR_HANDLE
    144: (2, 2, 0, 0),  # ASSIGN_VARIABLE
    129: (0, 0, 0, 0),  # CALL_ONCE
}
_NO_INPUTS_OK = frozenset({32, 119, 196})  # CUSTOM, WHILE (no loop vars), STABLEHLO_IOTA
_NO_OUTPUTS_OK = frozenset({32, 119, 118})  # CUSTOM, WHILE, IF
# Builtin code -> input positions that may be -1 (omitted); None: any position. Ops not listed
# have no optional inputs.
_OPTIONAL_INPUTS: dict[int, frozenset[int] | None] = {
    3: frozenset({2}),  # CONV_2D bias
    4: frozenset({2}),  # DEPTHWISE_CONV_2D bias
    9: frozenset({2}),  # FULLY_CONNECTED bias
    67: frozenset({3}),  # TRANSPOSE_CONV bias
    132: frozenset({2}),  # CONV_3D bias
    141: frozenset({3}),  # CONV_3D_TRANSPOSE bias
    34: frozenset({2}),  # PAD constant
    60: frozenset({2}),  # PADV2 constant
    15: frozenset({2}),  # LSH_PROJECTION weight
    27: frozenset({3}),  # SVDF bias
    16: None,  # LSTM and the sequence LSTM / RNN ops: many optional inputs
    44: None,
    52: None,
    46: None,
    35: None,
    32: None,  # CUSTOM: unknown
}


# -- operator tensor types ----------------------------------------------------------------------
# Every input and output of these ops has one type (elementwise math, activations, pooling, concat).
_SAME_TYPE = frozenset(_codes("""
    ADD=0 SUB=41 MUL=18 DIV=42 MAXIMUM=55 MINIMUM=57 SQUARED_DIFFERENCE=99 POW=78 PRELU=54
    FLOOR_DIV=90 FLOOR_MOD=95 ABS=101 CEIL=104 FLOOR=8 ROUND=116 NEG=59 SQRT=75 RSQRT=76
    SQUARE=92 EXP=47 LOG=73 SIN=66 COS=108 TANH=28 LOGISTIC=14 RELU=19 RELU6=21 RELU_N1_TO_1=20
    RELU_0_TO_1=152 ELU=111 GELU=150 HARD_SWISH=117 LEAKY_RELU=98 LOG_SOFTMAX=50
    L2_NORMALIZATION=11 AVERAGE_POOL_2D=1 MAX_POOL_2D=17 L2_POOL_2D=12 SPACE_TO_DEPTH=26
    DEPTH_TO_SPACE=5 LOCAL_RESPONSE_NORMALIZATION=13 SIGN=158 ZEROS_LIKE=93 CONCATENATION=2 PACK=83
"""))  # fmt: skip
# Builtin code -> the input position whose type all outputs share (data-movement ops, reductions,
# convolutions: hybrid ones take int8 weights but keep the activation type).
_SAME_TYPE_AS_INPUT = dict.fromkeys(_codes("""
    RESHAPE=22 TRANSPOSE=39 PAD=34 PADV2=60 MIRROR_PAD=100 STRIDED_SLICE=45 SLICE=65 MEAN=40
    SUM=74 REDUCE_MAX=82 REDUCE_MIN=89 REDUCE_PROD=81 RESIZE_BILINEAR=23
    RESIZE_NEAREST_NEIGHBOR=97 GATHER=36 GATHER_ND=107 TILE=69 BROADCAST_TO=130 EXPAND_DIMS=70
    SPLIT_V=102 UNPACK=88 BATCH_TO_SPACE_ND=37 SPACE_TO_BATCH_ND=38 REVERSE_V2=105 SQUEEZE=43
    CONV_2D=3 DEPTHWISE_CONV_2D=4 FULLY_CONNECTED=9 BATCH_MATMUL=126
"""), 0) | {49: 1, 67: 2}  # fmt: skip  # SPLIT: axis first; TRANSPOSE_CONV: output shape first
_SHAPE_PRESERVING = frozenset(_codes("DEQUANTIZE=6 DENSIFY=124"))
# Quantized kernels of these ops derive fixed-point multipliers from the tensors' scales.
_REQUANTIZING = frozenset(_codes("""
    ADD=0 SUB=41 MUL=18 DIV=42 SQUARED_DIFFERENCE=99 CONV_2D=3 DEPTHWISE_CONV_2D=4
    FULLY_CONNECTED=9 TRANSPOSE_CONV=67 BATCH_MATMUL=126 SOFTMAX=25 LOG_SOFTMAX=50 LOGISTIC=14
    TANH=28 MEAN=40 SUM=74 REDUCE_PROD=81 LEAKY_RELU=98 PRELU=54 HARD_SWISH=117
    L2_NORMALIZATION=11 QUANTIZE=114 DEQUANTIZE=6 AVERAGE_POOL_2D=1 CONCATENATION=2 RELU=19
    RELU6=21 RELU_N1_TO_1=20 ELU=111 GELU=150 EXP=47 LOG=73 RSQRT=76 SQRT=75 SQUARE=92 ABS=101
    POW=78
"""))  # fmt: skip
# Input positions that may carry per-channel scales (filters, biases, weight-only dequantize).
_PER_CHANNEL_INPUTS: dict[int, tuple[int | None, ...]] = {
    3: (1, 2), 4: (1, 2), 9: (1, 2), 67: (1, 3), 126: (1,), 6: (0,), 114: (0, None),
}  # fmt: skip


# -- builtin-options layouts ---------------------------------------------------------------------
# Union member -> (table name, one code per field id): "1"/"2"/"4"/"8" scalar of that width,
# "s" string, "vN" vector of N-byte scalars, "g" subgraph index, "G" vector of subgraph indices,
# "_" field id unused. Generated from ai_edge_litert.schema_py_generated (ai-edge-litert 2.3);
# tests/runtime/test_verify.py checks it against the installed schema.
_QUANT_DETAILS: dict[int, tuple[str, str]] = {
    1: ("CustomQuantization", "v1"),
    2: ("BlockwiseQuantization", "4 4 4 v4"),
    3: ("MultiAxisQuantization", "4 4 4 v4"),
}
_OPTIONS: dict[int, tuple[str, str]] = {
    1: ("Conv2DOptions", "1 4 4 1 4 4 1"),
    2: ("DepthwiseConv2DOptions", "1 4 4 4 1 4 4"),
    3: ("ConcatEmbeddingsOptions", "4 v4 v4"),
    4: ("LSHProjectionOptions", "1"),
    5: ("Pool2DOptions", "1 4 4 4 4 1"),
    6: ("SVDFOptions", "4 1 1"),
    7: ("RNNOptions", "1 1"),
    8: ("FullyConnectedOptions", "1 1 1 1 1 v1"),
    9: ("SoftmaxOptions", "4"),
    10: ("ConcatenationOptions", "4 1"),
    11: ("AddOptions", "1 1"),
    12: ("L2NormOptions", "1"),
    13: ("LocalResponseNormalizationOptions", "4 4 4 4"),
    14: ("LSTMOptions", "1 4 4 1 1"),
    15: ("ResizeBilinearOptions", "_ _ 1 1"),
    16: ("CallOptions", "g"),
    17: ("ReshapeOptions", "v4"),
    18: ("SkipGramOptions", "4 4 1"),
    19: ("SpaceToDepthOptions", "4"),
    20: ("EmbeddingLookupSparseOptions", "1"),
    21: ("MulOptions", "1"),
    22: ("PadOptions", ""),
    23: ("GatherOptions", "4 4"),
    24: ("BatchToSpaceNDOptions", ""),
    25: ("SpaceToBatchNDOptions", ""),
    26: ("TransposeOptions", ""),
    27: ("ReducerOptions", "1"),
    28: ("SubOptions", "1 1"),
    29: ("DivOptions", "1"),
    30: ("SqueezeOptions", "v4"),
    31: ("SequenceRNNOptions", "1 1 1"),
    32: ("StridedSliceOptions", "4 4 4 4 4 1"),
    33: ("ExpOptions", ""),
    34: ("TopKV2Options", ""),
    35: ("SplitOptions", "4"),
    36: ("LogSoftmaxOptions", ""),
    37: ("CastOptions", "1 1"),
    38: ("DequantizeOptions", ""),
    39: ("MaximumMinimumOptions", ""),
    40: ("ArgMaxOptions", "1"),
    41: ("LessOptions", ""),
    42: ("NegOptions", ""),
    43: ("PadV2Options", ""),
    44: ("GreaterOptions", ""),
    45: ("GreaterEqualOptions", ""),
    46: ("LessEqualOptions", ""),
    47: ("SelectOptions", ""),
    48: ("SliceOptions", ""),
    49: ("TransposeConvOptions", "1 4 4 1 1"),
    50: ("SparseToDenseOptions", "1"),
    51: ("TileOptions", ""),
    52: ("ExpandDimsOptions", ""),
    53: ("EqualOptions", ""),
    54: ("NotEqualOptions", ""),
    55: ("ShapeOptions", "1"),
    56: ("PowOptions", ""),
    57: ("ArgMinOptions", "1"),
    58: ("FakeQuantOptions", "4 4 4 1"),
    59: ("PackOptions", "4 4"),
    60: ("LogicalOrOptions", ""),
    61: ("OneHotOptions", "4"),
    62: ("LogicalAndOptions", ""),
    63: ("LogicalNotOptions", ""),
    64: ("UnpackOptions", "4 4"),
    65: ("FloorDivOptions", ""),
    66: ("SquareOptions", ""),
    67: ("ZerosLikeOptions", ""),
    68: ("FillOptions", ""),
    69: ("BidirectionalSequenceLSTMOptions", "1 4 4 1 1 1"),
    70: ("BidirectionalSequenceRNNOptions", "1 1 1 1"),
    71: ("UnidirectionalSequenceLSTMOptions", "1 4 4 1 1 1"),
    72: ("FloorModOptions", ""),
    73: ("RangeOptions", ""),
    74: ("ResizeNearestNeighborOptions", "1 1"),
    75: ("LeakyReluOptions", "4"),
    76: ("SquaredDifferenceOptions", ""),
    77: ("MirrorPadOptions", "1"),
    78: ("AbsOptions", ""),
    79: ("SplitVOptions", "4"),
    80: ("UniqueOptions", "1"),
    81: ("ReverseV2Options", ""),
    82: ("AddNOptions", ""),
    83: ("GatherNdOptions", ""),
    84: ("CosOptions", ""),
    85: ("WhereOptions", ""),
    86: ("RankOptions", ""),
    87: ("ReverseSequenceOptions", "4 4"),
    88: ("MatrixDiagOptions", ""),
    89: ("QuantizeOptions", ""),
    90: ("MatrixSetDiagOptions", ""),
    91: ("HardSwishOptions", ""),
    92: ("IfOptions", "g g"),
    93: ("WhileOptions", "g g"),
    94: ("DepthToSpaceOptions", "4"),
    95: ("NonMaxSuppressionV4Options", ""),
    96: ("NonMaxSuppressionV5Options", ""),
    97: ("ScatterNdOptions", ""),
    98: ("SelectV2Options", ""),
    99: ("DensifyOptions", ""),
    100: ("SegmentSumOptions", ""),
    101: ("BatchMatMulOptions", "1 1 1"),
    102: ("CumsumOptions", "1 1"),
    103: ("CallOnceOptions", "g"),
    104: ("BroadcastToOptions", ""),
    105: ("Rfft2dOptions", ""),
    106: ("Conv3DOptions", "1 4 4 4 1 4 4 4"),
    107: ("HashtableOptions", "4 1 1"),
    108: ("HashtableFindOptions", ""),
    109: ("HashtableImportOptions", ""),
    110: ("HashtableSizeOptions", ""),
    111: ("VarHandleOptions", "s s"),
    112: ("ReadVariableOptions", ""),
    113: ("AssignVariableOptions", ""),
    114: ("RandomOptions", "8 8"),
    115: ("BucketizeOptions", "v4"),
    116: ("GeluOptions", "1"),
    117: ("DynamicUpdateSliceOptions", ""),
    118: ("UnsortedSegmentProdOptions", ""),
    119: ("UnsortedSegmentMaxOptions", ""),
    120: ("UnsortedSegmentMinOptions", ""),
    121: ("UnsortedSegmentSumOptions", ""),
    122: ("ATan2Options", ""),
    123: ("SignOptions", ""),
    124: ("BitcastOptions", ""),
    125: ("BitwiseXorOptions", ""),
    126: ("RightShiftOptions", ""),
}
_OPTIONS_2: dict[int, tuple[str, str]] = {
    1: ("StablehloConcatenateOptions", "8"),
    2: ("StablehloBroadcastInDimOptions", "v8"),
    3: ("StablehloSliceOptions", "v8 v8 v8"),
    4: ("StablehloConvolutionOptions", "v8 v8 v8 v8 v1 8 8 v8 8 8 v8 8 8 v8 8 8 v4"),
    5: ("StablehloCustomCallOptions", "s 1 s 4 G v1"),
    6: ("StablehloReduceOptions", "v8 g"),
    7: ("StablehloScatterOptions", "1 v8 v8 v8 8 1 g"),
    8: ("StablehloCompareOptions", "4 4"),
    9: ("StablehloDynamicSliceOptions", "v8"),
    10: ("StablehloPadOptions", "v8 v8 v8"),
    11: ("StablehloIotaOptions", "8"),
    12: ("StablehloDotGeneralOptions", "v8 v8 v8 v8 v4"),
    13: ("StablehloReduceWindowOptions", "v8 v8 v8 v8 v8 g"),
    14: ("StablehloSortOptions", "8 1 g"),
    15: ("StablehloWhileOptions", "g g"),
    16: ("StablehloGatherOptions", "v8 v8 v8 8 v8 1"),
    17: ("StablehloTransposeOptions", "v8"),
    18: ("DilateOptions", ""),
    19: ("StablehloRngBitGeneratorOptions", "1"),
    20: ("ReduceWindowOptions", "4"),
    21: ("StableHLOCompositeOptions", "s g v1 1 4"),
    22: ("StablehloShiftLeftOptions", ""),
    23: ("StablehloCaseOptions", "G"),
}
