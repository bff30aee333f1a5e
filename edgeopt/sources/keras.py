"""Keras sources (``.keras``, ``.h5``): checked, scanned for code, then loaded by Keras.

``.keras``: zip structure (``archive``), its HDF5 weights probed (``hdf5_probe``); ``.h5``: the
HDF5 file probed; then the layer config is scanned: Lambda layers and modules outside Keras are
refused unless ``trust_model``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from edgeopt_runtime.errors import ModelLoadError
from edgeopt_runtime.manifest import sha256_file
from edgeopt_runtime.spec import TensorSpec

from .archive import check_keras_archive, hdf5_members
from .checks import check_regular_file, first_line
from .hdf5_probe import HDF5_MAGIC, probe_hdf5
from .registry import ModelSource, np_dtype_name, register_loader


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
    return ModelLoadError(f"{p}: cannot load Keras model: {first_line(exc)}")


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
        TensorSpec(t.name, tuple(t.shape), np_dtype_name(t.dtype)) for t in ins
    )
    outputs = tuple(
        TensorSpec(n, tuple(t.shape), np_dtype_name(t.dtype))
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


def _load_keras(p: Path, trust_model: bool) -> ModelSource:
    fmt = "h5" if p.suffix.lower() in (".h5", ".hdf5") else "keras"
    if p.is_dir():
        raise ModelLoadError(f"{p}: is a directory, expected a {p.suffix} file")
    check_regular_file(p)
    digest = sha256_file(p)
    # Checked before Keras sees the file: archive structure, HDF5 data read in a bounded child
    # process, and the layer config scanned for Python code.
    if fmt == "keras":
        config = check_keras_archive(p)
        for member in hdf5_members(p):
            probe_hdf5(p, digest, member)
    else:
        with open(p, "rb") as f:
            if f.read(8) != HDF5_MAGIC:
                raise ModelLoadError(f"{p}: not an HDF5 file (expected a Keras .h5 model)")
        config = probe_hdf5(p, digest, None).get("model_config")
        if config is None:
            raise ModelLoadError(
                f"{p}: HDF5 file without a model_config attribute: it holds weights only, not "
                "a model saved with model.save(); pass the full model"
            )
    if not trust_model:
        scan_keras_config(p, config)
    from ..backends._frameworks import import_keras, stdout_to_stderr

    keras = import_keras()
    try:
        with stdout_to_stderr():
            model = keras.models.load_model(p, safe_mode=not trust_model, compile=False)
    except Exception as exc:  # Keras raises ValueError/TypeError/OSError/KeyError alike
        raise _keras_error(p, exc) from None
    inputs, outputs = _keras_specs(p, model)
    return ModelSource(fmt, p, inputs, outputs, digest, handle=model)


def scan_keras_config(p: Path, config: Any) -> None:
    """Refuse a Keras model config that would make Keras run or import Python code.

    Independent of Keras' own ``safe_mode`` (which older Keras 3 releases could be talked out
    of): any ``Lambda`` layer or serialized lambda, and any class or function from a module
    outside ``keras``, is refused. ``compile_config`` is skipped: it is not deserialized with
    ``compile=False``.

    Args:
        p: the model path (for the message).
        config: the parsed model config (``config.json``, or the ``model_config`` attribute of
            an ``.h5`` file, as JSON text or already parsed).

    Raises:
        ModelLoadError: the config holds code, naming ``--trust-model``.
    """
    if isinstance(config, (bytes, str)):
        try:
            config = json.loads(config)
        except ValueError as exc:
            raise ModelLoadError(
                f"{p}: the model config is not valid JSON ({first_line(exc)}); the file is "
                "corrupt"
            ) from None
    stack = [config]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
            continue
        if not isinstance(item, dict):
            continue
        problem = _code_in(item)
        if problem:
            raise ModelLoadError(f"{p}: {problem}")
        stack.extend(v for k, v in item.items() if k != "compile_config")


def _code_in(item: dict[str, Any]) -> str | None:
    """Why one config dict would make Keras run or import code, or None."""
    cls = item.get("class_name")
    conf = item.get("config")
    name = conf.get("name") if isinstance(conf, dict) else None
    trust = "if you trust this file, pass --trust-model (trust_model=True)"
    if cls in ("Lambda", "__lambda__") or item.get("function_type") == "lambda":
        what = f"a Lambda layer {name!r}" if cls == "Lambda" and name else "a Python lambda"
        return f"the model contains {what} with Python code, refused in safe mode; {trust}"
    module = item.get("module")
    if isinstance(module, str) and module != "keras" and not module.startswith("keras."):
        return (
            f"cannot deserialize custom layer/object {cls!r} from Python module {module!r} "
            "(outside Keras; importing it would run its code): re-save the model with built-in "
            "layers, export a SavedModel (model.export(dir)), or, if you trust this file and the "
            "module is importable, pass --trust-model"
        )
    return None


register_loader(
    "keras",
    lambda p: p.suffix.lower() in (".keras", ".h5", ".hdf5") and not p.is_dir(),
    _load_keras,
)
