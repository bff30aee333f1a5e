"""``.npz`` files: members found from the zip directory, their ``.npy`` headers parsed, rows
streamed from the zip (random access for stored members, forward-only for deflated ones).

All of edgeopt's zip handling for calibration data is in this module (including the local
file header parser that finds where a stored member's bytes start), so it can move to a shared
reader in one place.
"""

from __future__ import annotations

import contextlib
import math
import struct
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from edgeopt_runtime.errors import CalibrationError
from edgeopt_runtime.spec import TensorSpec

from ...limits import CalibrationLimits, human_bytes
from ..layout import Column, plan_column
from ..preprocessing import Preprocessing
from .files import ArrayFile
from .npy import check_declared, read_npy_header

LABEL_KEYS = ("labels", "y")
_SKIP_CHUNK = 1 << 20  # bytes discarded per read when skipping rows in a compressed member


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


class NpzFile(ArrayFile):
    """An ``.npz``: keys are input names (any single key for a single-input model) + labels.

    Members can't be memory-mapped, so rows are read from the zip stream one at a time.
    """

    def __init__(
        self, path: Path, where: str, inputs: list[TensorSpec], preprocessing: Preprocessing | None,
        limits: CalibrationLimits,
    ) -> None:
        super().__init__(path, where, limits)
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
            self.columns.append(plan_column(f"{where}", spec, key, dtype, shape, preprocessing))
            self.members[spec.name] = _Member(key, members[key], offset, fortran)
            if fortran:
                self.check_whole(key, members[key].file_size - offset, "being Fortran-ordered,")
                self.warnings.append(
                    f"{where}: array '{key}' is Fortran-ordered, so it is read "
                    "whole into memory; save it C-ordered to stream it"
                )
        unused = sorted(set(data_keys) - {m.key for m in self.members.values()})
        if unused:
            self.warnings.append(f"{where}: ignored arrays {', '.join(unused)} (not model inputs)")
        if label_keys:
            info = members[label_keys[0]]
            self.check_whole(label_keys[0], info.file_size - headers[label_keys[0]][3], "as labels")
            self.labels = self._load_labels(label_keys)
        self._check_counts()

    def _header(
        self, zf: zipfile.ZipFile, info: zipfile.ZipInfo
    ) -> tuple[tuple[int, ...], bool, np.dtype, int]:
        key = info.filename[:-4]
        self._check_bomb(key, info)
        with zf.open(info) as f:
            shape, fortran, dtype = read_npy_header(f, f"{self.where}: {info.filename}")
            offset = f.tell()
        check_declared(f"{self.where}: array '{key}'", dtype, shape, info.file_size - offset)
        return shape, fortran, dtype, offset

    def _check_bomb(self, key: str, info: zipfile.ZipInfo) -> None:
        """Refuse a deflated member that inflates far beyond its size on disk, from the zip
        directory alone (the data would take minutes to inflate and be mostly the same byte)."""
        if info.compress_type == zipfile.ZIP_STORED:
            return
        big, packed = info.file_size, max(info.compress_size, 1)
        lim = self.limits
        if big > lim.bomb_bytes and big > lim.bomb_ratio * packed:
            raise CalibrationError(
                f"{self.where}: array '{key}' inflates from {human_bytes(packed)} to "
                f"{human_bytes(big)} ({big / packed:.0f}x; real data compresses 1-5x): refusing "
                "a likely decompression bomb; if the data is real, save it with np.savez "
                "(uncompressed)"
            )

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
    path: Path, zf: zipfile.ZipFile, col: Column, member: _Member
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


def _read_row(f: BinaryIO, col: Column, path: Path) -> np.ndarray:
    """Read one row into a fresh (writable) array shaped like a sample."""
    out = np.empty(col.sample_shape, dtype=col.dtype)
    if f.readinto(memoryview(out).cast("B")) != out.nbytes:
        raise CalibrationError(f"{path}: array '{col.key}' is truncated")
    return out
