"""edgeopt: convert float models to int8 TFLite / ONNX for edge targets and measure them.

Heavy frameworks (tensorflow, onnx, tf2onnx) are imported lazily inside the code that needs them.
"""

from __future__ import annotations

__version__ = "0.1.0"
