"""Bounds-checked reading of flatbuffers (the TFLite file format), without the schema module.

``Reader`` reads little-endian scalars, offsets, vectors and strings; every read is checked
against the buffer's end and the type's alignment, and raises ``Corrupt`` instead of reading past
the buffer. ``Table`` checks a table's vtable when it is created and each field when it is read.
``edgeopt_runtime.verify`` (the checks) and ``edgeopt_runtime.tflite_reader`` (the model as
plain Python objects) are built on these two classes; nothing else parses TFLite files.
"""

from __future__ import annotations

import struct
from typing import Any

U8 = struct.Struct("<B")
I8 = struct.Struct("<b")
U16 = struct.Struct("<H")
I16 = struct.Struct("<h")
I32 = struct.Struct("<i")
U32 = struct.Struct("<I")
I64 = struct.Struct("<q")
U64 = struct.Struct("<Q")
F32 = struct.Struct("<f")
F64 = struct.Struct("<d")
_HH = struct.Struct("<HH")


class Corrupt(Exception):
    """One reason the flatbuffer is unsafe; callers prefix the file name."""


# -- bounds-checked flatbuffer reading -----------------------------------------------------------
class Reader:
    """Little-endian reads from the model bytes; every read is bounds- and alignment-checked."""

    __slots__ = ("buf", "end")

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf
        self.end = len(buf)

    def need(self, pos: int, size: int, align: int, what: str) -> None:
        """Raise unless ``size`` bytes at ``pos`` lie inside the file, ``align``-aligned."""
        if pos < 0 or pos + size > self.end:
            raise Corrupt(f"{what} points outside the file (byte {pos}, file is {self.end} bytes)")
        if pos % align:
            raise Corrupt(f"{what} is misaligned (byte {pos}, needs {align}-byte alignment)")

    def u32(self, pos: int, what: str) -> int:
        self.need(pos, 4, 4, what)
        return U32.unpack_from(self.buf, pos)[0]

    def deref(self, pos: int, what: str) -> int:
        """Follow the unsigned 32-bit offset stored at ``pos``."""
        return pos + self.u32(pos, what)

    def vector(self, pos: int, elem_size: int, what: str) -> tuple[int, int]:
        """Return (first element position, length) of the vector at ``pos``."""
        n = self.u32(pos, what)
        start = pos + 4
        if n * elem_size > self.end - start:
            raise Corrupt(
                f"{what} claims {n} elements of {elem_size} bytes: past the end of the file"
            )
        return start, n

    def string(self, pos: int, what: str) -> str:
        start, n = self.vector(pos, 1, what)
        if start + n >= self.end or self.buf[start + n] != 0:
            raise Corrupt(f"{what} is not a terminated string")
        try:  # flatbuffer strings are UTF-8; LiteRT's Python wrapper fails on anything else
            return str(self.buf[start : start + n], "utf-8")
        except UnicodeDecodeError:
            raise Corrupt(f"{what} is not valid UTF-8") from None


class Table:
    """One flatbuffer table: vtable checked on construction, fields checked on access."""

    __slots__ = ("r", "pos", "vt", "nfields", "size", "what")

    def __init__(self, r: Reader, pos: int, what: str) -> None:
        r.need(pos, 4, 4, what)
        vt = pos - I32.unpack_from(r.buf, pos)[0]
        r.need(vt, 4, 2, f"{what} (vtable)")
        vt_size, obj_size = _HH.unpack_from(r.buf, vt)
        if vt_size < 4 or vt_size % 2 or vt + vt_size > r.end:
            raise Corrupt(f"{what} has a malformed vtable (size {vt_size})")
        if obj_size < 4 or pos + obj_size > r.end:
            raise Corrupt(f"{what} runs past the end of the file")
        self.r, self.pos, self.vt, self.what = r, pos, vt, what
        self.nfields = (vt_size - 4) // 2
        self.size = obj_size

    def field(self, fid: int, size: int) -> int:
        """Position of field ``fid`` (``size`` bytes wide), or 0 when it is absent."""
        if fid >= self.nfields:
            return 0
        off = U16.unpack_from(self.r.buf, self.vt + 4 + 2 * fid)[0]
        if off == 0:
            return 0
        if off < 4 or off + size > self.size:
            raise Corrupt(f"{self.what}: field {fid} lies outside its table")
        pos = self.pos + off
        if pos % size:
            raise Corrupt(f"{self.what}: field {fid} is misaligned")
        return pos

    def scalar(self, fid: int, fmt: struct.Struct, default: object = 0) -> Any:
        pos = self.field(fid, fmt.size)
        return fmt.unpack_from(self.r.buf, pos)[0] if pos else default

    def target(self, fid: int, what: str) -> int:
        """Position an offset field points at, or 0 when the field is absent."""
        pos = self.field(fid, 4)
        return self.r.deref(pos, what) if pos else 0

    def table(self, fid: int, what: str) -> Table | None:
        pos = self.target(fid, what)
        return Table(self.r, pos, what) if pos else None

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

    def tables(self, fid: int, what: str) -> list[Table]:
        start, n = self.vector(fid, 4, what)
        r = self.r
        return [Table(r, r.deref(start + 4 * i, f"{what} {i}"), f"{what} {i}") for i in range(n)]


# Byte width of each scalar type code of ``schema_tables`` (its field layouts).
WIDTH = {"b": 1, "i8": 1, "u8": 1, "i16": 2, "u16": 2, "i32": 4, "u32": 4, "f32": 4,
         "i64": 8, "u64": 8, "f64": 8, "g": 4}  # fmt: skip
Fields = tuple[tuple[str, str, object], ...]


def check_union(
    t: Table,
    type_fid: int,
    value_fid: int,
    schema: dict[int, tuple[str, Fields]],
    what: str,
    calls: tuple[int, set[int]] | None,
) -> Table | None:
    """Check a union member table against its generated field layout; return the table.

    ``calls``: (subgraph count, set to add called subgraphs to) for control-flow fields.
    """
    kind = t.scalar(type_fid, U8)
    table = t.table(value_fid, what)
    if kind == 0:
        return None
    if kind not in schema:
        raise Corrupt(f"{what}: unknown options type {kind}")
    if table is None:
        return None  # LiteRT uses defaults for absent options
    name, fields = schema[kind]
    table.what = f"{what} ({name})"
    for fid, (_, code, _) in enumerate(fields):
        check_field(table, fid, code, calls)
    return table


def check_field(t: Table, fid: int, code: str, calls: tuple[int, set[int]] | None) -> None:
    """Check one field of a table: its slot, and what an offset field points at."""
    if code == "_":
        return
    if code in ("g", "G"):
        # An absent index field reads as 0 (the schema default): the op calls subgraph 0.
        idxs = (t.scalar(fid, I32),) if code == "g" else t.ints(fid, f"{t.what} field {fid}")
        n_sub, callees = calls if calls else (0, set())
        for i in idxs:
            if not 0 <= i < n_sub:
                raise Corrupt(f"{t.what} calls subgraph {i}; the model has {n_sub}")
            callees.add(i)
    elif code in WIDTH:
        t.field(fid, WIDTH[code])
    elif code == "s":
        t.string(fid, f"{t.what} field {fid}")
    elif code.startswith("v:"):
        t.vector(fid, WIDTH[code[2:]], f"{t.what} field {fid}")
    elif code == "t":
        t.table(fid, f"{t.what} field {fid}")
    elif code == "T":
        t.tables(fid, f"{t.what} field {fid}")
    else:  # pragma: no cover - the generator emits only the codes above
        raise Corrupt(f"{t.what}: field {fid} has unknown layout code {code!r}")


_SCALAR = {"b": U8, "i8": I8, "u8": U8, "i16": I16, "u16": U16, "i32": I32, "u32": U32,
           "f32": F32, "i64": I64, "u64": U64, "f64": F64, "g": I32}  # fmt: skip
_VECTOR_FMT = {"b": "B", "i8": "b", "u8": "B", "i16": "h", "u16": "H", "i32": "i", "u32": "I",
               "f32": "f", "i64": "q", "u64": "Q", "f64": "d"}  # fmt: skip


def read_fields(t: Table, fields: Fields) -> dict[str, object]:
    """Decode a (checked) table's scalar and vector fields by name; absent ones get their
    schema default (vectors: None). Strings and sub-tables are left out."""
    out: dict[str, object] = {}
    for fid, (name, code, default) in enumerate(fields):
        if code in _SCALAR:
            value = t.scalar(fid, _SCALAR[code], default)  # type: ignore[arg-type]
            out[name] = bool(value) if code == "b" else value
        elif code.startswith("v:") or code == "G":
            elem = "i32" if code == "G" else code[2:]
            if not t.field(fid, 4):
                out[name] = None
                continue
            start, n = t.vector(fid, WIDTH[elem], f"{t.what} field {fid}")
            values = struct.unpack_from(f"<{n}{_VECTOR_FMT[elem]}", t.r.buf, start)
            out[name] = [bool(v) for v in values] if elem == "b" else list(values)
    return out


__all__ = [
    "Corrupt",
    "Fields",
    "Reader",
    "Table",
    "WIDTH",
    "check_field",
    "check_union",
    "read_fields",
]
