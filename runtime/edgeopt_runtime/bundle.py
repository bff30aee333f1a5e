"""Deploy bundles: the ``bundle.json`` index, file verification and bounded ``.npz`` reading.

A bundle is one flat folder that ``edgeopt bundle`` writes on the build machine and
``edgeopt deploy`` pushes to a device. It is an artifact folder (``manifest.json`` + model files,
so ``edgeopt_runtime.load(bundle)`` works on it) plus:

* ``target.toml`` — a snapshot of the target profile the artifact was converted for;
* ``golden_inputs.npz`` and ``golden_outputs_<k>.npz`` — a few inputs and the outputs the build
  machine computed for them, per model group (see ``check.py``);
* ``README.md`` — how to check and profile it with only ``edgeopt-runtime`` installed;
* ``bundle.json`` — this index, schema ``edgeopt.bundle/1``::

    {"schema": "edgeopt.bundle/1",
     "name": "digits_cnn-arm-cpu", "target": "arm-cpu",
     "requires": {"edgeopt-runtime": "0.1.0"},          # minimum version on the device
     "files": [{"name": "model_int8.tflite", "sha256": "<hex>", "size_bytes": 10432,
                "role": "model" | "manifest" | "target-profile" | "golden" | "readme" | "log"}],
     "golden": {...},                                     # see check.py
     "host_reference": {...} | null,                     # the build machine's numbers
     "source": {...}}                                     # where the artifact came from

Every file except ``bundle.json`` itself is listed with its sha256. File names are plain,
printable names that do not start with ``.`` (the deploy step keeps its temporary files under
dot names, and a name can never reach a shell unquoted anyway).

Everything read here may come from an untrusted device or file: the index size, the number of
files and every ``.npz`` member are bounded before anything is allocated.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import EdgeOptError

BUNDLE_SCHEMA = "edgeopt.bundle/1"
BUNDLE_INDEX = "bundle.json"
MAX_INDEX_BYTES = 1 << 20  # a bundle.json is a few KB; refuse anything absurd before parsing
MAX_FILES = 256
MAX_NPZ_ARRAYS = 64
DEFAULT_MAX_GOLDEN_BYTES = 64 << 20
_NUMERIC_KINDS = "biuf"
_HEX = set("0123456789abcdef")


class BundleError(EdgeOptError):
    """A bundle folder or one of its files is missing, malformed or not what its index says."""


def check_name(name: object, what: str = "file name") -> str:
    """Return ``name`` if it is a plain, printable bundle file name, else raise BundleError.

    Allowed: any printable characters (spaces and shell metacharacters included: names are
    never given to a shell unquoted) except ``/`` and ``\\``; not empty, not ``.``-prefixed,
    at most 200 characters.
    """
    if not isinstance(name, str) or not name:
        raise BundleError(f"{what} must be a non-empty string, got {name!r}")
    if len(name) > 200:
        raise BundleError(f"{what} {name[:40]!r}... is longer than 200 characters")
    if "/" in name or "\\" in name or name.startswith("."):
        raise BundleError(f"{what} {name!r} must be a plain name (no '/', not starting with '.')")
    if not name.isprintable():
        raise BundleError(f"{what} {name!r} holds control characters")
    return name


@dataclass(frozen=True)
class BundleFile:
    """One file listed in ``bundle.json``."""

    name: str
    sha256: str
    size_bytes: int
    role: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "role": self.role,
        }


@dataclass(frozen=True)
class BundleIndex:
    """A parsed, validated ``bundle.json``."""

    directory: Path
    files: tuple[BundleFile, ...]
    data: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.data.get("name") or self.directory.name)

    @property
    def target(self) -> str | None:
        return self.data.get("target")

    @property
    def golden(self) -> dict[str, Any]:
        return self.data.get("golden") or {}

    @property
    def requires_runtime(self) -> str | None:
        return (self.data.get("requires") or {}).get("edgeopt-runtime")


def parse_index(raw: bytes, where: str, directory: Path | None = None) -> BundleIndex:
    """Validate the bytes of a ``bundle.json``.

    Raises:
        BundleError: too large, not JSON, another schema, or a bad file entry.
    """
    if len(raw) > MAX_INDEX_BYTES:
        raise BundleError(f"{where}: {len(raw)} bytes, more than the {MAX_INDEX_BYTES} allowed")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"{where}: not a JSON document ({exc})") from None
    if not isinstance(data, dict):
        raise BundleError(f"{where}: expected a JSON object")
    schema = data.get("schema")
    if not isinstance(schema, str) or schema.split("/")[0] != BUNDLE_SCHEMA.split("/")[0]:
        raise BundleError(f"{where}: expected schema {BUNDLE_SCHEMA!r}, got {schema!r}")
    if schema.split("/", 1)[-1].split(".")[0] != BUNDLE_SCHEMA.split("/", 1)[1]:
        raise BundleError(f"{where}: schema {schema!r} is not supported by this runtime")
    entries = data.get("files")
    if not isinstance(entries, list) or not entries:
        raise BundleError(f"{where}: 'files' must be a non-empty list")
    if len(entries) > MAX_FILES:
        raise BundleError(f"{where}: lists {len(entries)} files, more than {MAX_FILES}")
    files, seen = [], set()
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise BundleError(f"{where}: files[{i}] must be an object")
        name = check_name(e.get("name"), f"{where}: files[{i}].name")
        if name == BUNDLE_INDEX or name in seen:
            raise BundleError(f"{where}: files[{i}].name {name!r} is listed twice or reserved")
        seen.add(name)
        digest, size = e.get("sha256"), e.get("size_bytes")
        if not isinstance(digest, str) or len(digest) != 64 or not set(digest) <= _HEX:
            raise BundleError(f"{where}: files[{i}] ({name}): sha256 must be 64 hex digits")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BundleError(f"{where}: files[{i}] ({name}): size_bytes must be an integer >= 0")
        files.append(BundleFile(name, digest, size, str(e.get("role") or "file")))
    return BundleIndex(directory or Path("."), tuple(files), data)


def read_index(directory: str | os.PathLike[str]) -> BundleIndex:
    """Read and validate ``directory/bundle.json``.

    Raises:
        BundleError: no bundle there, or a malformed index.
    """
    d = Path(directory)
    path = d / BUNDLE_INDEX
    try:
        st = path.lstat()
    except FileNotFoundError:
        raise BundleError(
            f"{d}: no {BUNDLE_INDEX}: not an edgeopt bundle (make one with `edgeopt bundle`)"
        ) from None
    except OSError as exc:
        raise BundleError(f"{path}: cannot read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise BundleError(f"{path}: is not a regular file")
    if st.st_size > MAX_INDEX_BYTES:
        raise BundleError(f"{path}: {st.st_size} bytes, more than the {MAX_INDEX_BYTES} allowed")
    return parse_index(_read_nofollow(path, MAX_INDEX_BYTES), str(path), d)


def _read_nofollow(path: Path, limit: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as f:
        return f.read(limit + 1)


def file_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What is at ``path``, without following symlinks: kind, size and sha256 of a regular file.

    Returns:
        ``{"kind": "file", "size_bytes": n, "sha256": hex}``, or ``{"kind": "missing"}``,
        ``{"kind": "symlink" | "directory" | "other"}``.
    """
    p = Path(path)
    try:
        st = p.lstat()
    except FileNotFoundError:
        return {"kind": "missing"}
    if stat.S_ISLNK(st.st_mode):
        return {"kind": "symlink"}
    if stat.S_ISDIR(st.st_mode):
        return {"kind": "directory"}
    if not stat.S_ISREG(st.st_mode):
        return {"kind": "other"}
    h = hashlib.sha256()
    fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return {"kind": "file", "size_bytes": st.st_size, "sha256": h.hexdigest()}


def list_dir(directory: str | os.PathLike[str], max_entries: int = MAX_FILES * 2) -> dict:
    """The entries directly in ``directory`` with ``file_state`` each (symlinks not followed).

    Returns:
        ``{"kind": "directory", "entries": {name: state}}``, or ``{"kind": "missing"}`` /
        ``{"kind": "symlink" | "other"}`` for something that is not a real directory.

    Raises:
        BundleError: more than ``max_entries`` entries (a folder edgeopt never wrote).
    """
    d = Path(directory)
    try:
        st = d.lstat()
    except FileNotFoundError:
        return {"kind": "missing"}
    if stat.S_ISLNK(st.st_mode):
        return {"kind": "symlink"}
    if not stat.S_ISDIR(st.st_mode):
        return {"kind": "other"}
    names = []
    with os.scandir(d) as it:
        for entry in it:
            names.append(entry.name)
            if len(names) > max_entries:
                raise BundleError(f"{d}: more than {max_entries} entries; not an edgeopt bundle")
    return {"kind": "directory", "entries": {n: file_state(d / n) for n in sorted(names)}}


def verify_files(index: BundleIndex) -> list[dict[str, Any]]:
    """Check every listed file's kind, size and sha256.

    Returns:
        One problem dict per bad file (``file``, ``problem``, ``expected``, ``actual``); empty when
        every file is intact.
    """
    problems = []
    for f in index.files:
        state = file_state(index.directory / f.name)
        if state["kind"] != "file":
            what = "missing" if state["kind"] == "missing" else f"a {state['kind']}, not a file"
            problems.append({"file": f.name, "problem": what, "expected": f.sha256, "actual": None})
        elif state["sha256"] != f.sha256:
            problems.append(
                {
                    "file": f.name,
                    "problem": f"sha256 differs ({state['size_bytes']} bytes, expected "
                    f"{f.size_bytes}): the file was changed or damaged",
                    "expected": f.sha256,
                    "actual": state["sha256"],
                }
            )
    return problems


def read_npz_bounded(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = DEFAULT_MAX_GOLDEN_BYTES,
    max_arrays: int = MAX_NPZ_ARRAYS,
) -> dict[str, np.ndarray]:
    """Read a ``.npz`` whose every member is checked from its header before it is loaded.

    Only numeric arrays (bool, int, uint, float) are accepted, never pickles; the file size, the
    number of members and the sum of the arrays' sizes (from their headers, so a compressed
    member cannot expand past it) are bounded by ``max_bytes`` / ``max_arrays``.

    Raises:
        BundleError: unreadable, too large, duplicate or non-``.npy`` members, non-numeric dtype.
    """
    p = Path(path)
    try:
        st = p.lstat()
    except FileNotFoundError:
        raise BundleError(f"{p}: file not found") from None
    if not stat.S_ISREG(st.st_mode):
        raise BundleError(f"{p}: is not a regular file")
    if st.st_size > max_bytes:
        raise BundleError(f"{p}: {st.st_size} bytes, more than the {max_bytes} allowed")
    try:
        with zipfile.ZipFile(p) as zf:
            infos = zf.infolist()
            _check_members(p, infos, max_arrays)
            budget = max_bytes
            arrays: dict[str, np.ndarray] = {}
            for info in infos:
                key = info.filename[: -len(".npy")]
                with zf.open(info) as f:
                    budget -= _member_bytes(p, key, f, budget)
                with zf.open(info) as f:
                    arrays[key] = np.lib.format.read_array(f, allow_pickle=False)
            return arrays
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, NotImplementedError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BundleError(f"{p}: not a readable .npz file: {first}") from None


def _check_members(p: Path, infos: list[zipfile.ZipInfo], max_arrays: int) -> None:
    if len(infos) > max_arrays:
        raise BundleError(f"{p}: {len(infos)} arrays, more than the {max_arrays} allowed")
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        raise BundleError(f"{p}: duplicate member names")
    bad = [n for n in names if not n.endswith(".npy")]
    if bad:
        raise BundleError(f"{p}: member {bad[0]!r} is not a .npy array")


def _member_bytes(p: Path, key: str, f: Any, budget: int) -> int:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    if dtype.hasobject or dtype.kind not in _NUMERIC_KINDS:
        raise BundleError(f"{p}: array '{key}' has dtype {dtype}, expected a numeric array")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > budget:
        raise BundleError(
            f"{p}: array '{key}' {list(shape)} {dtype} needs {nbytes} bytes, over the remaining "
            f"limit of {budget}"
        )
    return nbytes


__all__ = [
    "BUNDLE_INDEX",
    "BUNDLE_SCHEMA",
    "BundleError",
    "BundleFile",
    "BundleIndex",
    "check_name",
    "file_state",
    "list_dir",
    "parse_index",
    "read_index",
    "read_npz_bounded",
    "verify_files",
]
