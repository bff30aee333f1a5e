"""The runtime's delegate registry: one entry per TFLite delegate the runtime knows.

Each ``Delegate`` says which system libraries provide it (bare names the dynamic loader looks
up: never a path from a file), how to tell whether this host has it without loading it, and what
it can run. The converter's accelerator registry builds on these entries (``edgeopt.accelerators``).

Who may choose native code (issue #10): an artifact's manifest may *name* a delegate, only from
``DELEGATES``; the library then comes from that entry's ``libraries``. A library path is honoured
only when the *caller* passes one (``load(..., delegate="/path/libx.so")`` or the CLI's
``--delegate PATH``). ``check_manifest_delegate`` refuses anything else in one line, before any
``dlopen``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DelegateError, ModelLoadError

# Folders searched (besides ld.so's cache) when telling whether a library is installed.
_LIB_DIRS = (
    "/usr/lib",
    "/usr/lib64",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib/arm-linux-gnueabihf",
    "/usr/local/lib",
    "/opt/homebrew/lib",
)


@dataclass(frozen=True)
class Delegate:
    """One TFLite delegate.

    Attributes:
        name: the value that appears verbatim in manifests and target profiles.
        description: one line for messages and reports.
        libraries: shared-library names the external-delegate API loads, in preference order
            (empty: built into the interpreter).
        install_hint: how a user gets the library (said when it is missing).
        accelerator: runs on a device other than the host CPU (timings on the host are not the
            device's).
        needs_compiled_model: runs only models compiled for it (Edge TPU: ``*_edgetpu.tflite``).
        precisions: model precisions it runs natively.
        static_shapes: needs static tensor shapes.
        compiled_suffix: file-name ending of models compiled for it (artifacts may hold both).
        fallback_note: said in ``Model.notes`` when an artifact asks for it and this host lacks
            its library, so the model runs on the host CPU instead.
        capabilities: further facts callers may ask about (free-form, JSON-ready).
    """

    name: str
    description: str
    libraries: tuple[str, ...] = ()
    install_hint: str = ""
    accelerator: bool = False
    needs_compiled_model: bool = False
    precisions: tuple[str, ...] = ("float32", "float16", "int8", "uint8", "dynamic", "int16x8")
    static_shapes: bool = False
    compiled_suffix: str | None = None
    fallback_note: str = ""
    capabilities: dict[str, object] = field(default_factory=dict)

    @property
    def external(self) -> bool:
        """Loaded from a shared library through the external-delegate API."""
        return bool(self.libraries)

    def library(self) -> str | None:
        """The first of ``libraries`` this host has (found without loading it), else None."""
        return next((lib for lib in self.libraries if library_installed(lib)), None)

    def available(self) -> bool:
        """True when the delegate can be used here (built in, or its library is installed)."""
        return not self.external or self.library() is not None

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "description": self.description,
            "libraries": list(self.libraries),
            "accelerator": self.accelerator,
            "needs_compiled_model": self.needs_compiled_model,
            "precisions": list(self.precisions),
            "static_shapes": self.static_shapes,
            "compiled_suffix": self.compiled_suffix,
            "capabilities": dict(self.capabilities),
        }


DELEGATES: dict[str, Delegate] = {}


def register(delegate: Delegate) -> Delegate:
    """Add a delegate to the registry; a duplicate name is an error (a programming error)."""
    if delegate.name in DELEGATES:
        raise ValueError(f"delegate {delegate.name!r} is already registered")
    DELEGATES[delegate.name] = delegate
    return delegate


register(
    Delegate(
        "xnnpack",
        "XNNPACK on the host CPU (LiteRT's default)",
        capabilities={"per_op_placement": True},
    )
)
register(Delegate("none", "LiteRT's built-in kernels on the host CPU, no delegate"))
register(
    Delegate(
        "edgetpu",
        "Coral Edge TPU",
        libraries=("libedgetpu.so.1", "libedgetpu.1.dylib", "edgetpu.dll"),
        install_hint="install the Edge TPU runtime (Debian/Ubuntu: `apt install libedgetpu1-std` "
        "from Coral's repository) and plug in the device",
        accelerator=True,
        needs_compiled_model=True,
        precisions=("int8", "uint8"),
        static_shapes=True,
        compiled_suffix="_edgetpu.tflite",
        fallback_note="libedgetpu.so.1 not found: running the uncompiled int8 model on the host "
        "CPU (timings are host-CPU timings, not Edge TPU)",
    )
)
register(
    Delegate(
        "gpu",
        "TFLite GPU delegate (OpenCL / OpenGL ES)",
        libraries=("libtensorflowlite_gpu_delegate.so",),
        install_hint="build or install the TFLite GPU delegate library for this platform",
        accelerator=True,
        precisions=("float32", "float16", "int8", "dynamic"),
        static_shapes=True,
        fallback_note="GPU delegate library not found: running on the host CPU with XNNPACK "
        "(timings are host-CPU timings, not mobile GPU)",
    )
)

DEFAULT = "xnnpack"


def names() -> tuple[str, ...]:
    """The delegate names a manifest may use."""
    return tuple(DELEGATES)


def get(name: str) -> Delegate:
    """The registry entry for ``name``.

    Raises:
        DelegateError: unknown name (the message lists the known ones).
    """
    try:
        return DELEGATES[name]
    except (KeyError, TypeError):
        raise DelegateError(
            f"unknown delegate {name!r}: expected one of {', '.join(DELEGATES)} or a library path"
        ) from None


def is_library_path(value: str) -> bool:
    """True when a caller's ``delegate`` value names a library (a path, or ``libx.so``) rather
    than a registry entry."""
    if value in DELEGATES:
        return False
    return "/" in value or os.sep in value or ".so" in value or value.endswith((".dylib", ".dll"))


def library_installed(name: str) -> bool:
    """Whether the dynamic loader could find library ``name`` (a bare name), without loading it.

    Looks in ld.so's cache and the usual library folders, and in ``LD_LIBRARY_PATH`` /
    ``DYLD_LIBRARY_PATH`` (the host's own setting, not an artifact's).
    """
    if os.sep in name:
        return False  # never a path: the registry holds names only
    dirs = [*_LIB_DIRS]
    for var in ("LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH"):
        dirs += [d for d in os.environ.get(var, "").split(os.pathsep) if d]
    if any((Path(d) / name).is_file() for d in dirs):
        return True
    return sys.platform.startswith("linux") and name in _ld_cache()


_LD_CACHE: frozenset[str] | None = None


def _ld_cache() -> frozenset[str]:
    """Library names in ``/etc/ld.so.cache`` (read as bytes: no ``ldconfig`` or compiler run)."""
    global _LD_CACHE
    if _LD_CACHE is None:
        try:
            with open("/etc/ld.so.cache", "rb") as f:
                raw = f.read(64 << 20)
        except OSError:
            raw = b""
        found = set()
        for part in raw.split(b"\0"):
            base = part.rsplit(b"/", 1)[-1]
            if base.startswith(b"lib") and b".so" in base:
                found.add(base.decode("ascii", "replace"))
        _LD_CACHE = frozenset(found)
    return _LD_CACHE


def check_manifest_delegate(runtime: dict[str, object], where: str) -> tuple[str, str | None]:
    """The delegate and library an artifact's manifest asks for, or a one-line refusal.

    Args:
        runtime: the manifest's ``runtime`` object.
        where: the manifest path, for messages.

    Returns:
        (delegate name, library name from the registry or None).

    Raises:
        ModelLoadError: a delegate outside the registry, or a ``delegate_library`` that is not one
            of that delegate's registered library names (e.g. a path): nothing was loaded.
    """
    wanted = runtime.get("tflite_delegate") or DEFAULT
    if not isinstance(wanted, str) or wanted not in DELEGATES:
        raise ModelLoadError(
            f"{where}: runtime.tflite_delegate {wanted!r} is not one of "
            f"{', '.join(DELEGATES)}; an artifact cannot choose a delegate library (pass a "
            "library path to load(..., delegate=PATH) yourself if you trust it)"
        )
    entry = DELEGATES[wanted]
    library = runtime.get("delegate_library")
    if library is None:
        return wanted, None
    if not isinstance(library, str) or library not in entry.libraries:
        allowed = ", ".join(entry.libraries) or "none (built in)"
        raise ModelLoadError(
            f"{where}: runtime.delegate_library {library!r} is not a library the runtime knows "
            f"for delegate {wanted!r} (allowed: {allowed}); an artifact cannot choose native "
            "code to load"
        )
    return wanted, library


__all__ = [
    "DEFAULT",
    "DELEGATES",
    "Delegate",
    "check_manifest_delegate",
    "get",
    "is_library_path",
    "library_installed",
    "names",
    "register",
]
