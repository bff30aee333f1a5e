"""Whether this host can run an accelerator: the one place the converter asks the runtime.

TFLite delegates: the runtime's delegate registry (``edgeopt_runtime.delegates``: registered
names, their system libraries, found without loading them). ONNX execution providers: ONNX
Runtime's ``get_available_providers()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .registry import Accelerator


def available(acc: Accelerator) -> bool:
    """True when ``edgeopt_runtime`` on this host can run models on ``acc``."""
    if acc.format == "onnx":
        import onnxruntime as ort

        return acc.name in ort.get_available_providers()
    return delegate_available(acc.name)


def delegate_available(name: str) -> bool:
    """A TFLite delegate's library is present (built-in delegates always are)."""
    from edgeopt_runtime import delegates

    return delegates.get(name).available()


def off_host_device(name: str) -> bool:
    """The runtime's word on a TFLite delegate: it runs on a device other than the host CPU
    (so host timings are not the device's, and ``--strict`` checks placement on it)."""
    from edgeopt_runtime import delegates

    return delegates.get(name).accelerator
