"""The ``edgeopt.manifest/1`` schema as a table: one ``Field`` row per field, checked on load.

``read_manifest`` (``manifest.py``) parses the JSON strictly (UTF-8, size cap, nesting depth, no
NaN/Infinity, no duplicate keys, no lone surrogates) and then checks every row of ``FIELDS``:
type, whether it is required, and its range or allowed values. Unknown keys are kept (a newer
converter may add fields) but are still bound by the size and depth limits.

Adding a field (other features do: per-input layouts, bundle files, ...): append one ``Field`` to
``FIELDS`` below, or call ``add_field`` from the module that owns the feature, e.g.::

    add_field(Field("models[].inputs[].layout", "str", nullable=True,
                    check=one_of("NHWC", "NCHW"), doc="layout the source model used"))

Paths use dots for object keys and ``[]`` for every item of a list. A parent's row must come
before its children's (the table is checked in order). ``check`` returns ``None`` when the value
is fine, else a short reason ("expected 1..256"); the error names the file, the field path with
the list index, the value and the reason.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .delegates import DELEGATES

MAX_DEPTH = 32  # objects/lists nested deeper are refused (real manifests nest 5 deep)
MAX_THREADS = 256
MAX_MODELS = 64
MAX_TENSORS = 4096  # inputs or outputs of one model
MAX_RANK = 16
MAX_DIM = 2**31 - 1
MAX_NAME = 1024

Check = Callable[[Any], str | None]

_KINDS: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "number": (int, float),
    "bool": (bool,),
    "object": (dict,),
    "list": (list,),
    "any": (object,),
}


@dataclass(frozen=True)
class Field:
    """One manifest field.

    Attributes:
        path: ``"runtime.threads"``, ``"models[].inputs[].shape[]"``.
        kind: ``str``, ``int``, ``number``, ``bool``, ``object``, ``list`` or ``any``.
        required: must be present whenever its parent is.
        nullable: ``null`` is allowed.
        check: extra rule on a present, non-null value; returns the reason it fails, or None.
        doc: what the field means (shown in docs and errors).
    """

    path: str
    kind: str
    required: bool = False
    nullable: bool = False
    check: Check | None = None
    doc: str = ""

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"manifest field {self.path}: unknown kind {self.kind!r}")


# -- checks ------------------------------------------------------------------------------------
def int_range(lo: int, hi: int) -> Check:
    return lambda v: None if lo <= v <= hi else f"expected {lo}..{hi}"


def one_of(*allowed: str) -> Check:
    return lambda v: None if v in allowed else f"expected one of {', '.join(allowed)}"


def pattern(regex: str, what: str) -> Check:
    compiled = re.compile(regex)
    return lambda v: None if compiled.fullmatch(v) else f"expected {what}"


def max_len(n: int) -> Check:
    return lambda v: None if len(v) <= n else f"longer than {n}"


def all_of(*checks: Check) -> Check:
    def check(v: Any) -> str | None:
        return next((why for c in checks if (why := c(v)) is not None), None)

    return check


def _plain_file_name(v: str) -> str | None:
    if not v or v in (".", "..") or v.startswith("."):
        return "expected a plain file name in the artifact folder"
    if any(c in v for c in "/\\") or any(ord(c) < 32 or ord(c) == 127 for c in v):
        return "expected a plain file name in the artifact folder (no separators or control chars)"
    if len(v.encode("utf-8")) > 255:
        return "expected a file name of at most 255 bytes"
    return None


def _delegate_name(v: str) -> str | None:
    if v in DELEGATES:
        return None
    return (f"expected one of {', '.join(DELEGATES)} (an artifact names a delegate; only the "
            "caller may pass a library path)")  # fmt: skip


def _finite_positive(v: float) -> str | None:
    return None if math.isfinite(v) and v >= 1.1754944e-38 else "expected a finite scale > 0"


def _dim(v: Any) -> str | None:
    return None if v is None or (_is_int(v) and 0 <= v <= MAX_DIM) else f"expected 0..{MAX_DIM}"


def _quant(v: dict[str, Any]) -> str | None:
    scale, zp = v.get("scale"), v.get("zero_point")
    if isinstance(scale, list) and isinstance(zp, list) and zp and len(zp) != len(scale):
        return f"{len(scale)} scales but {len(zp)} zero points"
    return None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


DTYPES = (
    "float32", "float16", "float64", "bfloat16", "int8", "uint8", "int16", "uint16", "int32",
    "uint32", "int64", "uint64", "bool", "string", "complex64", "complex128",
)  # fmt: skip
PRECISIONS = ("int8", "uint8", "float16", "dynamic", "float32", "int16x8", "weight-only", "unknown")
_HEX64 = pattern(r"[0-9a-f]{64}", "64 lower-case hex digits")
_SHORT = max_len(MAX_NAME)

# The schema. Order matters: a parent before its children.
FIELDS: list[Field] = [
    Field("schema", "str", required=True, check=max_len(64), doc="edgeopt.manifest/1"),
    Field("created", "str", check=max_len(64), doc="ISO-8601 time of conversion"),
    Field("target", "object", nullable=True, doc="the target profile converted for"),
    Field("target.name", "str", nullable=True, check=_SHORT),
    Field("target.description", "str", nullable=True, check=max_len(4096)),
    Field("runtime", "object", nullable=True, doc="everything the runtime needs"),
    Field("runtime.threads", "int", nullable=True, check=int_range(1, MAX_THREADS)),
    Field(
        "runtime.tflite_delegate",
        "str",
        nullable=True,
        check=one_of(*DELEGATES),
        doc="a name from edgeopt_runtime.delegates, never a path",
    ),  # fmt: skip
    Field(
        "runtime.delegate_library",
        "str",
        nullable=True,
        check=_SHORT,
        doc="one of the named delegate's registered library names (checked on load)",
    ),
    Field("runtime.onnx_providers", "list", nullable=True, check=max_len(16)),
    Field(
        "runtime.onnx_providers[]",
        "str",
        check=pattern(r"[A-Za-z][A-Za-z0-9]{0,63}ExecutionProvider", "an ORT provider name"),
    ),
    Field(
        "models",
        "list",
        required=True,
        check=all_of(lambda v: None if v else "expected at least one model", max_len(MAX_MODELS)),
        doc="first entry is the default",
    ),  # fmt: skip
    Field("models[]", "object", required=True),
    Field("models[].file", "str", required=True, check=_plain_file_name),
    Field("models[].format", "str", required=True, check=one_of("tflite", "onnx")),
    Field("models[].precision", "str", check=one_of(*PRECISIONS)),
    Field("models[].sha256", "str", required=True, check=_HEX64),
    Field("models[].size_bytes", "int", check=int_range(0, 2**63 - 1)),
    Field("models[].inputs", "list", nullable=True, check=max_len(MAX_TENSORS)),
    Field("models[].outputs", "list", nullable=True, check=max_len(MAX_TENSORS)),
]
for _io in ("inputs", "outputs"):
    _t = f"models[].{_io}[]"
    FIELDS += [
        Field(_t, "object", required=True),
        Field(f"{_t}.name", "str", required=True, check=_SHORT),
        Field(f"{_t}.shape", "list", required=True, check=max_len(MAX_RANK)),
        Field(f"{_t}.shape[]", "int", nullable=True, check=_dim),
        Field(f"{_t}.dtype", "str", required=True, check=one_of(*DTYPES)),
        Field(f"{_t}.dynamic_dims", "list", nullable=True, check=max_len(MAX_RANK)),
        Field(f"{_t}.dynamic_dims[]", "int", check=int_range(0, MAX_RANK - 1)),
        Field(f"{_t}.quantization", "object", nullable=True, check=_quant),
        Field(f"{_t}.quantization.scale", "list", required=True, check=max_len(1 << 16)),
        Field(f"{_t}.quantization.scale[]", "number", check=_finite_positive),
        Field(f"{_t}.quantization.zero_point", "list", nullable=True, check=max_len(1 << 16)),
        Field(f"{_t}.quantization.zero_point[]", "int", check=int_range(-(2**31), 2**32 - 1)),
        Field(f"{_t}.quantization.axis", "int", nullable=True, check=int_range(0, MAX_RANK - 1)),
    ]
FIELDS += [
    Field("source", "object", nullable=True, doc="the float model converted from"),
    Field("source.path", "str", nullable=True, check=max_len(4096)),
    Field("source.format", "str", nullable=True, check=_SHORT),
    Field("source.sha256", "str", nullable=True, check=_HEX64),
    Field("preprocessing", "object", nullable=True, doc="how raw data becomes model input"),
    Field("calibration", "object", nullable=True),
    Field("calibration.sha256", "str", nullable=True, check=_HEX64),
    Field("calibration.count", "int", nullable=True, check=int_range(0, 2**63 - 1)),
    Field("calibration.synthetic", "bool", nullable=True),
    Field("calibration.method", "str", nullable=True, check=_SHORT),
    Field("tools", "object", nullable=True, doc="tool name -> version"),
]


def add_field(field: Field) -> None:
    """Add a row to the schema (from the module of the feature that writes the field).

    Raises:
        ValueError: the path is already in the table, or its parent is not.
    """
    if any(f.path == field.path for f in FIELDS):
        raise ValueError(f"manifest field {field.path} is already in the schema")
    parent = _parent(field.path)
    if parent and not any(f.path == parent for f in FIELDS):
        raise ValueError(f"manifest field {field.path}: add its parent {parent} first")
    FIELDS.append(field)


def _parent(path: str) -> str:
    if path.endswith("[]"):
        return path[:-2]
    return path.rpartition(".")[0]


# -- checking ----------------------------------------------------------------------------------
def _split(path: str) -> list[str]:
    """``"models[].inputs[].name"`` -> ``["models", "[]", "inputs", "[]", "name"]``."""
    out: list[str] = []
    for part in path.split("."):
        name, _, rest = part.partition("[]")
        if name:
            out.append(name)
        out += ["[]"] * (1 + rest.count("[]")) if part.endswith("[]") else []
    return out


def _values(data: Any, tokens: list[str]) -> Iterator[tuple[str, Any, bool]]:
    """(location, value, present) of every place ``tokens`` names whose parent exists."""
    nodes: list[tuple[str, Any]] = [("", data)]
    for depth, tok in enumerate(tokens):
        last = depth == len(tokens) - 1
        nxt: list[tuple[str, Any]] = []
        for loc, node in nodes:
            if tok == "[]":
                if isinstance(node, list):
                    nxt += [(f"{loc}[{i}]", v) for i, v in enumerate(node)]
            elif isinstance(node, dict):
                where = f"{loc}.{tok}" if loc else tok
                if tok in node:
                    nxt.append((where, node[tok]))
                elif last:
                    yield where, None, False
        nodes = nxt
    for loc, node in nodes:
        yield loc, node, True


def check_fields(data: dict[str, Any]) -> str | None:
    """The first schema violation in ``data`` as ``"<field>: <reason>"``, or None."""
    for f in FIELDS:
        kinds = _KINDS[f.kind]
        for loc, value, present in _values(data, _split(f.path)):
            if not present:
                if f.required:
                    return f"{loc}: required field is missing"
                continue
            if value is None:
                if not f.nullable:
                    return f"{loc}: expected {f.kind}, got null"
                continue
            bad_bool = isinstance(value, bool) and f.kind in ("int", "number")
            if bad_bool or not isinstance(value, kinds):
                return f"{loc}: expected {f.kind}, got {_show(value)}"
            if f.check is not None and (why := f.check(value)) is not None:
                return f"{loc}: {_show(value)}: {why}"
    return None


def _show(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return f"{type(value).__name__} of {len(value)}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


__all__ = ["FIELDS", "MAX_DEPTH", "MAX_THREADS", "Field", "add_field", "check_fields"]
