"""Tensor-level checks of a TFLite model: types, shapes, constant data, quantization, sparsity.

``TensorFacts`` keeps what the operator checks (``operators.py``) need to know about each tensor.
"""

from __future__ import annotations

import math
import struct
from typing import Any

from .flatbuffer import I8, I32, U8, U32, Corrupt, Reader, Table, check_union
from .schema_tables import QUANT_DETAILS
from .schema_tables import TENSOR_TYPES as _TYPE_NAMES

MAX_RANK = 16  # TFLite kernels support rank <= 6; anything far above is corruption
MAX_ELEMENTS = 2**31 - 1  # kernels index tensors with int: more elements overflow

# Bits per element; None: no fixed size (string, resource, variant).
_BITS: dict[str, int | None] = {
    "float32": 32, "float16": 16, "int32": 32, "uint8": 8, "int64": 64, "string": None,
    "bool": 8, "int16": 16, "complex64": 64, "int8": 8, "float64": 64, "complex128": 128,
    "uint64": 64, "resource": None, "variant": None, "uint32": 32, "uint16": 16, "int4": 4,
    "bfloat16": 16, "int2": 2, "uint4": 4, "float8_e4m3fn": 8, "float8_e5m2": 8,
}  # fmt: skip
# TensorType -> (name, bits per element); KeyError at import if the schema gained a type.
TENSOR_TYPES: dict[int, tuple[str, int | None]] = {
    code: (name.lower(), _BITS[name.lower()]) for code, name in _TYPE_NAMES.items()
}
TYPE_CODES = {name: code for code, (name, _) in TENSOR_TYPES.items()}
STRING, RESOURCE, VARIANT = TYPE_CODES["string"], TYPE_CODES["resource"], TYPE_CODES["variant"]
INT8, UINT8, INT16 = TYPE_CODES["int8"], TYPE_CODES["uint8"], TYPE_CODES["int16"]
QUANT_TYPES = (INT8, UINT8, INT16)
ACTIVATION, CONSTANT, VARIABLE = 0, 1, 2
MIN_SCALE = 1.1754944e-38  # smallest normal float32; XNNPACK and kernels need normal scales


class ModelFacts:
    """Facts gathered while checking, shared by the per-subgraph checks."""

    def __init__(self, r: Reader, root: Table) -> None:
        self.r = r
        self.root = root
        self.buffers: list[tuple[int, int]] = []  # (position of the data, byte length)
        self.opcodes: list[int] = []  # effective builtin code per operator code
        self.n_subgraphs = 0
        self.calls: dict[int, set[int]] = {}  # subgraph -> subgraphs its ops call
        self.io: list[tuple[list[TensorFacts], list[TensorFacts]]] = []  # per subgraph
        self.external_ids: set[int] = set()  # ids of weights in external files
        # per subgraph: (inputs, outputs, [(op inputs, op outputs)]) for the loop check
        self.graphs: list[tuple[tuple[int, ...], tuple[int, ...], list[Any]]] = []
        self.loops: list[tuple[str, int, int]] = []  # WHILE ops: (what, cond, body)


class TensorFacts:
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


def check_tensor(m: ModelFacts, t: Table) -> TensorFacts:
    """Check one tensor; its kind is CONSTANT (holds data), VARIABLE or ACTIVATION."""
    name = t.string(3, f"{t.what} name")
    if name:
        t.what = f"{t.what} ({name[:60]})"
    ttype = t.scalar(1, I8)
    if ttype not in TENSOR_TYPES:
        raise Corrupt(f"{t.what} has unknown type {ttype}")
    shape = t.ints(0, f"{t.what} shape")
    elements = check_shape(t, shape)
    sig = t.ints(7, f"{t.what} shape signature")
    if sig and (len(sig) != len(shape) or any(d < -1 for d in sig)):
        raise Corrupt(f"{t.what} shape signature {list(sig)} does not fit shape {list(shape)}")
    for v in t.tables(9, f"{t.what} variant subtype"):
        check_shape(v, v.ints(0, f"{v.what} shape"))
        if v.scalar(1, I8) not in TENSOR_TYPES:
            raise Corrupt(f"{v.what} has unknown type {v.scalar(1, I8)}")
    external = t.scalar(10, U32)
    if external and external not in m.external_ids:
        raise Corrupt(f"{t.what} uses external buffer {external}, which the model lacks")
    b = t.scalar(2, U32)
    if b >= len(m.buffers):
        raise Corrupt(f"{t.what} uses buffer {b}; the model has {len(m.buffers)}")
    scales = _check_quantization(t, shape, ttype)
    sparsity = t.table(6, f"{t.what} sparsity")
    dense = _check_sparsity(sparsity, shape) if sparsity else None
    pos, nbytes = m.buffers[b]
    if nbytes:
        _check_tensor_data(m.r, t, ttype, shape, elements if dense is None else dense, pos, nbytes)
        kind = CONSTANT
    else:
        kind = VARIABLE if t.scalar(5, U8) else ACTIVATION
    # Kernels turn scales into fixed-point multipliers and abort (TFLITE_CHECK) on a zero one;
    # only per-channel constant scales (all-zero weight channels) may be 0.
    if scales and (len(scales) == 1 or kind != CONSTANT) and min(scales) < MIN_SCALE:
        raise Corrupt(
            f"{t.what} has quantization scale {min(scales):g}, expected a positive normal float"
        )
    return TensorFacts(kind, ttype, shape, sig, scales)


def check_shape(t: Table, shape: tuple[int, ...]) -> int:
    if len(shape) > MAX_RANK:
        raise Corrupt(f"{t.what} has rank {len(shape)} (at most {MAX_RANK} supported)")
    elements = 1
    for d in shape:
        if d < 0:
            raise Corrupt(f"{t.what} has negative dimension in shape {list(shape)}")
        elements *= d
    if elements > MAX_ELEMENTS:
        raise Corrupt(f"{t.what} shape {list(shape)} has {elements} elements (max 2^31-1)")
    return elements


def _check_tensor_data(
    r: Reader, t: Table, ttype: int, shape: tuple[int, ...], elements: int, pos: int, nbytes: int
) -> None:
    tname, bits = TENSOR_TYPES[ttype]
    if ttype in (RESOURCE, VARIANT):
        raise Corrupt(f"{t.what} is a {tname} tensor with constant data")
    if ttype == STRING:
        _check_string_data(r, t, elements, pos, nbytes)
        return
    assert bits is not None
    want = elements * bits // 8 if bits >= 8 else -(-elements * bits // 8)
    # Sub-byte types may be stored packed or one value per byte.
    if nbytes != want and not (bits < 8 and nbytes == elements):
        raise Corrupt(
            f"{t.what}: constant buffer holds {nbytes} bytes, shape {list(shape)} {tname} "
            f"needs {want}"
        )


def _check_string_data(r: Reader, t: Table, elements: int, pos: int, nbytes: int) -> None:
    """String tensors: count, then count+1 offsets into the buffer, non-decreasing."""
    if nbytes < 8:
        raise Corrupt(f"{t.what}: string buffer of {nbytes} bytes is too short")
    count = I32.unpack_from(r.buf, pos)[0]
    if count != elements or (count + 2) * 4 > nbytes:
        raise Corrupt(f"{t.what}: string buffer holds {count} strings, shape needs {elements}")
    offsets = struct.unpack_from(f"<{count + 1}i", r.buf, pos + 4)
    prev = (count + 2) * 4
    if offsets[0] != prev or offsets[-1] != nbytes:
        raise Corrupt(f"{t.what}: string buffer offsets do not span the buffer")
    for off in offsets:
        if off < prev:
            raise Corrupt(f"{t.what}: string buffer offsets decrease")
        prev = off


# Storage type -> zero-point range (kernels index lookup tables with value - zero point).
_ZERO_POINT_RANGE = {
    9: (-128, 127), 3: (0, 255), 7: (-32768, 32767), 17: (-8, 7), 20: (0, 15),
    16: (0, 65535), 2: (-(2**31), 2**31 - 1),
}  # fmt: skip


def _check_quantization(t: Table, shape: tuple[int, ...], ttype: int) -> tuple[float, ...]:
    """Check quantization parameters; return the scales."""
    q = t.table(4, f"{t.what} quantization")
    if q is None:
        return ()
    q.ints(0, f"{q.what} min", "f"), q.ints(1, f"{q.what} max", "f")
    scales = q.ints(2, f"{q.what} scales", "f")
    zps = q.ints(3, f"{q.what} zero points", "q")
    if scales and len(zps) != len(scales):
        raise Corrupt(f"{q.what}: {len(scales)} scales but {len(zps)} zero points")
    lo, hi = _ZERO_POINT_RANGE.get(ttype, (-(2**63), 2**63 - 1))
    if zps and not lo <= min(zps) <= max(zps) <= hi:
        bad = min(zps) if min(zps) < lo else max(zps)
        raise Corrupt(
            f"{q.what}: zero point {bad} outside the {TENSOR_TYPES[ttype][0]} range [{lo}, {hi}]"
        )
    if any(not math.isfinite(s) or s < 0 for s in scales):
        raise Corrupt(f"{q.what}: scales must be finite and >= 0")
    dim = q.scalar(6, I32)
    if len(scales) > 1 or dim:
        if not 0 <= dim < max(len(shape), 1):
            raise Corrupt(f"{q.what}: quantized dimension {dim} outside rank {len(shape)}")
        if len(scales) > 1 and shape and shape[dim] != len(scales):
            raise Corrupt(
                f"{q.what}: {len(scales)} per-channel scales but dimension {dim} of shape "
                f"{list(shape)} has {shape[dim]} channels"
            )
    check_union(q, 4, 5, QUANT_DETAILS, f"{q.what} details", None)
    return scales


def _check_sparsity(sp: Table, shape: tuple[int, ...]) -> int:
    """Check sparse-tensor metadata the way the reference verifier does; return stored values."""
    order = sp.ints(0, f"{sp.what} traversal order")
    block_map = sp.ints(1, f"{sp.what} block map")
    dims = sp.tables(2, f"{sp.what} dimension")
    rank, total = len(shape), len(order)
    bad = Corrupt(f"{sp.what} is inconsistent with shape {list(shape)}")
    if total < rank or len(dims) != total or len(block_map) != total - rank:
        raise bad
    if sorted(order[:rank]) != list(range(rank)) or sorted(order[rank:]) != list(
        range(rank, total)
    ):
        raise bad
    sizes = list(shape) + [0] * (total - rank)
    for i, mapped in enumerate(block_map):
        block = dims[rank + i].scalar(1, I32)
        if block <= 0 or not 0 <= mapped < rank:
            raise bad
        sizes[order[rank + i]] = block
        sizes[mapped] //= block
    count = 1
    for level, dim in enumerate(order):
        dm = dims[level]
        if dm.scalar(0, U8) == 0:  # dense: every index stored implicitly
            if dm.scalar(1, I32) != sizes[dim]:
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


def _sparse_index_vector(dm: Table, type_fid: int, value_fid: int) -> tuple[int, ...]:
    kind = dm.scalar(type_fid, U8)
    fmt = {1: "i", 2: "H", 3: "B"}.get(kind)
    table = dm.table(value_fid, f"{dm.what} index vector")
    if fmt is None or table is None:
        raise Corrupt(f"{dm.what}: sparse dimension without a valid index vector")
    return table.ints(0, f"{table.what} values", fmt)


__all__ = [
    "ACTIVATION", "CONSTANT", "INT16", "INT8", "MAX_ELEMENTS", "MAX_RANK", "QUANT_TYPES",
    "TENSOR_TYPES", "UINT8", "VARIABLE", "ModelFacts", "TensorFacts", "check_shape",
    "check_tensor",
]  # fmt: skip
