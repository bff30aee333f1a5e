"""Source models: read a float Keras / SavedModel / ONNX model into one ``ModelSource``.

Loaders register by name in a registry (a duplicate name is an error). Dispatch is on the path
(extension or folder content), and each loader imports its framework only inside itself, so
importing this module stays cheap.
"""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeopt_runtime.errors import ModelLoadError
from edgeopt_runtime.manifest import sha256_file
from edgeopt_runtime.spec import TensorSpec

SOURCE_FORMATS = ("keras", "h5", "savedmodel", "onnx")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


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
    }
    hint = hints.get(p.suffix.lower())
    return f"{p}: unsupported model format {p.suffix or '(no extension)'!r}; " + (
        f"{hint}" if hint else expected
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def sha256_tree(directory: Path) -> str:
    """Hash of a directory: every file's relative path and content hash, in sorted order."""
    h = hashlib.sha256()
    for f in sorted(p for p in directory.rglob("*") if p.is_file()):
        h.update(f.relative_to(directory).as_posix().encode())
        h.update(b"\0" + sha256_file(f).encode() + b"\n")
    return h.hexdigest()


# ----------------------------------------------------------------------------------- Keras


def _keras_error(p: Path, exc: BaseException) -> ModelLoadError:
    """Translate Keras deserialization failures into one actionable line."""
    text = str(exc)
    if "Lambda" in text and "safe_mode" in text:
        return ModelLoadError(
            f"{p}: the model contains a Lambda layer with Python code, refused in safe mode; "
            "if you trust this file, pass --trust-model (trust_model=True)"
        )
    missing = re.search(r"Could not locate class '([^']+)'", text) or re.search(
        r"'registered_name': '([^']+)'", text
    )
    if missing or "could not be deserialized" in text:
        name = missing.group(1) if missing else "a custom object"
        return ModelLoadError(
            f"{p}: cannot deserialize custom layer/object {name!r}; re-save the model with only "
            "built-in layers, or export it as a SavedModel (model.export(dir)) and pass that"
        )
    return ModelLoadError(f"{p}: cannot load Keras model: {_first_line(exc)}")


def _keras_specs(p: Path, model: Any) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    try:
        ins, outs = list(model.inputs), list(model.outputs)
    except (AttributeError, ValueError):
        ins, outs = [], []
    if not ins or not outs:
        raise ModelLoadError(
            f"{p}: the Keras model has no defined inputs/outputs (a subclassed or unbuilt "
            "model); build it with keras.Input(...) or export a SavedModel instead"
        )
    out_names = _unique(list(getattr(model, "output_names", None) or []), len(outs), "output")
    inputs = tuple(
        TensorSpec(t.name, tuple(t.shape), _np_dtype_name(t.dtype)) for t in ins
    )
    outputs = tuple(
        TensorSpec(n, tuple(t.shape), _np_dtype_name(t.dtype))
        for n, t in zip(out_names, outs, strict=True)
    )
    return inputs, outputs


def _unique(names: list[str], count: int, prefix: str) -> list[str]:
    """``count`` distinct, non-empty names (Keras can repeat a layer name for multi outputs)."""
    if len(names) != count:
        names = [f"{prefix}_{i}" for i in range(count)]
    seen: dict[str, int] = {}
    out = []
    for n in names:
        n = n or prefix
        if n in seen:
            seen[n] += 1
            n = f"{n}_{seen[n]}"
        seen.setdefault(n, 0)
        out.append(n)
    return out


def _np_dtype_name(dtype: Any) -> str:
    import numpy as np

    as_np = getattr(dtype, "as_numpy_dtype", None)
    return np.dtype(as_np if as_np is not None else dtype).name


def _load_keras(p: Path, trust_model: bool) -> ModelSource:
    fmt = "h5" if p.suffix.lower() in (".h5", ".hdf5") else "keras"
    if p.is_dir():
        raise ModelLoadError(f"{p}: is a directory, expected a {p.suffix} file")
    if fmt == "keras" and not zipfile.is_zipfile(p):
        raise ModelLoadError(f"{p}: not a .keras archive (expected a zip file saved by model.save)")
    if fmt == "h5":
        with open(p, "rb") as f:
            if f.read(8) != _HDF5_MAGIC:
                raise ModelLoadError(f"{p}: not an HDF5 file (expected a Keras .h5 model)")
    from .backends._frameworks import import_keras, stdout_to_stderr

    keras = import_keras()
    try:
        with stdout_to_stderr():
            model = keras.models.load_model(p, safe_mode=not trust_model, compile=False)
    except Exception as exc:  # Keras raises ValueError/TypeError/OSError/KeyError alike
        raise _keras_error(p, exc) from None
    inputs, outputs = _keras_specs(p, model)
    return ModelSource(fmt, p, inputs, outputs, sha256_file(p), handle=model)


register_loader(
    "keras",
    lambda p: p.suffix.lower() in (".keras", ".h5", ".hdf5") and not p.is_dir(),
    _load_keras,
)


# ------------------------------------------------------------------------------- SavedModel

SERVING_KEY = "serving_default"


def _load_savedmodel(p: Path, trust_model: bool) -> ModelSource:
    from .backends._frameworks import import_tf, stdout_to_stderr

    tf = import_tf()
    try:
        with stdout_to_stderr():
            loaded = tf.saved_model.load(str(p))
    except Exception as exc:  # tf raises OSError / ValueError / various tf.errors
        raise ModelLoadError(f"{p}: cannot load SavedModel: {_first_line(exc)}") from None
    sigs = dict(getattr(loaded, "signatures", {}) or {})
    if SERVING_KEY in sigs:
        key = SERVING_KEY
    elif len(sigs) == 1:
        key = next(iter(sigs))
    else:
        have = ", ".join(sorted(sigs)) or "none"
        raise ModelLoadError(
            f"{p}: SavedModel has no {SERVING_KEY!r} signature (has: {have}); re-export it with "
            "signatures={'serving_default': fn}"
        )
    fn = sigs[key]
    in_sig = fn.structured_input_signature[1]
    out_sig = fn.structured_outputs
    if not isinstance(out_sig, dict) or not in_sig:
        raise ModelLoadError(f"{p}: signature {key!r} must take and return named tensors")
    inputs = tuple(_tf_spec(n, s) for n, s in sorted(in_sig.items()))
    outputs = tuple(_tf_spec(n, s) for n, s in sorted(out_sig.items()))
    # Keep the loaded object alive alongside its signature function.
    return ModelSource(
        "savedmodel", p, inputs, outputs, sha256_tree(p), handle=(loaded, fn), signature_key=key
    )


def _tf_spec(name: str, spec: Any) -> TensorSpec:
    shape = tuple(None if d is None else int(d) for d in spec.shape.as_list())
    return TensorSpec(name, shape, _np_dtype_name(spec.dtype))


register_loader("savedmodel", lambda p: (p / "saved_model.pb").is_file(), _load_savedmodel)


# ------------------------------------------------------------------------------------ ONNX


def _onnx_specs(values: Any) -> tuple[TensorSpec, ...]:
    import onnx

    specs = []
    for v in values:
        tt = v.type.tensor_type
        dims = tuple(
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in tt.shape.dim
        )
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name if tt.elem_type else "?"
        specs.append(TensorSpec(v.name, dims, dtype))
    return tuple(specs)


def clean_onnx(model: Any) -> tuple[Any, list[str]]:
    """Drop initializers that old exporters (opset <= 9) also list as graph inputs.

    ONNX Runtime treats those as overridable inputs, which both confuses the IO signature and
    stops the quantizer from seeing the weights as constants.

    Returns:
        The cleaned model (the same object, modified) and a list of notes.
    """
    inits = {i.name for i in model.graph.initializer}
    fake = [i for i in model.graph.input if i.name in inits]
    if not fake:
        return model, []
    keep = [i for i in model.graph.input if i.name not in inits]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    # IR < 4 requires every initializer to be a graph input; IR 4 lifted that rule.
    model.ir_version = max(model.ir_version, 4)
    return model, [f"removed {len(fake)} initializer(s) also listed as graph inputs (old opset)"]


def _load_onnx(p: Path, trust_model: bool) -> ModelSource:
    if p.is_dir():
        raise ModelLoadError(f"{p}: is a directory, expected an .onnx file")
    from .backends._frameworks import import_onnx

    onnx = import_onnx()
    try:
        model = onnx.load(str(p))
    except Exception as exc:  # DecodeError, OSError, ValueError from external data
        raise ModelLoadError(f"{p}: not a readable ONNX model: {_first_line(exc)}") from None
    if not model.graph.node or not model.graph.output:
        raise ModelLoadError(f"{p}: not an ONNX model (no graph nodes or outputs)")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx.checker.ValidationError and friends
        raise ModelLoadError(f"{p}: invalid ONNX model: {_first_line(exc)}") from None
    model, notes = clean_onnx(model)
    inputs = _onnx_specs(model.graph.input)
    if not inputs:
        raise ModelLoadError(f"{p}: ONNX graph has no inputs (every input is an initializer)")
    outputs = _onnx_specs(model.graph.output)
    return ModelSource("onnx", p, inputs, outputs, sha256_file(p), handle=model, notes=tuple(notes))


register_loader("onnx", lambda p: p.suffix.lower() == ".onnx", _load_onnx)
