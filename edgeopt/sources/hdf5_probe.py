"""HDF5 data (``.h5`` models, the weights inside ``.keras``) read once in a bounded child.

A damaged HDF5 file was found to loop the HDF5 C library forever (Ctrl-C ignored) or crash it,
so the parent never reads HDF5 itself before this probe passed: the child reads every link,
attribute and dataset under a time limit and an address-space cap, and refuses external links,
external or virtual dataset storage and NaN weights.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

from edgeopt_runtime.errors import MissingDependencyError, ModelLoadError

from .checks import first_line

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# A time budget and an address-space cap for the child.
PROBE_BASE_SECONDS = 60.0
PROBE_SECONDS_PER_GIB = 60.0
PROBE_MEMORY_BYTES = 2 << 30


def probe_hdf5(p: Path, digest: str, member: str | None) -> dict[str, Any]:
    """Read an HDF5 file (or a ``.keras`` member) completely in a child process, bounded.

    A damaged HDF5 file can send the HDF5 C library into an endless loop (measured: a swapped
    byte range made reading an attribute spin forever, with Ctrl-C ignored) or crash it. The
    child reads every link, attribute and dataset, with a time limit and an address-space cap,
    so Keras reads only data that has been read once safely. It also refuses external links,
    external or virtual dataset storage (they read other files) and NaN weights.

    Returns:
        ``{"model_config": str | None}`` (cached per content hash and member).

    Raises:
        ModelLoadError: the probe found a problem, timed out, or crashed.
        MissingDependencyError: h5py is not installed.
    """
    key = (digest, member)
    if key in _PROBED:
        return _PROBED[key]
    where = f"{p} (member {member})" if member else str(p)
    size = p.stat().st_size
    timeout = float(os.environ.get("EDGEOPT_PROBE_TIMEOUT_S", 0)) or (
        PROBE_BASE_SECONDS + PROBE_SECONDS_PER_GIB * size / (1 << 30)
    )
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "from edgeopt.sources.hdf5_probe import main; sys.exit(main(sys.argv[2:]))"
    )
    root = str(Path(__file__).resolve().parents[2])
    limit = PROBE_MEMORY_BYTES + 4 * size
    cmd = [sys.executable, "-c", code, root, str(p), member or "", str(limit)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ModelLoadError(
            f"{where}: reading the HDF5 data did not finish within {timeout:.0f} s; the file is "
            "corrupt (a damaged HDF5 file can loop the HDF5 library forever)"
        ) from None
    if proc.returncode < 0:
        raise ModelLoadError(
            f"{where}: the HDF5 library crashed reading this file "
            f"({_signal_name(-proc.returncode)}); the file is corrupt"
        )
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
        raise ModelLoadError(f"{where}: cannot read the HDF5 data: {tail}") from None
    if "missing" in result:
        raise MissingDependencyError(result["missing"], result["missing"], "to read Keras models")
    if "error" in result:
        raise ModelLoadError(f"{where}: {result['error']}")
    _PROBED[key] = result
    return result


_PROBED: dict[tuple[str, str | None], dict[str, Any]] = {}


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def main(argv: list[str]) -> int:
    """Child side of ``probe_hdf5``: ``PATH MEMBER MEMORY_LIMIT``; prints one JSON line.

    Returns:
        The exit code (0 also when the file was refused: the JSON says why).
    """
    import resource

    path, member, limit = argv[0], argv[1], int(argv[2])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        result = _read_hdf5(path, member)
    except ImportError:
        result = {"missing": "h5py"}
    except MemoryError:
        result = {"error": "HDF5 data needs more memory than the file could hold; it is corrupt"}
    except _Hdf5Refusal as exc:
        result = {"error": str(exc)}
    except Exception as exc:  # h5py raises OSError / KeyError / ValueError / RuntimeError
        result = {"error": f"cannot read the HDF5 data (corrupt file?): {first_line(exc)}"}
    print(json.dumps(result))
    return 0


class _Hdf5Refusal(Exception):
    """The HDF5 data is readable but must not be used (links or storage outside the file)."""


def _read_hdf5(path: str, member: str) -> dict[str, Any]:
    import io

    import h5py
    import numpy as np

    if member:
        with zipfile.ZipFile(path) as zf:
            source: Any = io.BytesIO(zf.read(member))
    else:
        source = path
    with h5py.File(source, "r") as f:
        for name, link in _hdf5_links(f):
            if isinstance(link, h5py.ExternalLink):
                raise _Hdf5Refusal(f"HDF5 entry {name!r} is a link to another file")
        nan: list[str] = []

        def visit(name: str, obj: Any) -> None:
            _read_attrs(obj)
            if not isinstance(obj, h5py.Dataset):
                return
            if obj.external or obj.is_virtual:
                raise _Hdf5Refusal(f"HDF5 dataset {name!r} stores its data in other files")
            data = obj[()]
            if isinstance(data, np.ndarray) and data.dtype.kind == "f" and np.isnan(data).any():
                nan.append(name)

        config = _read_attrs(f).get("model_config")
        f.visititems(visit)  # hard links only, each object once (no cycles)
    if nan:
        raise _Hdf5Refusal(
            f"weights {', '.join(map(repr, nan[:3]))} hold NaN values; the file is corrupt"
        )
    if isinstance(config, bytes):
        config = config.decode("utf-8", errors="replace")
    return {"model_config": config if isinstance(config, str) else None}


def _hdf5_links(f: Any) -> list[tuple[str, Any]]:
    links: list[tuple[str, Any]] = []
    f.visititems_links(lambda name, link: links.append((name, link)))
    return links


def _read_attrs(obj: Any) -> dict[str, Any]:
    return {k: obj.attrs[k] for k in obj.attrs}
