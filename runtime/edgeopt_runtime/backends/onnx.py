"""ONNX Runtime runner."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import DelegateError, MissingDependencyError, ModelLoadError
from ..spec import TensorSpec

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(uint16)": "uint16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise MissingDependencyError("onnxruntime", "onnxruntime", "to run .onnx models") from None
    return onnxruntime


def _spec(arg: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in (arg.shape or ()))
    return TensorSpec(arg.name, shape, _ORT_TYPES.get(arg.type, arg.type), None)


class OnnxRunner:
    """Runs an ``.onnx`` model with ONNX Runtime on the given execution providers."""

    format = "onnx"
    ties = "even"  # ONNX QuantizeLinear rounds half to even

    def __init__(
        self,
        model_bytes: bytes,
        source: str,
        *,
        threads: int | None = None,
        providers: list[str] | None = None,
        profile_prefix: str | None = None,
    ) -> None:
        ort = _ort()
        self.backend = f"onnxruntime {ort.__version__}"
        self._source = source
        self.threads = threads
        available = ort.get_available_providers()
        providers = list(providers or ["CPUExecutionProvider"])
        missing = [p for p in providers if p not in available]
        if missing:
            raise DelegateError(
                f"execution provider(s) {', '.join(missing)} not available in this onnxruntime "
                f"build (available: {', '.join(available)})"
            )
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        if profile_prefix:
            opts.enable_profiling = True
            opts.profile_file_prefix = profile_prefix
        try:
            self._sess = ort.InferenceSession(model_bytes, sess_options=opts, providers=providers)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... classes
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(f"{source}: ONNX Runtime refused the model: {first}") from None
        self.delegate = self._sess.get_providers()[0]
        self.providers = self._sess.get_providers()
        self.inputs = [_spec(a) for a in self._sess.get_inputs()]
        self.outputs = [_spec(a) for a in self._sess.get_outputs()]
        self._in_names = [s.name for s in self.inputs]
        self._out_names = [s.name for s in self.outputs]

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        try:
            return self._sess.run(self._out_names, dict(zip(self._in_names, arrays, strict=True)))
        except Exception as exc:  # ORT raises its own Fail/InvalidArgument/... classes
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(
                f"{self._source}: ONNX Runtime failed to run the model: {first}"
            ) from None

    @property
    def session(self) -> Any:
        """The underlying ``InferenceSession`` (for benchmarks and profiling)."""
        return self._sess

    def end_profiling(self) -> str | None:
        """Stop ORT profiling and return the JSON trace path (when profiling was enabled)."""
        try:
            return self._sess.end_profiling() or None
        except Exception:
            return None

    def info(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "delegate": self.delegate,
            "providers": self.providers,
            "threads": self.threads,
        }
