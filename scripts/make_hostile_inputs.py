"""Hostile inputs for the converter (calibration data, target profiles), small and fast to make.

    python scripts/make_hostile_inputs.py DIR      # writes every case into DIR, lists them

Each function writes one file the converter must refuse with one line (exit 2), in seconds and
without reading what the file only claims to hold. ``tests/converter/test_hostile_inputs.py``
imports this module; the runtime's crash cases are ``scripts/make_crash_cases.py``.

* ``npz_bomb``: a valid ``.npz`` whose deflated member declares 8 GiB of zeros in ~8 MB (the
  adversarial review's file was 37 MB written by ``zipfile`` at level 1; this one is made in
  well under a second: one compressed 1 MiB block of zeros is repeated, which deflate allows
  after a full flush, and the CRC is extended over the zeros arithmetically).
* ``npy_huge_header``: an ``.npy`` of a few bytes whose header claims ``(2**40, 8, 8, 3)``.
* ``npz_huge_header``: the same claim inside an ``.npz`` member.
* ``huge_values``: finite calibration values (3e38) that used to kill TF's quantizer.
* ``escaping_target``: a target profile whose ``name`` is ``../../escape``.
"""

from __future__ import annotations

import io
import struct
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np

_MIB = 1 << 20
_CRC_POLY = 0xEDB88320


# --------------------------------------------------------------------------- CRC-32 of zeros


def _gf2_times(mat: list[int], vec: int) -> int:
    out, i = 0, 0
    while vec:
        if vec & 1:
            out ^= mat[i]
        vec >>= 1
        i += 1
    return out


def _gf2_square(mat: list[int]) -> list[int]:
    return [_gf2_times(mat, mat[n]) for n in range(32)]


def crc32_zeros(crc: int, count: int) -> int:
    """``zlib.crc32(bytes(count), crc)`` in O(log count) (zlib's crc32_combine operator)."""
    odd = [_CRC_POLY] + [1 << n for n in range(31)]  # the operator for one zero bit
    even = _gf2_square(odd)  # two zero bits
    odd = _gf2_square(even)  # four zero bits
    crc ^= 0xFFFFFFFF  # work on the raw register
    while count:
        even = _gf2_square(odd)  # 1, 2, 4, ... zero bytes
        if count & 1:
            crc = _gf2_times(even, crc)
        count >>= 1
        if not count:
            break
        odd = _gf2_square(even)
        if count & 1:
            crc = _gf2_times(odd, crc)
        count >>= 1
    return crc ^ 0xFFFFFFFF


# --------------------------------------------------------------------------- zip writing


def _npy_header(dtype: str, shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_2_0(
        buf, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


def _zip64_single(path: Path, name: str, method: int, data: bytes | list[bytes], crc: int,
                  size: int) -> None:
    """A zip with one member (zip64 sizes), its data given already compressed."""
    chunks = [data] if isinstance(data, bytes) else data
    csize = sum(len(c) for c in chunks)
    fname = name.encode()
    extra = struct.pack("<HHQQ", 1, 16, size, csize)
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 45, 0, method, 0, 0, crc,
                        0xFFFFFFFF, 0xFFFFFFFF, len(fname), len(extra))
    with open(path, "wb") as f:
        f.write(local + fname + extra)
        for c in chunks:
            f.write(c)
        cd_offset = f.tell()
        cextra = struct.pack("<HHQQQ", 1, 24, size, csize, 0)
        central = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 45, 45, 0, method, 0, 0, crc,
                              0xFFFFFFFF, 0xFFFFFFFF, len(fname), len(cextra), 0, 0, 0, 0,
                              0xFFFFFFFF)
        f.write(central + fname + cextra)
        cd_size = f.tell() - cd_offset
        eocd64_offset = f.tell()
        f.write(struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, 1, 1, cd_size,
                            cd_offset))
        f.write(struct.pack("<4sLQL", b"PK\x06\x07", 0, eocd64_offset, 1))
        f.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF,
                            0xFFFFFFFF, 0))


def npz_bomb(path: Path, declared: int = 8 << 30, key: str = "image",
             row: tuple[int, ...] = (8, 8, 3)) -> Path:
    """A valid ``.npz``: member ``key`` holds ``declared`` bytes of float32 zeros, deflated."""
    row_bytes = int(np.prod(row)) * 4
    rows = declared // row_bytes
    header = _npy_header("<f4", (rows, *row))
    zeros = rows * row_bytes
    comp = zlib.compressobj(1, zlib.DEFLATED, -15)
    head = comp.compress(header) + comp.flush(zlib.Z_FULL_FLUSH)
    block = comp.compress(bytes(_MIB)) + comp.flush(zlib.Z_FULL_FLUSH)
    whole, rest = divmod(zeros, _MIB)
    tail = comp.compress(bytes(rest)) + comp.flush(zlib.Z_FINISH)
    crc = crc32_zeros(zlib.crc32(header), zeros)
    _zip64_single(path, f"{key}.npy", zipfile.ZIP_DEFLATED, [head, *([block] * whole), tail], crc,
                  len(header) + zeros)
    return path


def npy_huge_header(path: Path, shape: tuple[int, ...] = (2**40, 8, 8, 3)) -> Path:
    """An ``.npy`` whose header claims ``shape`` of float32, followed by 16 bytes of data."""
    path.write_bytes(_npy_header("<f4", shape) + bytes(16))
    return path


def npz_huge_header(path: Path, key: str = "image",
                    shape: tuple[int, ...] = (2**40, 8, 8, 3)) -> Path:
    """An ``.npz`` (stored) whose member claims ``shape`` but holds 16 bytes."""
    data = _npy_header("<f4", shape) + bytes(16)
    _zip64_single(path, f"{key}.npy", 0, data, zlib.crc32(data), len(data))
    return path


def huge_values(path: Path, value: float = 3e38, key: str = "image", n: int = 4,
                row: tuple[int, ...] = (8, 8, 3)) -> Path:
    """An ``.npz`` of ``n`` float32 samples in [0, 1), with one value of sample 2 = ``value``."""
    x = np.random.default_rng(0).random((n, *row), dtype=np.float32)
    x[min(2, n - 1)].flat[5] = value
    np.savez(path, **{key: x})
    return path


def escaping_target(path: Path, name: str = "../../escape") -> Path:
    """A target profile that would write its artifacts outside ``--out``."""
    path.write_text(f'name = "{name}"\ndescription = "hostile"\nformats = ["tflite"]\n')
    return path


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    made = [
        npz_bomb(out / "bomb-8gib.npz"),
        npy_huge_header(out / "huge-header.npy"),
        npz_huge_header(out / "huge-header.npz"),
        huge_values(out / "values-3e38.npz"),
        escaping_target(out / "escape.toml"),
    ]
    for p in made:
        print(f"{p} ({p.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
