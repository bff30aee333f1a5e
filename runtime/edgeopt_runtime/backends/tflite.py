"""LiteRT / TFLite runner: ai_edge_litert, else tflite_runtime, else tensorflow.lite.

Thread safety: a LiteRT ``Interpreter`` is not safe to use from two threads (measured: 25-75 % of
calls from 4-8 threads failed with "There is at least 1 reference to internal data", one returned
a wrong result). ``TFLiteRunner`` therefore keeps a small pool of interpreters over the same model
bytes: a call checks one out, runs it, and returns it. The pool grows only when calls overlap (one
interpreter for a single-threaded app) up to ``max_instances``; ``max_instances=1`` is a lock
around one interpreter. ``benchmarks/threads.py`` measures both (numbers in
``docs/architecture.md``). External delegates (Edge TPU, GPU) get one interpreter: one device
context.

Resizing: all changed inputs are resized first, then tensors are allocated once (resizing and
allocating per input broke multi-input models with a dynamic batch). A resize the model cannot
take restores the previous shapes, so the interpreter keeps working.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .. import delegates
from ..errors import DelegateError, InputError, MissingDependencyError, ModelLoadError
from ..spec import QuantParams, TensorSpec
from . import LoadOptions, Progress, first_line

# (module, how the version is found); tensorflow is the last resort: it is huge to import.
_INTERPRETER_MODULES = (
    ("ai_edge_litert.interpreter", "ai_edge_litert"),
    ("tflite_runtime.interpreter", "tflite_runtime"),
    ("tensorflow.lite", "tensorflow"),
)
DEFAULT_MAX_INSTANCES = max(1, min(os.cpu_count() or 1, 8))
_ENGINE: tuple[Any, str] | None = None


def _interpreter_module() -> tuple[Any, str]:
    """Return (module with Interpreter/load_delegate, "name version") of the first that imports."""
    global _ENGINE
    if _ENGINE is not None:
        return _ENGINE
    for mod_name, pkg in _INTERPRETER_MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:
            continue
        version = getattr(importlib.import_module(pkg), "__version__", "unknown")
        if pkg == "tensorflow":  # tf.lite has Interpreter and experimental.load_delegate
            mod.load_delegate = mod.experimental.load_delegate
        _ENGINE = (mod, f"{pkg} {version}")
        return _ENGINE
    raise MissingDependencyError("A TFLite interpreter", "ai-edge-litert", "to run .tflite models")


def import_engine() -> str:
    """Import the interpreter library; return ``"name version"``."""
    return _interpreter_module()[1]


def check(data: bytes, source: str) -> None:
    """Structural checks before the interpreter sees the bytes (``edgeopt_runtime.verify``)."""
    from ..verify import check_tflite

    check_tflite(data, source)


def create(data: bytes, source: str, options: LoadOptions) -> TFLiteRunner:
    return TFLiteRunner(data, source, options)


def _quant(detail: dict[str, Any]) -> QuantParams | None:
    qp = detail.get("quantization_parameters") or {}
    scales = qp.get("scales")
    if scales is None or len(scales) == 0:
        scale, zp = detail.get("quantization", (0.0, 0))
        if not scale:
            return None
        return QuantParams((float(scale),), (int(zp),), None)
    zps = qp.get("zero_points")
    zps = [0] * len(scales) if zps is None or len(zps) == 0 else zps
    axis = int(qp.get("quantized_dimension", 0)) if len(scales) > 1 else None
    return QuantParams(tuple(float(s) for s in scales), tuple(int(z) for z in zps), axis)


def _spec(detail: dict[str, Any], name: str) -> TensorSpec:
    sig = detail.get("shape_signature")
    dims = sig if sig is not None and len(sig) else detail["shape"]
    shape = tuple(None if int(d) < 0 else int(d) for d in dims)
    return TensorSpec(name, shape, np.dtype(detail["dtype"]).name, _quant(detail))


class _Instance:
    """One interpreter and the input shapes it is currently allocated for."""

    __slots__ = ("interp", "shapes")

    def __init__(self, interp: Any, shapes: list[tuple[int, ...]]) -> None:
        self.interp = interp
        self.shapes = shapes


class _Pool:
    """Instances handed out one caller at a time; grows on demand up to ``limit``."""

    def __init__(self, first: _Instance, make: Callable[[], _Instance], limit: int) -> None:
        self._free = [first]
        self._make = make
        self._limit = max(1, limit)
        self._count = 1
        self._cond = threading.Condition(threading.Lock())

    @property
    def size(self) -> int:
        return self._count

    @contextlib.contextmanager
    def instance(self) -> Iterator[_Instance]:
        cond = self._cond
        with cond:
            while not self._free and self._count >= self._limit:
                cond.wait()
            inst = self._free.pop() if self._free else None
            if inst is None:
                self._count += 1
        if inst is None:
            try:
                inst = self._make()
            except BaseException:
                with cond:
                    self._count -= 1
                    cond.notify()
                raise
        try:
            yield inst
        finally:
            with cond:
                self._free.append(inst)
                cond.notify()


class TFLiteRunner:
    """Runs a ``.tflite`` model; XNNPACK by default, or an external delegate library."""

    format = "tflite"
    ties = "away"  # TFLite's QUANTIZE rounds half away from zero

    def __init__(self, model_bytes: bytes, source: str, options: LoadOptions) -> None:
        mod, self.backend = _interpreter_module()
        self._mod = mod
        self._bytes = model_bytes
        self._source = source
        self.threads = options.threads
        self.delegate = options.delegate or delegates.DEFAULT
        self._options = options
        entry = delegates.DELEGATES.get(self.delegate)
        external = entry is None or entry.external
        limit = options.max_instances or DEFAULT_MAX_INSTANCES
        self._delegate_objects: list[Any] = []
        first = self._new_instance()
        details = first.interp.get_input_details(), first.interp.get_output_details()
        in_names, out_names = _signature_names(first.interp)
        self.inputs = [_spec(d, in_names.get(d["index"], d["name"])) for d in details[0]]
        self.outputs = [_spec(d, out_names.get(d["index"], d["name"])) for d in details[1]]
        self._in_idx = [d["index"] for d in details[0]]
        self._out_idx = [d["index"] for d in details[1]]
        # One device context per external delegate: never more than one interpreter.
        self._pool = _Pool(first, self._new_instance, 1 if external else limit)

    def _kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"model_content": self._bytes, "num_threads": self.threads}
        if self.delegate == "none":
            # Plain reference/optimized kernels, no XNNPACK (which LiteRT applies by default).
            kwargs["experimental_op_resolver_type"] = (
                self._mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            )
        elif self.delegate != "xnnpack":
            d = load_delegate(
                self._mod,
                self.delegate,
                self._options.delegate_library,
                self._options.delegate_options,
            )
            self._delegate_objects.append(d)
            kwargs["experimental_delegates"] = [d]
        return kwargs

    def _new_instance(self) -> _Instance:
        try:
            interp = self._mod.Interpreter(**self._kwargs())
            interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(
                f"{self._source}: the TFLite interpreter refused the model: {first_line(exc)}"
            ) from None
        shapes = [tuple(int(x) for x in d["shape"]) for d in interp.get_input_details()]
        return _Instance(interp, shapes)

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        with self._pool.instance() as inst:
            return self._run_on(inst, arrays)

    def _run_on(self, inst: _Instance, arrays: list[np.ndarray]) -> list[np.ndarray]:
        interp = inst.interp
        shapes = [a.shape for a in arrays]
        if shapes != inst.shapes:
            self._resize(inst, shapes)
        try:
            for idx, arr in zip(self._in_idx, arrays, strict=True):
                interp.set_tensor(idx, arr)
            interp.invoke()
            return [interp.get_tensor(idx) for idx in self._out_idx]
        except (ValueError, RuntimeError) as exc:  # a corrupt model can fail only at invoke
            raise ModelLoadError(
                f"{self._source}: the TFLite interpreter failed to run the model: {first_line(exc)}"
            ) from None

    def _resize(self, inst: _Instance, shapes: list[tuple[int, ...]]) -> None:
        """Resize every input whose shape changed, then allocate once; undo on failure."""
        interp, old = inst.interp, list(inst.shapes)
        try:
            for idx, new, cur in zip(self._in_idx, shapes, old, strict=True):
                if new != cur:
                    # Only dynamic dims differ (Model checked the rest): strict resizing is fine.
                    interp.resize_tensor_input(idx, list(new), strict=True)
            interp.allocate_tensors()
            inst.shapes = list(shapes)
        except (ValueError, RuntimeError) as exc:
            self._restore(inst, old)
            given = ", ".join(
                f"{s.name} {list(x)}" for s, x in zip(self.inputs, shapes, strict=True)
            )
            raise InputError(
                f"{self._source}: the model cannot run inputs of shapes {given}: {first_line(exc)}"
            ) from None

    def _restore(self, inst: _Instance, old: list[tuple[int, ...]]) -> None:
        try:
            for idx, shape in zip(self._in_idx, old, strict=True):
                inst.interp.resize_tensor_input(idx, list(shape), strict=False)
            inst.interp.allocate_tensors()
            inst.shapes = old
        except (ValueError, RuntimeError):  # pragma: no cover - rebuild from the bytes instead
            fresh = self._new_instance()
            inst.interp, inst.shapes = fresh.interp, fresh.shapes

    @property
    def interpreter(self) -> Any:
        """One underlying interpreter (for benchmarks against the raw loop; not thread-safe)."""
        with self._pool.instance() as inst:
            return inst.interp

    @property
    def instances(self) -> int:
        """Interpreters created so far (the pool grows when calls overlap)."""
        return self._pool.size

    def ops(self) -> list[dict[str, Any]]:
        """Op list of the primary subgraph (index, op_name) as the interpreter reports it."""
        try:
            with self._pool.instance() as inst:
                details = inst.interp._get_ops_details()  # noqa: SLF001
            return [{"index": d["index"], "op_name": d["op_name"]} for d in details]
        except Exception:
            return []

    def op_profile(
        self, arrays: list[np.ndarray], runs: int, warmup: int, progress: Progress | None
    ) -> dict[str, Any]:
        ops = self.ops()
        counts: dict[str, int] = {}
        for o in ops:
            counts[o["op_name"]] = counts.get(o["op_name"], 0) + 1
        return {
            "available": False,
            "reason": f"per-op time not exposed by the LiteRT Python API ({self.backend}: "
            "neither the Interpreter nor CompiledModel has a profiler hook); ops listed "
            "without times",
            "ops": ops,
            "op_counts": dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
            "ops_note": "as the interpreter lists them; a DELEGATE node runs the ops a delegate "
            "(XNNPACK by default) took over",
        }

    def threads_effective(self) -> str:
        return (
            str(self.threads)
            if self.threads
            else "1 (LiteRT's default when num_threads is not set)"
        )

    def info(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "delegate": self.delegate,
            "threads": self.threads,
            "interpreters": self._pool.size,
        }


def _signature_names(interp: Any) -> tuple[dict[int, str], dict[int, str]]:
    """Map tensor index -> signature name ("input" rather than "serving_default_input:0")."""
    try:
        sigs = interp._get_full_signature_list()  # noqa: SLF001 - stable in all versions
    except Exception:  # pragma: no cover - very old interpreters
        return {}, {}
    if not sigs or len(sigs) != 1:
        return {}, {}
    sig = next(iter(sigs.values()))
    ins = {idx: name for name, idx in sig.get("inputs", {}).items()}
    outs = {idx: name for name, idx in sig.get("outputs", {}).items()}
    return ins, outs


_PLUGIN_API = ("tflite_plugin_create_delegate", "tflite_plugin_destroy_delegate")


def load_delegate(mod: Any, name: str, library: str | None, options: dict[str, Any] | None) -> Any:
    """Load an external delegate: a registry name (its system library) or a caller's path.

    Args:
        mod: the interpreter module (``load_delegate``).
        name: a name from ``edgeopt_runtime.delegates`` or a library path the caller chose.
        library: for a registry name, the registered library to use (None: the first one this
            host has, else the first listed, for the message).
        options: delegate options.

    Raises:
        DelegateError: the library is missing or refused to initialise, with the fix.
    """
    entry = delegates.DELEGATES.get(name)
    if entry is not None:
        if library is not None and library not in entry.libraries:  # never a manifest's path
            raise DelegateError(f"delegate {name!r}: {library!r} is not one of its libraries")
        library = library or entry.library() or entry.libraries[0]
        hint = entry.install_hint
    else:
        library = name  # the caller's own choice of library
        hint = "check the path and that the library matches this platform"
    try:
        # dlopen first: LiteRT's Delegate leaves a half-built object (and a noisy __del__
        # traceback) behind when the library is missing or lacks the delegate entry points.
        lib = ctypes.CDLL(library)
        missing = [f for f in _PLUGIN_API if not hasattr(lib, f)]
        if missing:
            raise DelegateError(
                f"delegate library {library!r} is not a TFLite delegate (it lacks "
                f"{', '.join(missing)}); {hint}"
            )
        return mod.load_delegate(library, options or {})
    except (ValueError, OSError, RuntimeError, AttributeError) as exc:
        where = "" if os.path.sep in library else " (searched the dynamic loader path)"
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise DelegateError(
            f"delegate library {library!r} could not be loaded{where}: {detail}; {hint}, "
            "or run on the CPU with delegate='xnnpack'"
        ) from None
