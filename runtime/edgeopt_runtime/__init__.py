"""edgeopt_runtime: load, run and profile int8 / float TFLite and ONNX models on device.

Never imports tensorflow, keras or onnx (checked by a test in a subprocess).
"""

from __future__ import annotations

from .errors import (
    DelegateError,
    EdgeOptError,
    InputError,
    MissingDependencyError,
    ModelLoadError,
)
from .model import Model, Outputs, load
from .profile import ProfileResult, profile
from .spec import QuantParams, TensorSpec, dequantize, quantize

__version__ = "0.1.0"

__all__ = [
    "DelegateError",
    "EdgeOptError",
    "InputError",
    "MissingDependencyError",
    "Model",
    "ModelLoadError",
    "Outputs",
    "ProfileResult",
    "QuantParams",
    "TensorSpec",
    "dequantize",
    "load",
    "profile",
    "quantize",
    "__version__",
]
