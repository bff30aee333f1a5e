"""Binarisation (1-bit weights and activations): evaluated, not built — the measured reason.

Measured on this project's stack (TF 2.21, Keras 3.15, ai-edge-litert 2.3, numpy 2.4; Python
3.11, x86-64), each in a throwaway virtual environment:

* ``larq 0.14.0`` requires ``numpy < 2.0`` (its metadata); installing it downgrades numpy to
  1.26, below what this project's runtime stack is built and tested with.
* With TF 2.21's default Keras 3, ``import larq`` fails:
  ``AttributeError: module 'keras._tf_keras.keras.layers' has no attribute
  'LocallyConnected1D'`` — larq is written for tf-keras (Keras 2).
* With ``tf-keras 2.21`` and ``TF_USE_LEGACY_KERAS=1`` larq imports, a ``QuantConv2D`` network
  builds and ``larq-compute-engine 0.16.0`` converts it (a 6 KB ``.tflite``) that LCE's own
  interpreter runs on x86. But the model is a tf-keras model (a Keras 3 ``.keras`` file cannot
  be trained by larq; ``TF_USE_LEGACY_KERAS`` switches the whole process to Keras 2), and the
  file holds custom ops ``LceQuantize`` / ``LceBconv2d``: ai-edge-litert — edgeopt_runtime's
  engine — refuses it (``RuntimeError: Encountered unresolved custom op: LceQuantize``), so
  would XNNPACK, the Edge TPU compiler (built-in int8 ops only) and the GPU delegate.

So no edgeopt target can run a binarised model and the runtime cannot load one; running LCE's
interpreter would mean a second inference engine with its own native library on the device.
"""

from __future__ import annotations

from typing import Any

from edgeopt_runtime.errors import EdgeOptError

REASON = (
    "binarisation is not available: larq 0.14 needs numpy<2 and tf-keras (import fails under "
    "TF 2.21's Keras 3), and larq-compute-engine 0.16 models use custom ops (LceBconv2d) that "
    "ai-edge-litert, XNNPACK, the Edge TPU and the GPU delegate cannot run (measured; see "
    "docs/compression.md)"
)


class BinarizeUnavailable(EdgeOptError):
    """``--binarize``: refused with the measured reason."""


def status() -> dict[str, Any]:
    """The evaluation result, for reports."""
    return {
        "available": False,
        "reason": REASON,
        "evaluated": {"larq": "0.14.0", "larq-compute-engine": "0.16.0",
                      "tensorflow": "2.21.0", "keras": "3.15.1"},
        "measured": [
            "larq 0.14.0 requires numpy<2.0",
            "import larq with Keras 3: AttributeError: module 'keras._tf_keras.keras.layers' "
            "has no attribute 'LocallyConnected1D'",
            "with tf-keras 2.21 + TF_USE_LEGACY_KERAS=1: larq model builds, LCE converts "
            "(6080 bytes), LCE interpreter runs it on x86",
            "ai-edge-litert on the LCE model: RuntimeError: Encountered unresolved custom op: "
            "LceQuantize",
        ],
    }
