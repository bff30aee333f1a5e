"""Backend runners: one small class per inference engine behind one interface.

A runner knows its model's IO (``inputs`` / ``outputs`` as ``TensorSpec``) and runs already
validated, already typed numpy arrays (``_run``). Checking and converting feeds is the job of
``edgeopt_runtime.model.Model``, so it is written once for every backend.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from ..spec import TensorSpec


class Runner(Protocol):
    """What ``Model`` needs from a backend."""

    format: str  # "tflite" | "onnx"
    backend: str  # e.g. "ai_edge_litert 2.3.0"
    delegate: str  # e.g. "xnnpack", "edgetpu", "CPUExecutionProvider"
    threads: int | None
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    ties: str  # rounding of this engine's QUANTIZE op: "away" (TFLite) or "even" (ONNX)

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Run on arrays in input order (dtype/shape already checked); outputs in output order."""
        ...

    def info(self) -> dict[str, Any]:
        """Backend facts for reports (version, delegate, threads, providers...)."""
        ...
