"""LiteRT / TFLite runner: ai_edge_litert, else tflite_runtime, else tensorflow.lite."""

from __future__ import annotations

import ctypes
import importlib
import os
from typing import Any

import numpy as np

from ..errors import DelegateError, MissingDependencyError, ModelLoadError
from ..spec import QuantParams, TensorSpec

# Known delegate names -> the shared library the external-delegate API loads.
DELEGATE_LIBRARIES = {
    "edgetpu": "libedgetpu.so.1",
    "gpu": "libtensorflowlite_gpu_delegate.so",
}
_DELEGATE_HINTS = {
    "edgetpu": "install the Edge TPU runtime (Debian/Ubuntu: `apt install libedgetpu1-std` from "
    "Coral's repository) and plug in the device",
    "gpu": "build or install the TFLite GPU delegate library for this platform",
}

# (module, how the version is found); tensorflow is the last resort: it is huge to import.
_INTERPRETER_MODULES = (
    ("ai_edge_litert.interpreter", "ai_edge_litert"),
    ("tflite_runtime.interpreter", "tflite_runtime"),
    ("tensorflow.lite", "tensorflow"),
)


def _interpreter_module() -> tuple[Any, str]:
    """Return (module with Interpreter/load_delegate, "name version") of the first that imports."""
    for mod_name, pkg in _INTERPRETER_MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:
            continue
        version = getattr(importlib.import_module(pkg), "__version__", "unknown")
        if pkg == "tensorflow":  # tf.lite has Interpreter and experimental.load_delegate
            mod.load_delegate = mod.experimental.load_delegate
        return mod, f"{pkg} {version}"
    raise MissingDependencyError("A TFLite interpreter", "ai-edge-litert", "to run .tflite models")


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


class TFLiteRunner:
    """Runs a ``.tflite`` model; XNNPACK by default, or an external delegate library."""

    format = "tflite"
    ties = "away"  # TFLite's QUANTIZE rounds half away from zero

    def __init__(
        self,
        model_bytes: bytes,
        source: str,
        *,
        threads: int | None = None,
        delegate: str | None = None,
        delegate_options: dict[str, Any] | None = None,
    ) -> None:
        mod, self.backend = _interpreter_module()
        self.threads = threads
        self.delegate = delegate or "xnnpack"
        kwargs: dict[str, Any] = {"model_content": model_bytes, "num_threads": threads}
        if self.delegate == "none":
            # Plain reference/optimized kernels, no XNNPACK (which LiteRT applies by default).
            kwargs["experimental_op_resolver_type"] = (
                mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            )
        elif self.delegate != "xnnpack":
            kwargs["experimental_delegates"] = [load_delegate(mod, self.delegate, delegate_options)]
        try:
            self._interp = mod.Interpreter(**kwargs)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(
                f"{source}: the TFLite interpreter refused the model: {msg}"
            ) from None
        self._source = source
        in_details = self._interp.get_input_details()
        out_details = self._interp.get_output_details()
        in_names, out_names = self._signature_names()
        self.inputs = [_spec(d, in_names.get(d["index"], d["name"])) for d in in_details]
        self.outputs = [_spec(d, out_names.get(d["index"], d["name"])) for d in out_details]
        self._in_idx = [d["index"] for d in in_details]
        self._out_idx = [d["index"] for d in out_details]
        self._cur_shapes = [tuple(int(x) for x in d["shape"]) for d in in_details]

    def _signature_names(self) -> tuple[dict[int, str], dict[int, str]]:
        """Map tensor index -> signature name ("input" rather than "serving_default_input:0")."""
        try:
            sigs = self._interp._get_full_signature_list()  # noqa: SLF001 - stable in all versions
        except Exception:  # pragma: no cover - very old interpreters
            return {}, {}
        if not sigs or len(sigs) != 1:
            return {}, {}
        sig = next(iter(sigs.values()))
        ins = {idx: name for name, idx in sig.get("inputs", {}).items()}
        outs = {idx: name for name, idx in sig.get("outputs", {}).items()}
        return ins, outs

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        interp = self._interp
        try:
            for i, (idx, arr) in enumerate(zip(self._in_idx, arrays, strict=True)):
                if arr.shape != self._cur_shapes[i]:
                    self._resize(i, arr.shape)
                interp.set_tensor(idx, arr)
            interp.invoke()
            return [interp.get_tensor(idx) for idx in self._out_idx]
        except (ValueError, RuntimeError) as exc:  # a corrupt model can fail only at invoke
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(
                f"{self._source}: the TFLite interpreter failed to run the model: {msg}"
            ) from None

    def _resize(self, i: int, shape: tuple[int, ...]) -> None:
        # Only dynamic dims differ here (Model checked the rest), so strict resizing is allowed.
        self._interp.resize_tensor_input(self._in_idx[i], list(shape), strict=True)
        self._interp.allocate_tensors()
        self._cur_shapes[i] = tuple(shape)

    def resize_batch(self, batch: int) -> bool:
        """Try to resize every input's (fixed) batch dim; True when the interpreter accepted it."""
        try:
            for i, idx in enumerate(self._in_idx):
                shape = (batch, *self._cur_shapes[i][1:])
                self._interp.resize_tensor_input(idx, list(shape), strict=False)
                self._cur_shapes[i] = shape
            self._interp.allocate_tensors()
            return True
        except (ValueError, RuntimeError):
            for i, idx in enumerate(self._in_idx):  # restore batch 1
                shape = (1, *self._cur_shapes[i][1:])
                self._interp.resize_tensor_input(idx, list(shape), strict=False)
                self._cur_shapes[i] = shape
            self._interp.allocate_tensors()
            return False

    @property
    def interpreter(self) -> Any:
        """The underlying interpreter (for benchmarks against the raw loop)."""
        return self._interp

    def ops(self) -> list[dict[str, Any]]:
        """Op list of the primary subgraph (index, op_name) as the interpreter reports it."""
        try:
            return [
                {"index": d["index"], "op_name": d["op_name"]}
                for d in self._interp._get_ops_details()  # noqa: SLF001
            ]
        except Exception:
            return []

    def info(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "delegate": self.delegate,
            "threads": self.threads,
        }


def load_delegate(mod: Any, name: str, options: dict[str, Any] | None) -> Any:
    """Load an external delegate by short name (``edgetpu``, ``gpu``) or library path.

    Raises:
        DelegateError: the library is missing or refused to initialise, with the fix.
    """
    library = DELEGATE_LIBRARIES.get(name, name)
    try:
        # dlopen first: LiteRT's Delegate leaves a half-built object (and a noisy __del__
        # traceback) behind when the library is missing.
        ctypes.CDLL(library)
        return mod.load_delegate(library, options or {})
    except (ValueError, OSError, RuntimeError) as exc:
        hint = _DELEGATE_HINTS.get(
            name, "check the path and that the library matches this platform"
        )
        where = "" if os.path.sep in library else " (searched the dynamic loader path)"
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise DelegateError(
            f"delegate library {library!r} could not be loaded{where}: {detail}; {hint}, "
            "or run on the CPU with delegate='xnnpack'"
        ) from None
