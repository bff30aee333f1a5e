"""Backend runners behind one typed interface, chosen from a registry by model format.

A runner (Polygraphy's shape) knows its model's IO (``inputs`` / ``outputs`` as ``TensorSpec``)
and runs already validated, already typed numpy arrays. Checking and converting feeds is the job
of ``edgeopt_runtime.model.Model``, so it is written once for every backend.

Each backend registers a ``Backend`` entry: its format, file extensions, and the module that
implements it (imported only when a model of that format is loaded, so ``import
edgeopt_runtime`` loads neither engine). The module provides:

* ``import_engine() -> str``: import the engine library, return ``"name version"``;
* ``check(data, source)``: structural checks before the engine sees the bytes;
* ``create(data, source, options) -> Runner``.

Adding an engine means one ``register(Backend(...))`` call and one module; nothing else in the
runtime compares format names.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import ModelLoadError
from ..spec import TensorSpec

Progress = Any  # Callable[[str, int, int | None], None]; kept loose to avoid an import cycle


@dataclass(frozen=True)
class LoadOptions:
    """What the caller (or the manifest) asks of the engine; each backend uses what applies.

    Attributes:
        threads: interpreter / intra-op threads (None: the engine's default).
        delegate: TFLite delegate name from ``edgeopt_runtime.delegates`` or a caller's library.
        delegate_library: the library an artifact's registered delegate resolved to.
        delegate_options: options for an external delegate.
        providers: ONNX Runtime execution providers.
        max_instances: most engine instances one runner keeps for concurrent callers (TFLite's
            interpreter pool; 1 = one interpreter behind a lock).
    """

    threads: int | None = None
    delegate: str | None = None
    delegate_library: str | None = None
    delegate_options: dict[str, Any] | None = None
    providers: tuple[str, ...] | None = None
    max_instances: int | None = None


@runtime_checkable
class Runner(Protocol):
    """What ``Model`` and ``profile`` need from a backend."""

    format: str  # "tflite" | "onnx"
    backend: str  # e.g. "ai_edge_litert 2.3.0"
    delegate: str  # e.g. "xnnpack", "edgetpu", "CPUExecutionProvider"
    threads: int | None
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    ties: str  # rounding of this engine's QUANTIZE op: "away" (TFLite) or "even" (ONNX)

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Run on arrays in input order (dtype/shape already checked); outputs in output order.

        Safe to call from many threads at once.
        """
        ...

    def info(self) -> dict[str, Any]:
        """Backend facts for reports (version, delegate, threads, providers...)."""
        ...

    def threads_effective(self) -> str:
        """The thread count the engine really uses, in words when it is the engine's default."""
        ...

    def op_profile(
        self, arrays: list[np.ndarray], runs: int, warmup: int, progress: Progress | None
    ) -> dict[str, Any]:
        """Per-op time over ``runs`` runs (``available``/``reason``/``by_op_type``/... keys of the
        profile's ``op_profile`` section); backends without a profiler list ops and say why."""
        ...


@dataclass(frozen=True)
class Backend:
    """One registered engine."""

    format: str
    extensions: tuple[str, ...]
    module: str  # implements import_engine / check / create
    description: str = ""

    def impl(self) -> ModuleType:
        return importlib.import_module(self.module)

    def import_engine(self) -> str:
        """Import the engine library (not timed by ``load``); return ``"name version"``."""
        return self.impl().import_engine()

    def check(self, data: bytes, source: str) -> None:
        self.impl().check(data, source)

    def create(self, data: bytes, source: str, options: LoadOptions) -> Runner:
        return self.impl().create(data, source, options)


BACKENDS: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    """Register an engine; a duplicate format or extension is an error (a programming error)."""
    if backend.format in BACKENDS:
        raise ValueError(f"backend for {backend.format!r} is already registered")
    taken = {e for b in BACKENDS.values() for e in b.extensions}
    if taken & set(backend.extensions):
        raise ValueError(f"extension(s) {sorted(taken & set(backend.extensions))} already taken")
    BACKENDS[backend.format] = backend
    return backend


register(Backend("tflite", (".tflite",), "edgeopt_runtime.backends.tflite", "LiteRT / TFLite"))
register(Backend("onnx", (".onnx",), "edgeopt_runtime.backends.onnx", "ONNX Runtime"))


def formats() -> tuple[str, ...]:
    return tuple(BACKENDS)


def get(fmt: str) -> Backend:
    """The backend for ``fmt``.

    Raises:
        ModelLoadError: no backend handles that format.
    """
    try:
        return BACKENDS[fmt]
    except KeyError:
        raise ModelLoadError(
            f"no runtime backend for format {fmt!r} (known: {', '.join(BACKENDS)})"
        ) from None


def for_extension(suffix: str) -> Backend | None:
    """The backend whose files end in ``suffix`` (``".tflite"``), or None."""
    suffix = suffix.lower()
    return next((b for b in BACKENDS.values() if suffix in b.extensions), None)


def extensions() -> tuple[str, ...]:
    return tuple(e for b in BACKENDS.values() for e in b.extensions)


def first_line(exc: BaseException) -> str:
    """The first line of an engine's exception message (engines write multi-line messages)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = [
    "BACKENDS",
    "Backend",
    "LoadOptions",
    "Runner",
    "extensions",
    "first_line",
    "for_extension",
    "formats",
    "get",
    "register",
]
