"""``.npz`` / ``.npy`` reading with declared sizes checked before any data is read.

Shared by the runtime (``run --input``, ``profile --input``) and the converter (calibration and
validation data). A 37 MB ``.npz`` can hold 8 GiB of zeros; ``np.load`` would inflate all of it.
``npz_members`` reads only each member's ``.npy`` header (shape, dtype) and the zip's declared
sizes, checks them against each other and against a byte budget, and refuses the file in one
line before decompressing any data. ``read_npz_arrays`` then reads through the same open file.

Only regular files are opened (no FIFO, device, socket); ``allow_pickle`` is always False.
"""

from __future__ import annotations

import math
import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import EdgeOptError, InputError
from .spec import TensorSpec

MAX_INPUT_BYTES = 2 << 30  # default budget for the arrays of one .npz (decompressed)
MAX_MEMBERS = 4096
MAX_HEADER_BYTES = 10000  # numpy's own default limit for .npy headers


@dataclass(frozen=True)
class NpyHeader:
    """What a ``.npy`` header declares."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    data_offset: int  # bytes from the start of the .npy to its data

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


@dataclass(frozen=True)
class NpzMember:
    """One array of an ``.npz``: its key, zip entry and declared header."""

    key: str
    info: zipfile.ZipInfo
    header: NpyHeader


def read_npy_header(f: BinaryIO, where: str, error: type[EdgeOptError] = InputError) -> NpyHeader:
    """Parse a ``.npy`` header from a stream positioned at its start; leave it at the data.

    Raises:
        ``error``: not a .npy, an unsupported version, an object dtype (needs pickle).
    """
    fmt = np.lib.format
    start = _tell(f)
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f, max_header_size=MAX_HEADER_BYTES)
        elif version in ((2, 0), (3, 0)):
            # 3.0 only differs from 2.0 by a UTF-8 header (non-ASCII structured field names).
            shape, fortran, dtype = fmt.read_array_header_2_0(f, max_header_size=MAX_HEADER_BYTES)
        else:
            raise ValueError(f"unsupported format version {version}")
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as exc:
        raise error(f"{where}: not a valid .npy array ({str(exc)[:200]})") from None
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        raise error(f"{where}: holds Python objects (dtype {dtype}); only numeric arrays are read")
    return NpyHeader(tuple(int(d) for d in shape), dtype, bool(fortran), _tell(f) - start)


def _tell(f: BinaryIO) -> int:
    try:
        return int(f.tell())
    except (OSError, AttributeError, ValueError):
        return 0


def _open_regular(path: Path, error: type[EdgeOptError]) -> BinaryIO:
    """Open a regular file without blocking (a FIFO or device is refused, not read)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"{path}: input file not found") from None
    except OSError as exc:
        raise error(f"{path}: cannot open: {exc.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise error(f"{path}: not a regular file (a FIFO, device or directory)")
    return os.fdopen(fd, "rb")


def npz_members(
    zf: zipfile.ZipFile,
    where: str,
    *,
    max_bytes: int = MAX_INPUT_BYTES,
    error: type[EdgeOptError] = InputError,
) -> list[NpzMember]:
    """Headers of every ``.npy`` member, checked before any data is read.

    Each member's zip-declared uncompressed size must equal its header plus the data its shape
    and dtype need, and the total must fit ``max_bytes``.

    Raises:
        ``error``: too many members, duplicate keys, a truncated or inconsistent member, or more
            data than the budget (the message names the file, the array and the sizes).
    """
    infos = [i for i in zf.infolist() if i.filename.endswith(".npy")]
    if len(infos) > MAX_MEMBERS:
        raise error(f"{where}: {len(infos)} arrays, more than {MAX_MEMBERS}")
    members: list[NpzMember] = []
    seen: set[str] = set()
    total = 0
    for info in infos:
        key = info.filename[:-4]
        if key in seen:
            raise error(f"{where}: array '{key}' appears twice in the zip")
        seen.add(key)
        with zf.open(info) as f:
            header = read_npy_header(f, f"{where}: array '{key}'", error)
            offset = f.tell()
        header = NpyHeader(header.shape, header.dtype, header.fortran, offset)
        if offset + header.nbytes != info.file_size:
            what = "truncated" if offset + header.nbytes > info.file_size else "inconsistent"
            raise error(
                f"{where}: array '{key}' is {what}: its header declares "
                f"{list(header.shape)} {header.dtype} ({header.nbytes:,} bytes) but the zip "
                f"entry holds {max(info.file_size - offset, 0):,}"
            )
        total += header.nbytes
        if total > max_bytes:
            raise error(
                f"{where}: arrays declare {total:,} bytes or more (array '{key}' "
                f"{list(header.shape)} {header.dtype}), more than the {max_bytes:,}-byte budget "
                "for input data; refusing before decompressing"
            )
        members.append(NpzMember(key, info, header))
    return members


def read_npz_arrays(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = MAX_INPUT_BYTES,
    error: type[EdgeOptError] = InputError,
) -> dict[str, np.ndarray]:
    """Every array of a ``.npz``, after ``npz_members`` checked the declared sizes.

    Raises:
        ``error``: not a regular file, not a zip, a bad member, over budget.
    """
    p = Path(path)
    with _open_regular(p, error) as f:
        try:
            with zipfile.ZipFile(f) as zf:
                members = npz_members(zf, str(p), max_bytes=max_bytes, error=error)
                out = {}
                for m in members:
                    with zf.open(m.info) as member:
                        out[m.key] = np.lib.format.read_array(
                            member, allow_pickle=False, max_header_size=MAX_HEADER_BYTES
                        )
                return out
        except EdgeOptError:
            raise
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError,
                NotImplementedError, RuntimeError) as exc:  # fmt: skip
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise error(f"{p}: not a readable .npz file: {first}") from None


def read_npy(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = MAX_INPUT_BYTES,
    error: type[EdgeOptError] = InputError,
) -> np.ndarray:
    """One ``.npy`` array, after its header's declared size was checked against the file and
    ``max_bytes``.

    Raises:
        ``error``: not a regular file, not a .npy, truncated, or over budget.
    """
    p = Path(path)
    with _open_regular(p, error) as f:
        header = read_npy_header(f, str(p), error)
        size = os.fstat(f.fileno()).st_size
        if header.data_offset + header.nbytes > size:
            raise error(
                f"{p}: truncated: its header declares {list(header.shape)} {header.dtype} "
                f"({header.nbytes:,} bytes) but the file holds {size - header.data_offset:,}"
            )
        if header.nbytes > max_bytes:
            raise error(
                f"{p}: declares {header.nbytes:,} bytes ({list(header.shape)} {header.dtype}), "
                f"more than the {max_bytes:,}-byte budget for input data"
            )
        f.seek(0)
        try:
            return np.lib.format.read_array(f, allow_pickle=False, max_header_size=MAX_HEADER_BYTES)
        except (ValueError, OSError, EOFError) as exc:
            raise error(f"{p}: not a readable .npy file: {str(exc)[:200]}") from None


def read_npz(
    path: str | os.PathLike[str],
    specs: list[TensorSpec],
    *,
    any_batch: bool = False,
    max_bytes: int = MAX_INPUT_BYTES,
) -> dict[str, np.ndarray]:
    """Read model inputs from a ``.npz`` file and check names and shapes against ``specs``.

    Args:
        path: ``.npz`` written by ``numpy.savez``; keys are input names (for a single-input
            model one array under any key).
        specs: the model's inputs.
        any_batch: accept any size of dim 0 (for ``Model.run_batch``).
        max_bytes: budget for the decompressed arrays (checked from the headers first).

    Raises:
        InputError: missing/unreadable file, wrong extension, names or shapes that do not match,
            more data than the budget.
    """
    p = Path(path)
    if p.suffix.lower() != ".npz":
        got = repr(p.suffix) if p.suffix else "no suffix"
        raise InputError(f"{p}: expected a .npz file (numpy.savez), got {got}")
    if not p.exists():
        raise InputError(f"{p}: input file not found")
    arrays = read_npz_arrays(p, max_bytes=max_bytes)
    names = [s.name for s in specs]
    if len(specs) == 1 and len(arrays) == 1:
        arrays = {names[0]: next(iter(arrays.values()))}
    elif set(arrays) != set(names):
        missing = sorted(set(names) - set(arrays))
        extra = sorted(set(arrays) - set(names))
        raise InputError(
            f"{p}: array names {sorted(arrays)} do not match the model inputs {names}"
            + (f" (missing {missing})" if missing else "")
            + (f" (unknown {extra})" if extra else "")
        )
    for s in specs:
        _check_shape(p, s, arrays[s.name], any_batch)
    return {s.name: arrays[s.name] for s in specs}


def _check_shape(p: Path, s: TensorSpec, a: np.ndarray, any_batch: bool) -> None:
    ok = a.ndim == len(s.shape) and all(
        want is None or want == got or (any_batch and i == 0)
        for i, (want, got) in enumerate(zip(s.shape, a.shape, strict=False))
    )
    if not ok:
        raise InputError(
            f"{p}: array '{s.name}': expected shape {s.shape_str()} ({s.dtype}), got "
            f"{list(a.shape)} ({a.dtype})"
        )


__all__ = [
    "MAX_INPUT_BYTES",
    "NpyHeader",
    "NpzMember",
    "npz_members",
    "read_npy",
    "read_npy_header",
    "read_npz",
    "read_npz_arrays",
]
