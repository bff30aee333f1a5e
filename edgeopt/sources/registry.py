"""``ModelSource`` and the loader registry: ``load_source(path)`` asks each registered loader.

Loaders register by name (a duplicate name is an error), in the order the per-format modules
of this package are imported; dispatch is on the path (extension or folder content), and each
loader imports its framework only inside itself, so importing the package stays cheap.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeopt_runtime.errors import ModelLoadError
from edgeopt_runtime.spec import TensorSpec

SOURCE_FORMATS = ("keras", "h5", "savedmodel", "onnx")


@dataclass(frozen=True)
class ModelSource:
    """A loaded float source model and its IO signature.

    ``inputs`` / ``outputs`` mark dynamic dimensions with ``None``. ``handle`` is the loaded
    framework object (``keras.Model``, the SavedModel's signature function, or the cleaned
    ``onnx.ModelProto``); backends use it instead of reading the file again.
    """

    format: str
    path: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    sha256: str
    handle: Any = field(default=None, repr=False, compare=False)
    signature_key: str | None = None  # SavedModel only
    notes: tuple[str, ...] = ()

    @property
    def is_tensorflow(self) -> bool:
        """True for Keras / SavedModel sources (they go through the TF converters)."""
        return self.format != "onnx"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (the ``source`` block of manifests and reports)."""
        return {
            "path": str(self.path),
            "format": self.format,
            "sha256": self.sha256,
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
            "signature": self.signature_key,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Loader:
    """A registered source loader: a cheap path test and the (heavy) load function."""

    name: str
    accepts: Callable[[Path], bool]
    load: Callable[[Path, bool], ModelSource]


_LOADERS: dict[str, Loader] = {}


def register_loader(
    name: str, accepts: Callable[[Path], bool], load: Callable[[Path, bool], ModelSource]
) -> None:
    """Register a source loader under ``name``.

    Raises:
        ValueError: a loader of that name is already registered (a programming error).
    """
    if name in _LOADERS:
        raise ValueError(f"source loader {name!r} is already registered")
    _LOADERS[name] = Loader(name, accepts, load)


def loader_names() -> list[str]:
    return list(_LOADERS)


def load_source(path: str | os.PathLike[str], *, trust_model: bool = False) -> ModelSource:
    """Load a float model for conversion.

    Args:
        path: a ``.keras`` / ``.h5`` file, a SavedModel directory or an ``.onnx`` file.
        trust_model: allow Keras to deserialize Python code stored in the file (``Lambda``
            layers). Only for files you trust: it can run arbitrary code.

    Returns:
        The source with its format, IO signature and sha256.

    Raises:
        ModelLoadError: missing, unreadable, corrupt or unsupported model (one line).
    """
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"{p}: no such file or directory")
    for loader in _LOADERS.values():
        if loader.accepts(p):
            return loader.load(p, trust_model)
    raise ModelLoadError(_unsupported_message(p))


def _unsupported_message(p: Path) -> str:
    expected = "expected a .keras or .h5 file, a SavedModel directory or an .onnx file"
    if p.is_dir():
        return f"{p}: directory has no saved_model.pb; {expected}"
    hints = {
        ".tflite": "it is already a TFLite model; pass the float model it was made from",
        ".pt": "export PyTorch models with torch.onnx.export and pass the .onnx file",
        ".pth": "export PyTorch models with torch.onnx.export and pass the .onnx file",
        ".pb": "pass the SavedModel directory that contains saved_model.pb",
        **dict.fromkeys(
            (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z"),
            "archives are not read; unpack it and pass the model inside",
        ),
    }
    hint = hints.get(p.suffix.lower())
    return f"{p}: unsupported model format {p.suffix or '(no extension)'!r}; " + (
        f"{hint}" if hint else expected
    )


def np_dtype_name(dtype: Any) -> str:
    import numpy as np

    as_np = getattr(dtype, "as_numpy_dtype", None)
    return np.dtype(as_np if as_np is not None else dtype).name
