"""``.keras`` archives: the zip structure checked before Keras opens it."""

from __future__ import annotations

import json
import stat
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

from edgeopt_runtime.errors import ModelLoadError

from .checks import first_line

# A .keras archive stores its members uncompressed; 20x leaves room for re-zipped (deflated)
# files, and anything beyond it (plus a fixed slack) is treated as a zip bomb.
ARCHIVE_MAX_RATIO = 20
ARCHIVE_SLACK_BYTES = 64 << 20


def check_keras_archive(p: Path) -> Any:
    """Check a ``.keras`` zip before Keras opens it; return its parsed ``config.json``.

    Refuses: a file that is not a zip, damaged members (CRC / truncation), member paths that
    could escape an extraction folder, symlink members, duplicate names, a total uncompressed
    size far beyond the archive's (zip bomb), and a missing or unparsable ``config.json``.
    """
    try:
        with zipfile.ZipFile(p) as zf:
            infos = zf.infolist()
            _check_zip_members(p, infos)
            bad = zf.testzip()  # reads every member: CRC and decompression errors
            if bad is not None:
                raise ModelLoadError(
                    f"{p}: archive member {bad!r} is damaged (CRC mismatch); the file is corrupt "
                    "or incomplete"
                )
            text = zf.read("config.json")
    except ModelLoadError:
        raise
    except Exception as exc:  # BadZipFile, zlib.error, EOFError, OSError, NotImplementedError
        raise ModelLoadError(
            f"{p}: not a .keras archive (expected a zip file saved by model.save): "
            f"{first_line(exc)}"
        ) from None
    try:
        return json.loads(text)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ModelLoadError(
            f"{p}: config.json in the archive is not valid JSON ({first_line(exc)}); the file "
            "is corrupt"
        ) from None


def _check_zip_members(p: Path, infos: list[zipfile.ZipInfo]) -> None:
    names = [i.filename for i in infos]
    for info in infos:
        parts = info.filename.replace("\\", "/").split("/")
        if info.filename.startswith("/") or ".." in parts or ":" in parts[0]:
            raise ModelLoadError(f"{p}: archive member {info.filename!r} has an unsafe path")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise ModelLoadError(f"{p}: archive member {info.filename!r} is a symbolic link")
    dup = next((n for n, k in Counter(names).items() if k > 1), None)
    if dup is not None:
        raise ModelLoadError(f"{p}: archive member {dup!r} appears twice")
    unpacked = sum(i.file_size for i in infos)
    limit = ARCHIVE_MAX_RATIO * p.stat().st_size + ARCHIVE_SLACK_BYTES
    if unpacked > limit:
        raise ModelLoadError(
            f"{p}: archive members unpack to {unpacked} bytes from {p.stat().st_size}; refusing "
            "a possible zip bomb"
        )
    if "config.json" not in names:
        raise ModelLoadError(
            f"{p}: cannot load Keras model: the archive has no config.json (expected a file "
            "saved by model.save)"
        )


def hdf5_members(p: Path) -> list[str]:
    with zipfile.ZipFile(p) as zf:
        return [n for n in zf.namelist() if n.endswith(".h5")]
