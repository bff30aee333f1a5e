"""Calibration data: readers that stream samples shaped and typed like a model's inputs.

``open_calibration(path, inputs)`` picks a reader from a registry (``.npz``, ``.npy``, a
directory of images, a directory of ``.npy``/``.npz`` files), checks every stored array's shape
and dtype against the model inputs from the file headers alone, then makes one streaming pass
that converts each selected sample, rejects NaN/Inf and hashes the raw bytes. The returned
``CalibrationSource`` yields one ``{input name: array}`` dict per sample (batch dim 1, the input's
dtype) and never holds more than one sample per input in memory.

Layout rules for arrays: the first dim is the sample axis. For an input of shape ``[B, *s]``
(B is the batch dim, usually ``?`` or 1) a stored array may be ``[N, *s]`` (N samples),
``[N, 1, *s]`` (N samples with their batch dim) or ``[*s]`` (one sample).

Memory bound: one sample per input at a time, plus the selected indices and the labels (one
small array each), plus for a Fortran-ordered array inside an ``.npz`` the whole member (a
warning says so). ``.npy`` files are memory-mapped; ``.npz`` members are read row by row from the
zip stream (random access for stored members, a forward-only stream for compressed ones).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import struct
import warnings as pywarnings
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import numpy as np
from edgeopt_runtime.errors import CalibrationError
from edgeopt_runtime.spec import TensorSpec

HASH_SCHEMA = b"edgeopt.calibration/1"
DEFAULT_SYNTHETIC_SAMPLES = 100
# Decompression-bomb guard: calibration images are small; 40 MP is a 7,300 x 5,500 photo.
MAX_IMAGE_PIXELS = 40_000_000
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ARRAY_SUFFIXES = (".npy", ".npz")
LABEL_KEYS = ("labels", "y")

_LAYOUTS = ("NHWC", "NCHW")
_CHANNEL_ORDERS = ("RGB", "BGR")
_COLORS = ("rgb", "grayscale")
_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box")
_SKIP_CHUNK = 1 << 20  # bytes discarded per read when skipping rows in a compressed member


# --------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preprocessing:
    """How raw data becomes model input; recorded verbatim in the artifact manifest.

    Images: decode -> color (``rgb`` / ``grayscale``) -> resize to ``(height, width)`` with
    ``interpolation`` -> channel order -> ``x * scale`` -> ``(x - mean) / std`` per channel ->
    ``layout``. Arrays (``.npy``/``.npz``): only ``x * scale`` and ``(x - mean) / std`` apply,
    per channel along the ``layout``'s channel axis; arrays are never resized or transposed.
    """

    resize: tuple[int, int] | None = None  # (height, width); None = use the model input's H, W
    scale: float = 1 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: str = "NHWC"
    channel_order: str = "RGB"
    color: str = "rgb"
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        # Accept lists (from JSON / TOML / CLI) but store tuples so the dataclass stays hashable.
        object.__setattr__(self, "mean", tuple(float(m) for m in _as_seq(self.mean)))
        object.__setattr__(self, "std", tuple(float(s) for s in _as_seq(self.std)))
        object.__setattr__(self, "scale", float(self.scale))
        if self.resize is not None:
            object.__setattr__(self, "resize", tuple(int(v) for v in self.resize))
        self._validate()

    def _validate(self) -> None:
        problems = []
        if self.resize is not None and (len(self.resize) != 2 or min(self.resize) < 1):
            problems.append(f"resize must be (height, width) > 0, got {self.resize}")
        if not math.isfinite(self.scale) or self.scale == 0:
            problems.append(f"scale must be finite and non-zero, got {self.scale}")
        for name, vals in (("mean", self.mean), ("std", self.std)):
            if not vals or not all(math.isfinite(v) for v in vals):
                problems.append(f"{name} must be one or more finite numbers, got {vals}")
        if any(s == 0 for s in self.std):
            problems.append(f"std must be non-zero, got {self.std}")
        if len(self.mean) > 1 and len(self.std) > 1 and len(self.mean) != len(self.std):
            problems.append(f"mean {self.mean} and std {self.std} differ in length")
        for name, allowed in (
            ("layout", _LAYOUTS),
            ("channel_order", _CHANNEL_ORDERS),
            ("color", _COLORS),
            ("interpolation", _INTERPOLATIONS),
        ):
            if getattr(self, name) not in allowed:
                problems.append(
                    f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}"
                )
        if problems:
            raise CalibrationError("invalid preprocessing: " + "; ".join(problems))

    @property
    def channels(self) -> int:
        """Channel count images are decoded to (1 for grayscale, 3 for rgb)."""
        return 1 if self.color == "grayscale" else 3

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        d = asdict(self)
        d["resize"] = list(self.resize) if self.resize else None
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        """Build from a dict such as ``to_dict()``'s; unknown keys are rejected.

        Raises:
            CalibrationError: unknown keys or invalid values.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise CalibrationError(
                f"invalid preprocessing: unknown keys {', '.join(unknown)} "
                f"(known: {', '.join(sorted(known))})"
            )
        return cls(**d)


def _as_seq(v: Any) -> Sequence[Any]:
    return (v,) if isinstance(v, (int, float)) else tuple(v)


# --------------------------------------------------------------------------------------------
# Reader registry
# --------------------------------------------------------------------------------------------


class CalibrationReader(ABC):
    """Reads raw samples from one kind of storage. Subclasses register with ``register_reader``.

    The constructor checks shapes and dtypes from headers only (no sample data read) and sets
    ``count`` (available samples), ``labels`` (all of them, or None) and ``warnings``.
    """

    name: ClassVar[str]

    def __init__(
        self,
        path: Path,
        display: str,
        inputs: list[TensorSpec],
        preprocessing: Preprocessing | None,
    ) -> None:
        self.path, self.display, self.inputs = path, display, inputs
        self.preprocessing = preprocessing
        self.count = 0
        self.labels: np.ndarray | None = None
        self.warnings: list[str] = []

    @classmethod
    @abstractmethod
    def matches(cls, path: Path) -> bool:
        """Whether this reader handles ``path`` (cheap: suffix or a directory listing)."""

    @abstractmethod
    def read(self, indices: np.ndarray) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        """Yield ``(where, raw arrays)`` for the given sorted sample indices, one at a time.

        ``where`` names the file and sample for messages; the raw arrays are what gets hashed.
        """

    @abstractmethod
    def convert(self, where: str, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Turn one raw sample into model input (batch dim 1, the input's dtype)."""

    def manifest_preprocessing(self) -> dict[str, Any] | None:
        """The preprocessing as applied (resolved defaults), for the manifest."""
        return self.preprocessing.to_dict() if self.preprocessing else None


_READERS: dict[str, type[CalibrationReader]] = {}


def register_reader(cls: type[CalibrationReader]) -> type[CalibrationReader]:
    """Class decorator: register a reader under ``cls.name``.

    Raises:
        ValueError: a reader with that name is already registered.
    """
    if cls.name in _READERS:
        raise ValueError(
            f"calibration reader {cls.name!r} is already registered "
            f"({_READERS[cls.name].__qualname__})"
        )
    _READERS[cls.name] = cls
    return cls


def reader_names() -> list[str]:
    """Names of the registered calibration readers (valid ``format=`` values)."""
    return sorted(_READERS)


# --------------------------------------------------------------------------------------------
# Shape / dtype planning for stored arrays
# --------------------------------------------------------------------------------------------


def _fmt(dtype: Any, shape: Sequence[int | None]) -> str:
    dims = ", ".join("?" if d is None else str(d) for d in shape)
    return f"{np.dtype(dtype).name}[{dims}]"


def _dims_match(got: Sequence[int], want: Sequence[int | None]) -> bool:
    if len(got) != len(want):
        return False
    return all(w is None or g == w for g, w in zip(got, want, strict=True))


@dataclass(frozen=True)
class _Column:
    """How one input's samples are laid out in one stored array."""

    spec: TensorSpec
    key: str
    dtype: np.dtype
    shape: tuple[int, ...]  # the stored array's full shape
    mode: str  # "batched" [N, *s] | "stacked" [N, 1, *s] | "single" [*s]

    @property
    def n(self) -> int:
        return 1 if self.mode == "single" else self.shape[0]

    @property
    def row_shape(self) -> tuple[int, ...]:
        """Shape of one stored row (``arr[i]``, or the whole array for ``single``)."""
        return self.shape if self.mode == "single" else self.shape[1:]

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one yielded sample: batch dim 1, then the input's other dims."""
        return self.row_shape if self.mode == "stacked" else (1, *self.row_shape)


def _layout_mode(spec: TensorSpec, shape: tuple[int, ...]) -> str | None:
    inner = spec.shape[1:]
    if len(shape) == len(spec.shape) and _dims_match(shape[1:], inner):
        return "batched"
    if len(shape) == len(spec.shape) + 1 and _dims_match(shape[1:], (1, *inner)):
        return "stacked"
    if len(shape) == len(spec.shape) - 1 and _dims_match(shape, inner):
        return "single"
    return None


def _shape_hint(spec: TensorSpec, shape: tuple[int, ...]) -> str:
    inner = spec.shape[1:]
    dims = ", ".join("?" if d is None else str(d) for d in inner)
    hint = f"store [N, {dims}] (N samples) or [N, 1, {dims}]"
    if inner and inner[-1] == 1 and _dims_match(shape[1:], inner[:-1]):
        hint += "; add the channel axis with x[..., None]"
    elif len(inner) == 3 and len(shape) == 4 and _dims_match((shape[2], shape[3], shape[1]), inner):
        hint += "; the data looks channels-first: x.transpose(0, 2, 3, 1)"
    elif len(inner) == 3 and len(shape) == 4 and _dims_match((shape[3], shape[1], shape[2]), inner):
        hint += "; the data looks channels-last: x.transpose(0, 3, 1, 2)"
    return hint


def _dtype_problem(
    spec: TensorSpec, dtype: np.dtype, preprocessing: Preprocessing | None
) -> str | None:
    """Why ``dtype`` data cannot feed ``spec`` (None if it can), with a fix hint."""
    want = np.dtype(spec.dtype)
    if dtype.hasobject:
        return (
            "object arrays (ragged or Python objects) are not supported; pickled data is "
            "never loaded: save a regular numeric array"
        )
    if dtype.fields is not None or dtype.kind not in "biuf":
        return f"unsupported dtype {dtype}: save a numeric array"
    if dtype == want or (want.kind == "f" and dtype.kind == "f"):
        return None
    if want.kind == "f" and preprocessing is None:
        return (
            f"{dtype.name} data where {want.name} is expected: pass preprocessing saying how "
            f"to convert it (e.g. scale=1/255 for [0, 1] inputs) or save {want.name} data"
        )
    if want.kind == "f":
        return None
    if want.kind in "iu" and dtype.kind in "iu" and preprocessing is None:
        return None  # integer -> integer: range-checked per sample
    if want.kind in "iu" and preprocessing is not None:
        return None  # normalized then rounded; range-checked per sample
    return f"{dtype.name} data cannot feed a {want.name} input: save {want.name} data"


def _plan_column(
    where: str,
    spec: TensorSpec,
    key: str,
    dtype: np.dtype,
    shape: tuple[int, ...],
    preprocessing: Preprocessing | None,
) -> _Column:
    """Check one stored array against one model input; raise a one-line error if it can't feed it.

    Raises:
        CalibrationError: wrong shape or dtype, naming both, with a hint.
    """
    if not spec.shape:
        raise CalibrationError(
            f"{where}: input '{spec.name}' is a scalar (rank 0); calibration "
            "needs inputs with a batch dimension"
        )
    mode = _layout_mode(spec, shape)
    problems = []
    if mode is None:
        problems.append(_shape_hint(spec, shape))
    dtype_problem = _dtype_problem(spec, dtype, preprocessing)
    if dtype_problem:
        problems.append(dtype_problem)
    if problems:
        label = f"input '{spec.name}'" + (f" (array '{key}')" if key != spec.name else "")
        raise CalibrationError(
            f"{where}: {label} expects {_fmt(spec.dtype, spec.shape)}, got "
            f"{_fmt(dtype, shape)}: {'; '.join(problems)}"
        )
    return _Column(spec, key, dtype, shape, mode)


# --------------------------------------------------------------------------------------------
# Array conversion (shared by every array reader)
# --------------------------------------------------------------------------------------------


def _channel_vector(
    where: str, spec: TensorSpec, pre: Preprocessing, values: tuple[float, ...], what: str
) -> np.ndarray:
    """``mean`` / ``std`` shaped to broadcast over a sample ``[1, ...]`` along the channel axis."""
    if len(values) == 1:
        return np.float32(values[0])
    rank = len(spec.shape)
    axis = 1 if pre.layout == "NCHW" else rank - 1
    channels = spec.shape[axis] if rank >= 2 else None
    if rank < 2 or channels != len(values):
        raise CalibrationError(
            f"{where}: preprocessing {what} has {len(values)} values but input '{spec.name}' "
            f"{_fmt(spec.dtype, spec.shape)} has {channels} channels on the {pre.layout} channel "
            f"axis: give one value or one per channel"
        )
    shape = [1] * rank
    shape[axis] = len(values)
    return np.asarray(values, dtype=np.float32).reshape(shape)


def _to_dtype(where: str, name: str, x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast one converted sample to the input dtype; integers are rounded and range-checked."""
    if dtype.kind == "f" or dtype == x.dtype:
        return x.astype(dtype, copy=False)
    if x.dtype.kind == "f":
        if not np.isfinite(x).all():
            raise CalibrationError(f"{where}: input '{name}' holds NaN or Inf")
        x = np.rint(x)
    info = np.iinfo(dtype) if dtype.kind in "iu" else None
    if info is not None and x.size and (x.min() < info.min or x.max() > info.max):
        raise CalibrationError(
            f"{where}: input '{name}' holds values in [{x.min()}, {x.max()}] outside the "
            f"{dtype.name} range [{info.min}, {info.max}]"
        )
    return x.astype(dtype)


class _ArrayConverter:
    """Applies optional normalization and the dtype cast to raw array samples."""

    def __init__(
        self, where: str, inputs: list[TensorSpec], preprocessing: Preprocessing | None
    ) -> None:
        self.pre = preprocessing
        self.dtypes = {s.name: np.dtype(s.dtype) for s in inputs}
        self.norm: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if preprocessing is not None:
            for s in inputs:
                self.norm[s.name] = (
                    _channel_vector(where, s, preprocessing, preprocessing.mean, "mean"),
                    _channel_vector(where, s, preprocessing, preprocessing.std, "std"),
                )

    def __call__(self, where: str, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for name, x in raw.items():
            if self.pre is not None:
                mean, std = self.norm[name]
                x = (x.astype(np.float32) * np.float32(self.pre.scale) - mean) / std
            out[name] = _to_dtype(where, name, x, self.dtypes[name])
        return out


# --------------------------------------------------------------------------------------------
# .npy / .npz files
# --------------------------------------------------------------------------------------------


def _read_npy_header(f: BinaryIO, where: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Parse a .npy header from a stream positioned at its start; leave it at the data."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            # 3.0 only differs from 2.0 by a UTF-8 header, needed for non-ASCII structured
            # field names, which are rejected anyway; numpy has no public 3.0 reader.
            shape, fortran, dtype = fmt.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported format version {version}")
    except (ValueError, OSError, EOFError, SyntaxError) as exc:
        raise CalibrationError(f"{where}: not a valid .npy array ({exc})") from None
    return tuple(int(d) for d in shape), bool(fortran), np.dtype(dtype)


class _ArrayFile(ABC):
    """One .npy or .npz file: its columns (one per model input), sample count and labels."""

    def __init__(self, path: Path, where: str) -> None:
        self.path, self.where = path, where
        self.columns: list[_Column] = []
        self.labels: np.ndarray | None = None
        self.warnings: list[str] = []

    @property
    def n(self) -> int:
        counts = {c.n for c in self.columns}
        return counts.pop() if len(counts) == 1 else 0

    def _check_counts(self) -> None:
        counts = {c.key: c.n for c in self.columns}
        if self.labels is not None:
            counts["labels"] = len(self.labels)
        if len(set(counts.values())) > 1:
            listed = ", ".join(f"'{k}' {v}" for k, v in counts.items())
            raise CalibrationError(
                f"{self.where}: arrays hold different sample counts ({listed}); "
                "every array needs one row per sample"
            )
        if self.n == 0:
            raise CalibrationError(f"{self.where}: no samples (the arrays have 0 rows)")

    @abstractmethod
    def read(self, rows: np.ndarray) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        """Yield ``(where, raw)`` for sorted local row indices."""


class _NpyFile(_ArrayFile):
    """A single-input ``.npy`` file, memory-mapped (rows are copied out one at a time)."""

    def __init__(
        self, path: Path, where: str, inputs: list[TensorSpec], preprocessing: Preprocessing | None
    ) -> None:
        super().__init__(path, where)
        if len(inputs) != 1:
            raise CalibrationError(
                f"{where}: a .npy file holds one array but the model has {len(inputs)} inputs "
                f"({', '.join(s.name for s in inputs)}): use an .npz with one key per input"
            )
        with open(path, "rb") as f:
            shape, _, dtype = _read_npy_header(f, where)
        self.columns = [_plan_column(where, inputs[0], inputs[0].name, dtype, shape, preprocessing)]
        self._check_counts()

    def read(self, rows: np.ndarray) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        col = self.columns[0]
        try:
            arr = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise CalibrationError(f"{self.where}: cannot read array ({exc})") from None
        for i in rows:
            row = arr if col.mode == "single" else arr[int(i)]
            yield (
                f"{self.where}: sample {int(i)}",
                {col.spec.name: np.array(row).reshape(col.sample_shape)},
            )


@dataclass(frozen=True)
class _Member:
    """Where one array lives inside an .npz zip."""

    key: str
    info: zipfile.ZipInfo
    data_offset: int  # bytes from the member's start to the array data (the .npy header size)
    fortran: bool


def _match_key(name: str, keys: Sequence[str]) -> str | None:
    """The npz key for input ``name``: exact, else without a TF ``:0`` suffix."""
    if name in keys:
        return name
    base = name.rsplit(":", 1)[0]
    return base if base in keys else None


class _NpzFile(_ArrayFile):
    """An ``.npz``: keys are input names (any single key for a single-input model) + labels.

    Members can't be memory-mapped, so rows are read from the zip stream one at a time.
    """

    def __init__(
        self, path: Path, where: str, inputs: list[TensorSpec], preprocessing: Preprocessing | None
    ) -> None:
        super().__init__(path, where)
        try:
            with zipfile.ZipFile(path) as zf:
                members = {i.filename[:-4]: i for i in zf.infolist() if i.filename.endswith(".npy")}
                headers = {k: self._header(zf, info) for k, info in members.items()}
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise CalibrationError(f"{where}: not a valid .npz file ({exc})") from None
        input_names = {s.name for s in inputs}
        label_keys = [k for k in LABEL_KEYS if k in headers and k not in input_names]
        data_keys = [k for k in headers if k not in label_keys]
        self.members: dict[str, _Member] = {}
        for spec, key in self._assign(inputs, data_keys):
            shape, fortran, dtype, offset = headers[key]
            self.columns.append(_plan_column(f"{where}", spec, key, dtype, shape, preprocessing))
            self.members[spec.name] = _Member(key, members[key], offset, fortran)
            if fortran:
                self.warnings.append(
                    f"{where}: array '{key}' is Fortran-ordered, so it is read "
                    "whole into memory; save it C-ordered to stream it"
                )
        unused = sorted(set(data_keys) - {m.key for m in self.members.values()})
        if unused:
            self.warnings.append(f"{where}: ignored arrays {', '.join(unused)} (not model inputs)")
        if label_keys:
            self.labels = self._load_labels(label_keys)
        self._check_counts()

    def _header(
        self, zf: zipfile.ZipFile, info: zipfile.ZipInfo
    ) -> tuple[tuple[int, ...], bool, np.dtype, int]:
        with zf.open(info) as f:
            shape, fortran, dtype = _read_npy_header(f, f"{self.where}: {info.filename}")
            offset = f.tell()
        if not dtype.hasobject and offset + math.prod(shape) * dtype.itemsize > info.file_size:
            raise CalibrationError(f"{self.where}: array '{info.filename[:-4]}' is truncated")
        return shape, fortran, dtype, offset

    def _assign(self, inputs: list[TensorSpec], keys: list[str]) -> list[tuple[TensorSpec, str]]:
        if len(inputs) == 1 and len(keys) == 1:
            return [(inputs[0], keys[0])]  # a single array feeds a single input, whatever its key
        pairs, missing = [], []
        for spec in inputs:
            key = _match_key(spec.name, keys)
            if key is None:
                missing.append(spec.name)
            pairs.append((spec, key))
        if missing:
            raise CalibrationError(
                f"{self.where}: no array for input(s) {', '.join(repr(m) for m in missing)} "
                f"(arrays: {', '.join(keys) or 'none'}): save one array per input named after it"
            )
        return pairs

    def _load_labels(self, label_keys: list[str]) -> np.ndarray:
        if len(label_keys) > 1:
            self.warnings.append(f"{self.where}: both 'labels' and 'y' present; using 'labels'")
        try:
            with np.load(self.path, allow_pickle=False) as npz:
                labels = npz[label_keys[0]]
        except (ValueError, OSError) as exc:
            raise CalibrationError(f"{self.where}: cannot read '{label_keys[0]}' ({exc})") from None
        return labels.reshape(1) if labels.ndim == 0 else labels

    def read(self, rows: np.ndarray) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        with contextlib.ExitStack() as stack:
            zf = stack.enter_context(zipfile.ZipFile(self.path))
            readers = {
                c.spec.name: stack.enter_context(
                    _member_rows(self.path, zf, c, self.members[c.spec.name])
                )
                for c in self.columns
            }
            for i in rows:
                yield (
                    f"{self.where}: sample {int(i)}",
                    {name: read_row(int(i)) for name, read_row in readers.items()},
                )


@contextlib.contextmanager
def _member_rows(
    path: Path, zf: zipfile.ZipFile, col: _Column, member: _Member
) -> Iterator[Callable[[int], np.ndarray]]:
    """A function reading row ``i`` of one npz member (rows must be asked in ascending order)."""
    row_bytes = math.prod(col.row_shape) * col.dtype.itemsize
    if member.fortran:  # rows are strided across the whole member: read it whole
        with np.load(path, allow_pickle=False) as npz:
            whole = npz[member.key]
        yield lambda i: np.array(whole if col.mode == "single" else whole[i]).reshape(
            col.sample_shape
        )
        return
    if member.info.compress_type == zipfile.ZIP_STORED:
        # Uncompressed (np.savez): seek straight to the row in the zip file itself.
        with open(path, "rb") as f:
            start = _stored_data_start(f, member.info, path) + member.data_offset

            def read_stored(i: int) -> np.ndarray:
                f.seek(start + i * row_bytes)
                return _read_row(f, col, path)

            yield read_stored
        return
    with zf.open(member.info) as f:  # compressed (np.savez_compressed): forward-only stream
        pos = [0]
        f.read(member.data_offset)

        def read_deflated(i: int) -> np.ndarray:
            _skip(f, i * row_bytes - pos[0])
            pos[0] = (i + 1) * row_bytes
            return _read_row(f, col, path)

        yield read_deflated


def _stored_data_start(f: BinaryIO, info: zipfile.ZipInfo, path: Path) -> int:
    """Offset of a stored member's data: after its local header, whose extra field may differ
    from the central directory's."""
    f.seek(info.header_offset)
    local = f.read(30)
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        raise CalibrationError(f"{path}: corrupt zip header for '{info.filename}'")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    return info.header_offset + 30 + name_len + extra_len


def _skip(f: BinaryIO, n: int) -> None:
    # Read-and-discard in bounded chunks (ZipExtFile.seek would read up to 16 MB at once).
    while n > 0:
        got = len(f.read(min(n, _SKIP_CHUNK)))
        if not got:
            break
        n -= got


def _read_row(f: BinaryIO, col: _Column, path: Path) -> np.ndarray:
    """Read one row into a fresh (writable) array shaped like a sample."""
    out = np.empty(col.sample_shape, dtype=col.dtype)
    if f.readinto(memoryview(out).cast("B")) != out.nbytes:
        raise CalibrationError(f"{path}: array '{col.key}' is truncated")
    return out


# --------------------------------------------------------------------------------------------
# Array readers: one file, or a directory of files
# --------------------------------------------------------------------------------------------

_FILE_KINDS: dict[str, type[_ArrayFile]] = {".npy": _NpyFile, ".npz": _NpzFile}


class _ArrayReader(CalibrationReader):
    """Samples from one or more ``.npy`` / ``.npz`` files, indexed across files in order."""

    def __init__(
        self,
        path: Path,
        display: str,
        inputs: list[TensorSpec],
        preprocessing: Preprocessing | None,
    ) -> None:
        super().__init__(path, display, inputs, preprocessing)
        self.files = [
            _FILE_KINDS[p.suffix.lower()](p, w, inputs, preprocessing) for p, w in self._files()
        ]
        self.starts = np.cumsum([0] + [f.n for f in self.files])
        self.count = int(self.starts[-1])
        for f in self.files:
            self.warnings.extend(f.warnings)
        self.labels = self._gather_labels()
        self._convert = _ArrayConverter(display, inputs, preprocessing)

    def _files(self) -> list[tuple[Path, str]]:
        return [(self.path, self.display)]

    def _gather_labels(self) -> np.ndarray | None:
        have = [f.labels is not None for f in self.files]
        if not any(have):
            return None
        if not all(have):
            self.warnings.append(
                f"{self.display}: only {sum(have)} of {len(have)} files hold "
                "labels; labels are ignored"
            )
            return None
        try:
            return np.concatenate([f.labels for f in self.files])
        except ValueError as exc:
            raise CalibrationError(
                f"{self.display}: labels differ in shape across files ({exc})"
            ) from None

    def read(self, indices: np.ndarray) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        cuts = np.searchsorted(indices, self.starts)
        for k, f in enumerate(self.files):
            local = indices[cuts[k] : cuts[k + 1]] - self.starts[k]
            if len(local):
                yield from f.read(local)

    def convert(self, where: str, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._convert(where, raw)

    @classmethod
    def matches(cls, path: Path) -> bool:
        """A single file whose suffix is the reader's name (``.npz`` / ``.npy``)."""
        return path.is_file() and path.suffix.lower() == f".{cls.name}"


@register_reader
class NpzReader(_ArrayReader):
    """``.npz``: one array per input (named after it), optional ``labels`` / ``y``."""

    name = "npz"


@register_reader
class NpyReader(_ArrayReader):
    """``.npy``: one array, for single-input models."""

    name = "npy"


def _listing(path: Path, suffixes: tuple[str, ...]) -> list[str]:
    """Names of non-hidden files directly in ``path`` with one of ``suffixes``, sorted.

    Plain names, not Path objects: a listing of many thousand files stays small.
    """
    with os.scandir(path) as entries:
        return sorted(
            e.name
            for e in entries
            if not e.name.startswith(".")
            and os.path.splitext(e.name)[1].lower() in suffixes
            and e.is_file()
        )


@register_reader
class ArrayDirReader(_ArrayReader):
    """A directory of ``.npy`` / ``.npz`` files (one or more samples each), in name order."""

    name = "array-dir"

    @classmethod
    def matches(cls, path: Path) -> bool:
        return path.is_dir() and bool(_listing(path, ARRAY_SUFFIXES))

    def _files(self) -> list[tuple[Path, str]]:
        return [
            (self.path / name, os.path.join(self.display, name))
            for name in _listing(self.path, ARRAY_SUFFIXES)
        ]


# --------------------------------------------------------------------------------------------
# Image directories
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _pillow_guard(where: str) -> Iterator[None]:
    """Apply our pixel limit and turn Pillow's bomb warning/error and decode errors into ours."""
    from PIL import Image

    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with pywarnings.catch_warnings():
            pywarnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise CalibrationError(
            f"{where}: image too large ({exc}); the limit is "
            f"{MAX_IMAGE_PIXELS} pixels: downscale it first"
        ) from None
    except (OSError, ValueError, SyntaxError, struct.error) as exc:
        raise CalibrationError(f"{where}: cannot decode image ({exc})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old


@register_reader
class ImageDirReader(CalibrationReader):
    """A directory of PNG / JPEG images (single-input models), decoded one at a time."""

    name = "image-dir"

    @classmethod
    def matches(cls, path: Path) -> bool:
        return path.is_dir() and bool(_listing(path, IMAGE_SUFFIXES))

    def __init__(
        self,
        path: Path,
        display: str,
        inputs: list[TensorSpec],
        preprocessing: Preprocessing | None,
    ) -> None:
        super().__init__(path, display, inputs, preprocessing)
        if len(inputs) != 1:
            raise CalibrationError(
                f"{display}: an image directory feeds one input but the model has {len(inputs)} "
                f"({', '.join(s.name for s in inputs)}): use an .npz with one key per input"
            )
        self.spec = inputs[0]
        self.pre = self._resolve(preprocessing)
        self.files = _listing(path, IMAGE_SUFFIXES)
        self.count = len(self.files)
        self._check_spec()
        self._mean = _channel_vector(display, self.spec, self.pre, self.pre.mean, "mean")
        self._std = _channel_vector(display, self.spec, self.pre, self.pre.std, "std")
        self._dtype = np.dtype(self.spec.dtype)

    def _resolve(self, pre: Preprocessing | None) -> Preprocessing:
        """Fill in defaults from the model input: layout and color if not given, resize always."""
        shape = self.spec.shape
        if pre is None:
            channels_first = len(shape) == 4 and shape[1] in (1, 3) and shape[3] not in (1, 3)
            layout = "NCHW" if channels_first else "NHWC"
            c = shape[1] if channels_first else shape[-1]
            pre = Preprocessing(layout=layout, color="grayscale" if c == 1 else "rgb")
            self.warnings.append(
                f"{self.display}: no image preprocessing given: using {pre.layout}, {pre.color}, "
                "x/255 (inputs in [0, 1]); pass preprocessing if the model expects another range"
            )
        if pre.resize is None and len(shape) == 4:
            hw = (shape[2], shape[3]) if pre.layout == "NCHW" else (shape[1], shape[2])
            if None not in hw:
                pre = replace(pre, resize=hw)
        return pre

    def _check_spec(self) -> None:
        """Check the images as preprocessed will match the input, before decoding any of them."""
        spec, pre = self.spec, self.pre
        h, w = pre.resize or (None, None)
        got = (1, pre.channels, h, w) if pre.layout == "NCHW" else (1, h, w, pre.channels)
        problems = []
        if len(spec.shape) != 4:
            problems.append("images feed rank-4 inputs only: use .npy/.npz data")
        elif pre.resize is None:
            problems.append("the input's height/width are dynamic: set preprocessing resize")
        elif not _dims_match(got[1:], spec.shape[1:]):
            problems.append(
                f"preprocessing gives {_fmt(spec.dtype, got)} ({pre.layout}, "
                f"{pre.color}, resize {pre.resize}): set layout / color / resize to "
                "match the input"
            )
        if np.dtype(spec.dtype).kind not in "fiu":
            problems.append(f"images cannot feed a {spec.dtype} input")
        if problems:
            raise CalibrationError(
                f"{self.display}: input '{spec.name}' expects "
                f"{_fmt(spec.dtype, spec.shape)}: {'; '.join(problems)}"
            )

    def manifest_preprocessing(self) -> dict[str, Any] | None:
        return self.pre.to_dict()

    def read(self, indices: np.ndarray) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        for i in indices:
            where = os.path.join(self.display, self.files[int(i)])
            try:
                data = (self.path / self.files[int(i)]).read_bytes()
            except OSError as exc:
                raise CalibrationError(f"{where}: cannot read ({exc})") from None
            yield where, {self.spec.name: np.frombuffer(data, dtype=np.uint8)}

    def convert(self, where: str, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from PIL import Image

        pre = self.pre
        with _pillow_guard(where):
            with Image.open(io.BytesIO(raw[self.spec.name].tobytes())) as img:
                img = img.convert("L" if pre.color == "grayscale" else "RGB")
                height, width = pre.resize
                if img.size != (width, height):
                    img = img.resize(
                        (width, height), getattr(Image.Resampling, pre.interpolation.upper())
                    )
                x = np.asarray(img, dtype=np.float32)
        x = x[..., None] if x.ndim == 2 else x
        if pre.channel_order == "BGR":
            x = x[..., ::-1]
        if pre.layout == "NCHW":
            x = x.transpose(2, 0, 1)
        x = (x[None] * np.float32(pre.scale) - self._mean) / self._std
        return {self.spec.name: _to_dtype(where, self.spec.name, x, self._dtype)}


# --------------------------------------------------------------------------------------------
# Synthetic data
# --------------------------------------------------------------------------------------------


class SyntheticReader(CalibrationReader):
    """Seeded random samples matching the specs: floats uniform in [0, 1), int8 in [-128, 127],
    other integers in [0, 255], booleans fair coins. Sample i depends only on (seed, i)."""

    name = "synthetic"

    def __init__(self, inputs: list[TensorSpec], count: int, seed: int) -> None:
        super().__init__(Path("."), "synthetic", inputs, None)
        self.count, self.seed = count, seed
        dynamic = [s for s in inputs if s.is_dynamic and None in s.shape[1:]]
        if dynamic:
            raise CalibrationError(
                f"synthetic calibration needs static shapes but input '{dynamic[0].name}' is "
                f"{_fmt(dynamic[0].dtype, dynamic[0].shape)}: pass --calib PATH with real data"
            )
        self.warnings.append(
            "synthetic calibration data: quantization ranges will not reflect "
            "real inputs; pass --calib PATH for a deployable model"
        )

    @classmethod
    def matches(cls, path: Path) -> bool:
        return False

    def read(self, indices: np.ndarray) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        for i in indices:
            rng = np.random.default_rng((self.seed, int(i)))
            yield f"synthetic: sample {int(i)}", {s.name: self._sample(rng, s) for s in self.inputs}

    @staticmethod
    def _sample(rng: np.random.Generator, spec: TensorSpec) -> np.ndarray:
        shape, dtype = (1, *spec.shape[1:]), np.dtype(spec.dtype)
        if dtype.kind == "f":
            return rng.random(shape, dtype=np.float32).astype(dtype)
        if dtype.kind == "b":
            return rng.integers(0, 2, shape).astype(bool)
        lo, hi = (-128, 127) if dtype == np.int8 else (0, 255)
        return rng.integers(lo, hi, shape, endpoint=True).astype(dtype)

    def convert(self, where: str, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return raw


# --------------------------------------------------------------------------------------------
# CalibrationSource
# --------------------------------------------------------------------------------------------


@dataclass
class _Stats:
    """Running per-input min / max over every yielded value."""

    lo: dict[str, float] = field(default_factory=dict)
    hi: dict[str, float] = field(default_factory=dict)

    def update(self, sample: dict[str, np.ndarray]) -> None:
        for name, x in sample.items():
            if x.size:
                self.lo[name] = min(self.lo.get(name, math.inf), float(x.min()))
                self.hi[name] = max(self.hi.get(name, -math.inf), float(x.max()))


class CalibrationSource:
    """Calibration samples for one model, checked, hashed and streamed.

    Attributes:
        inputs: the model inputs the data was checked against.
        count: number of samples yielded per pass.
        sha256: hash of the selected samples' raw bytes, shapes, dtypes and the preprocessing.
        synthetic: True for generated data.
        source: the path as given, or "synthetic".
        format: the reader's name (npz, npy, image-dir, array-dir, synthetic).
        labels: labels aligned with the yielded samples, or None.
        ranges: per input (min, max) over all yielded values.
        warnings: things worth telling the user (degenerate ranges, ignored arrays, ...).
    """

    def __init__(
        self,
        reader: CalibrationReader,
        indices: np.ndarray,
        source: str,
        synthetic: bool,
        preprocessing: dict[str, Any] | None,
        warnings: list[str],
    ) -> None:
        self._reader, self._indices = reader, indices
        self.inputs = reader.inputs
        self.count = len(indices)
        self.source, self.synthetic, self.format = source, synthetic, reader.name
        self.preprocessing = preprocessing
        self.labels = reader.labels[indices] if reader.labels is not None else None
        self.warnings = list(warnings)
        self._specs = {s.name: s for s in self.inputs}
        self.sha256 = ""
        stats = _Stats()
        for _ in self._pass(stats):  # validate everything and hash once, up front
            pass
        self.ranges = {n: (stats.lo[n], stats.hi[n]) for n in stats.lo}
        self._flag_degenerate()

    def _hash_start(self) -> Any:
        h = hashlib.sha256(HASH_SCHEMA)
        h.update(
            json.dumps(
                {"count": self.count, "preprocessing": self.preprocessing}, sort_keys=True
            ).encode()
        )
        return h

    def _pass(self, stats: _Stats | None = None) -> Iterator[dict[str, np.ndarray]]:
        """One streaming pass: read, hash, convert, check each sample; then verify the hash."""
        h = self._hash_start()
        for where, raw in self._reader.read(self._indices):
            for name in sorted(raw):
                x = np.ascontiguousarray(raw[name])
                h.update(f"{name}|{x.dtype.str}|{x.shape}|".encode())
                h.update(x.data)
            sample = self._reader.convert(where, raw)
            self._check(where, sample)
            if stats is not None:
                stats.update(sample)
            yield sample
        digest = h.hexdigest()
        if not self.sha256:
            self.sha256 = digest
        elif digest != self.sha256:
            raise CalibrationError(
                f"{self.source}: calibration data changed while in use "
                f"(sha256 {self.sha256[:12]} became {digest[:12]})"
            )

    def _check(self, where: str, sample: dict[str, np.ndarray]) -> None:
        for name, x in sample.items():
            spec = self._specs[name]
            if x.dtype.kind == "f" and not np.isfinite(x).all():
                nan, inf = int(np.isnan(x).sum()), int(np.isinf(x).sum())
                raise CalibrationError(
                    f"{where}: input '{name}' holds {nan} NaN and {inf} Inf "
                    "values: calibration data must be finite"
                )
            if x.dtype != np.dtype(spec.dtype) or not _dims_match(x.shape[1:], spec.shape[1:]):
                raise AssertionError(
                    f"reader {self.format} produced {_fmt(x.dtype, x.shape)} for {spec}"
                )  # a reader bug, not a user error

    def _flag_degenerate(self) -> None:
        if self.count == 1:
            self.warnings.append(
                f"{self.source}: only 1 calibration sample; quantization ranges "
                "will fit it exactly and may clip real inputs"
            )
        for name, (lo, hi) in self.ranges.items():
            if lo == hi:
                self.warnings.append(
                    f"{self.source}: input '{name}' is constant ({lo:g}) across "
                    "all calibration samples: its quantization range is "
                    "degenerate; use varied, representative data"
                )

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        """Yield one ``{input name: array}`` dict per sample (batch dim 1, the input's dtype).

        Raises:
            CalibrationError: the data on disk changed since it was opened and hashed.
        """
        return self._pass()

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Yield samples stacked along the batch dim, ``batch_size`` at a time (last may be short).

        Raises:
            ValueError: ``batch_size`` < 1.
            CalibrationError: samples in one batch differ in a dynamic dimension.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        pending: list[dict[str, np.ndarray]] = []
        for sample in self:
            pending.append(sample)
            if len(pending) == batch_size:
                yield self._stack(pending)
                pending = []
        if pending:
            yield self._stack(pending)

    def _stack(self, samples: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        out = {}
        for name in samples[0]:
            shapes = {s[name].shape for s in samples}
            if len(shapes) > 1:
                raise CalibrationError(
                    f"{self.source}: input '{name}' samples differ in shape "
                    f"({', '.join(map(str, sorted(shapes)))}) and cannot be "
                    "batched: use batch size 1"
                )
            out[name] = np.concatenate([s[name] for s in samples])
        return out

    def to_manifest(self) -> dict[str, Any]:
        """The manifest's ``calibration`` entry (the converter adds ``method``)."""
        return {
            "sha256": self.sha256,
            "count": self.count,
            "source": self.source,
            "synthetic": self.synthetic,
            "format": self.format,
            "preprocessing": self.preprocessing,
        }


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def _select(total: int, num: int | None, seed: int, display: str) -> np.ndarray:
    """Sorted indices of the chosen samples: all, or a seeded random subset of ``num``."""
    if total == 0:
        raise CalibrationError(f"{display}: no calibration samples found")
    if num is None or num >= total:  # ``num`` is a cap (callers pass e.g. an eval limit)
        return np.arange(total, dtype=np.int64)
    # Sorted so files are read front to back (compressed members can only stream forward).
    return np.sort(np.random.default_rng(seed).choice(total, size=num, replace=False))


def _pick_reader(path: Path, display: str, format: str | None) -> type[CalibrationReader]:
    if format is not None:
        if format not in _READERS:
            raise CalibrationError(
                f"unknown calibration format {format!r} (known: {', '.join(reader_names())})"
            )
        return _READERS[format]
    if not path.exists():
        raise CalibrationError(f"{display}: no such file or directory")
    found = [r for r in _READERS.values() if r.matches(path)]
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise CalibrationError(
            f"{display}: ambiguous calibration data (matches "
            f"{', '.join(r.name for r in found)}): keep one kind of file per "
            "directory"
        )
    if path.is_dir():
        raise CalibrationError(
            f"{display}: no calibration samples found (expected "
            f"{', '.join(IMAGE_SUFFIXES + ARRAY_SUFFIXES)} files)"
        )
    raise CalibrationError(
        f"{display}: unsupported calibration file (expected .npz, .npy, or a "
        "directory of images or .npy/.npz files)"
    )


def open_calibration(
    path: str | os.PathLike[str] | None,
    inputs: list[TensorSpec],
    *,
    num: int | None = None,
    seed: int = 0,
    preprocessing: Preprocessing | None = None,
    allow_synthetic: bool = False,
    format: str | None = None,
) -> CalibrationSource:
    """Open calibration data for a model, check it against the inputs, and hash it.

    Shapes and dtypes are checked from file headers before any sample is read; then one
    streaming pass converts every selected sample (so bad values fail here, not mid-conversion)
    and computes the hash.

    Args:
        path: an ``.npz``, ``.npy``, or a directory of images or of ``.npy``/``.npz`` files;
            None for synthetic data (needs ``allow_synthetic``).
        inputs: the model's inputs; the first dim of each is its batch dim.
        num: use a random subset of this many samples (all if None or larger than available).
        seed: seed of the subset choice and of synthetic data.
        preprocessing: how raw data becomes model input. For arrays, None means the data is
            already model-ready; for images, None means x/255 with layout and color from the
            model (recorded, with a warning).
        allow_synthetic: with ``path=None``, generate seeded random data instead of failing.
        format: force a registered reader (see ``reader_names()``) instead of detecting it.

    Returns:
        A ``CalibrationSource`` streaming the selected samples.

    Raises:
        CalibrationError: missing, malformed or mismatched data, NaN/Inf, no samples.
    """
    if not inputs:
        raise CalibrationError("the model has no inputs to calibrate")
    if num is not None and num < 1:
        raise CalibrationError(f"number of calibration samples must be >= 1, got {num}")
    if path is None:
        if not allow_synthetic:
            raise CalibrationError("no calibration data: pass --calib PATH or --allow-synthetic")
        reader: CalibrationReader = SyntheticReader(inputs, num or DEFAULT_SYNTHETIC_SAMPLES, seed)
        indices = np.arange(reader.count, dtype=np.int64)
        return CalibrationSource(reader, indices, "synthetic", True, None, reader.warnings)
    display = os.fspath(path)
    p = Path(path)
    reader = _pick_reader(p, display, format)(p, display, list(inputs), preprocessing)
    indices = _select(reader.count, num, seed, display)
    return CalibrationSource(
        reader, indices, display, False, reader.manifest_preprocessing(), reader.warnings
    )
