"""``.npy`` files: the header parser (also used for the members of an ``.npz``) and the
single-input file, memory-mapped so rows are copied out one at a time."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
from edgeopt_runtime.errors import CalibrationError
from edgeopt_runtime.spec import TensorSpec

from ...limits import CalibrationLimits, human_bytes
from ..layout import fmt_shape, plan_column
from ..preprocessing import Preprocessing
from .files import ArrayFile


def read_npy_header(f: BinaryIO, where: str) -> tuple[tuple[int, ...], bool, np.dtype]:
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


def check_declared(where: str, dtype: np.dtype, shape: tuple[int, ...], available: int) -> None:
    """Refuse a header whose shape needs more bytes than follow it (checked before reading, so
    a few-byte file claiming terabytes is one line, not a MemoryError)."""
    if dtype.hasobject:
        return  # refused by the dtype check, with its own message
    declared = math.prod(shape) * dtype.itemsize
    if declared > available:
        raise CalibrationError(
            f"{where}: the header declares {fmt_shape(dtype, shape)} ({human_bytes(declared)}) "
            f"but only {human_bytes(max(available, 0))} of data follow it: the file is "
            "truncated or its header is wrong"
        )


class NpyFile(ArrayFile):
    """A single-input ``.npy`` file, memory-mapped (rows are copied out one at a time)."""

    def __init__(
        self, path: Path, where: str, inputs: list[TensorSpec], preprocessing: Preprocessing | None,
        limits: CalibrationLimits,
    ) -> None:
        super().__init__(path, where, limits)
        if len(inputs) != 1:
            raise CalibrationError(
                f"{where}: a .npy file holds one array but the model has {len(inputs)} inputs "
                f"({', '.join(s.name for s in inputs)}): use an .npz with one key per input"
            )
        with open(path, "rb") as f:
            shape, _, dtype = read_npy_header(f, where)
            check_declared(where, dtype, shape, os.fstat(f.fileno()).st_size - f.tell())
        self.columns = [plan_column(where, inputs[0], inputs[0].name, dtype, shape, preprocessing)]
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
