"""Whether this host can run an accelerator: the one place the converter asks the runtime.

TFLite delegates: ``edgeopt_runtime``'s own answer (today ``edgetpu_available()`` and
``gpu_delegate_available()``; when the runtime's delegate table ``edgeopt_runtime.delegates``
lands, ``delegates.get(name).available()`` replaces both here and nowhere else). ONNX execution
providers: ONNX Runtime's ``get_available_providers()``.
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
    from edgeopt_runtime import model

    checks = {"edgetpu": model.edgetpu_available, "gpu": model.gpu_delegate_available}
    check = checks.get(name)
    return True if check is None else check()
