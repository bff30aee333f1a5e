"""edgeopt: convert float models to int8 TFLite / ONNX for edge targets and measure them.

Heavy frameworks (tensorflow, onnx, tf2onnx) are imported lazily inside the code that needs them;
``edgeopt.convert`` itself is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

__all__ = ["ConvertReport", "convert", "__version__"]


def __getattr__(name: str) -> Any:
    # ``edgeopt.convert`` is both the pipeline module and the function: the module is callable
    # (see edgeopt/convert.py), because importing the submodule rebinds this attribute anyway.
    if name == "convert":
        return importlib.import_module("edgeopt.convert")
    if name == "ConvertReport":
        return importlib.import_module("edgeopt.convert").ConvertReport
    raise AttributeError(f"module 'edgeopt' has no attribute {name!r}")
