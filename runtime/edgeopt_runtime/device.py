"""Facts about the device this runtime runs on: ``edgeopt-runtime device [--json] [--list DIR]``.

What a deploy report needs to say where a number was measured: kernel, OS, CPU model, cores,
memory, Python, the runtime and backend versions, and which delegates / execution providers can
be used here. Everything comes from the standard library, ``/proc`` and package metadata; no
interpreter is created and nothing heavier than ONNX Runtime (for its provider list) is imported,
so it runs in well under a second on a small board.

``--list DIR`` (repeatable) adds the state of every entry directly in DIR — kind, size and sha256,
symlinks not followed — which ``edgeopt deploy`` uses to push only changed files and to verify
what arrived, in the same round trip.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import socket
import sys
from typing import Any

from .bundle import list_dir

FACTS_SCHEMA = "edgeopt.device/1"
_PACKAGES = ("edgeopt-runtime", "numpy", "ai-edge-litert", "tflite-runtime", "onnxruntime")
_INTERPRETERS = (("ai_edge_litert", "ai-edge-litert"), ("tflite_runtime", "tflite-runtime"))


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _meminfo() -> dict[str, int | None]:
    """MemTotal / MemAvailable in bytes from /proc/meminfo (None where unavailable)."""
    out: dict[str, int | None] = {"total_bytes": None, "available_bytes": None}
    try:
        with open("/proc/meminfo", encoding="ascii", errors="replace") as f:
            for line in f:
                key, _, rest = line.partition(":")
                field = {"MemTotal": "total_bytes", "MemAvailable": "available_bytes"}.get(key)
                if field and rest.split():
                    out[field] = int(rest.split()[0]) * 1024
    except (OSError, ValueError):
        pass
    if out["total_bytes"] is None and hasattr(os, "sysconf"):
        try:
            out["total_bytes"] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            pass
    return out


def _os_release() -> str | None:
    try:
        with open("/etc/os-release", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return None


def _tflite_interpreter() -> dict[str, Any]:
    """Which TFLite interpreter package ``load`` would use here (found, not imported)."""
    for module, dist in _INTERPRETERS:
        if importlib.util.find_spec(module) is not None:
            return {"package": dist, "version": _version(dist)}
    return {
        "package": None,
        "version": None,
        "fix": "pip install ai-edge-litert (or tflite-runtime on platforms without its wheels)",
    }


def _onnx_providers() -> dict[str, Any]:
    if importlib.util.find_spec("onnxruntime") is None:
        return {"available": False, "providers": [], "fix": "pip install onnxruntime"}
    try:
        import onnxruntime

        return {"available": True, "providers": list(onnxruntime.get_available_providers())}
    except Exception as exc:  # a broken wheel (wrong CPU / glibc) must not stop the report
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return {"available": False, "providers": [], "error": f"{type(exc).__name__}: {first}"}


def delegates() -> dict[str, Any]:
    """Delegates and execution providers this device can use (libraries found, not loaded)."""
    from . import delegates as registry

    tflite = _tflite_interpreter()
    found: dict[str, Any] = {
        "xnnpack": {
            "available": tflite["package"] is not None,
            "detail": "built into the TFLite interpreter package",
        },
    }
    for delegate in registry.DELEGATES.values():
        if not delegate.external:
            continue
        found[delegate.name] = {
            "available": delegate.available(),
            "library": delegate.library() or delegate.libraries[0],
            "fix": delegate.install_hint,
        }
    found["onnxruntime"] = _onnx_providers()
    return found


def device_facts() -> dict[str, Any]:
    """The ``edgeopt.device/1`` document for this machine."""
    from . import __version__
    from .host import cpu_model

    uname = platform.uname()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "schema": FACTS_SCHEMA,
        "hostname": socket.gethostname(),
        "kernel": {"system": uname.system, "release": uname.release, "version": uname.version},
        "os": _os_release() or platform.platform(),
        "machine": uname.machine,
        "cpu": {"model": cpu_model(), "cores": os.cpu_count(), "usable": usable},
        "memory": _meminfo(),
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "edgeopt_runtime": __version__,
        "packages": {name: _version(name) for name in _PACKAGES},
        "tflite_interpreter": _tflite_interpreter(),
        "delegates": delegates(),
    }


# -- command line ------------------------------------------------------------------------------
def add_parser(sub: Any) -> None:
    """Register ``device`` on the runtime CLI's subparsers."""
    p = sub.add_parser("device", help="facts about this device (kernel, CPU, memory, delegates)")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.add_argument(
        "--list",
        metavar="DIR",
        action="append",
        default=[],
        help="also list DIR's entries with size and sha256 (repeatable; symlinks not followed)",
    )
    p.add_argument(
        "--only-list", action="store_true", help="with --list: the listings alone (no facts)"
    )
    p.set_defaults(handler=_main)


def _main(args: argparse.Namespace) -> int:
    only = args.only_list and args.list
    doc = {"schema": FACTS_SCHEMA} if only else device_facts()
    if args.list:
        doc["listings"] = {d: list_dir(d) for d in args.list}
    if args.json:
        print(json.dumps(doc))
        return 0
    if not only:
        print(format_facts(doc))
    for d, listing in doc.get("listings", {}).items():
        print(f"\n{d}: {listing['kind']}")
        for name, state in listing.get("entries", {}).items():
            digest = state.get("sha256", "")[:16]
            print(f"  {name}  {state['kind']}  {state.get('size_bytes', '')}  {digest}")
    return 0


def format_facts(doc: dict[str, Any]) -> str:
    """A few readable lines from an ``edgeopt.device/1`` document."""
    mem = doc["memory"].get("total_bytes")
    mem_s = f"{mem / 2**30:.1f} GiB" if mem else "unknown memory"
    d = doc["delegates"]
    usable = [k for k in ("xnnpack", "edgetpu", "gpu") if d[k]["available"]]
    ort = d["onnxruntime"]
    interp = doc["tflite_interpreter"]
    return "\n".join(
        [
            f"{doc['hostname']}: {doc['os']}, kernel {doc['kernel']['release']} {doc['machine']}",
            f"cpu      {doc['cpu']['model']} x{doc['cpu']['cores']}, {mem_s}",
            f"python   {doc['python']['version']}  edgeopt-runtime {doc['edgeopt_runtime']}",
            f"tflite   {interp['package'] or 'not installed'} {interp['version'] or ''}".rstrip(),
            f"onnx     onnxruntime {doc['packages'].get('onnxruntime') or 'not installed'}"
            + (f" ({', '.join(ort['providers'])})" if ort.get("providers") else ""),
            f"delegates available: {', '.join(usable) or 'none'}",
        ]
    )


__all__ = ["FACTS_SCHEMA", "add_parser", "delegates", "device_facts", "format_facts"]
