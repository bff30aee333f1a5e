"""ONNX sources: external data, strings and weights checked; old exporters' quirks cleaned.

External-data references must stay inside the model's folder and are checked before any byte
is read; names must be UTF-8; NaN weights are refused.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeopt_runtime.errors import ModelLoadError
from edgeopt_runtime.manifest import sha256_file
from edgeopt_runtime.spec import TensorSpec

from .checks import check_regular_file, first_line
from .registry import ModelSource, register_loader


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
    check_regular_file(p)
    from ..backends._frameworks import import_onnx

    onnx = import_onnx()
    try:
        # External data is read only after every reference has been checked (below).
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # DecodeError, OSError, ValueError
        raise ModelLoadError(f"{p}: not a readable ONNX model: {first_line(exc)}") from None
    check_onnx_strings(p, model)
    load_onnx_external_data(p, model)
    if not model.graph.node or not model.graph.output:
        raise ModelLoadError(f"{p}: not an ONNX model (no graph nodes or outputs)")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx.checker.ValidationError and friends
        raise ModelLoadError(f"{p}: invalid ONNX model: {first_line(exc)}") from None
    _check_onnx_finite(p, model)
    model, notes = clean_onnx(model)
    inputs = _onnx_specs(model.graph.input)
    if not inputs:
        raise ModelLoadError(f"{p}: ONNX graph has no inputs (every input is an initializer)")
    outputs = _onnx_specs(model.graph.output)
    return ModelSource("onnx", p, inputs, outputs, sha256_file(p), handle=model, notes=tuple(notes))


def onnx_tensors(model: Any) -> Iterator[Any]:
    """Every ``TensorProto`` of an ONNX model: initializers (dense and sparse), tensor
    attributes, in the main graph, every subgraph (If / Loop / Scan bodies), the model's
    functions and its training graphs."""
    graphs = [model.graph, *model.functions]
    for info in model.training_info:
        graphs += [info.initialization, info.algorithm]
    while graphs:
        g = graphs.pop()
        for sparse in getattr(g, "sparse_initializer", ()):
            yield from (sparse.values, sparse.indices)
        yield from getattr(g, "initializer", ())  # FunctionProto has no initializers
        for node in g.node:
            for a in node.attribute:
                if a.HasField("t"):
                    yield a.t
                yield from a.tensors
                for sparse in [a.sparse_tensor, *a.sparse_tensors]:
                    yield from (sparse.values, sparse.indices)
                if a.HasField("g"):
                    graphs.append(a.g)
                graphs.extend(a.graphs)


def load_onnx_external_data(p: Path, model: Any) -> None:
    """Check every external-data reference of ``model``, then read the data into it.

    A reference must name a regular file inside the model's folder: absolute paths, ``..``
    and symbolic links resolving outside are refused before a byte is read (they would copy
    any file on the machine into the converted model), as are offsets / lengths beyond the
    file's end.

    Raises:
        ModelLoadError: naming the tensor and the reference.
    """
    from onnx import TensorProto

    base = p.parent.resolve()
    for t in onnx_tensors(model):
        if t.data_location != TensorProto.EXTERNAL and not len(t.external_data):
            continue
        path, offset, length = _external_ref(p, base, t)
        with open(path, "rb") as f:
            f.seek(offset)
            t.raw_data = f.read(-1 if length is None else length)
        del t.external_data[:]
        t.data_location = TensorProto.DEFAULT


def _external_ref(p: Path, base: Path, t: Any) -> tuple[Path, int, int | None]:
    """(file, offset, length) of one tensor's external data, checked."""
    info = {e.key: e.value for e in t.external_data}
    loc = info.get("location", "")
    what = f"{p}: tensor {t.name!r} keeps its data in {loc!r}"
    parts = re.split(r"[\\/]", loc)
    if not loc or os.path.isabs(loc) or loc[0] in "/\\" or ":" in parts[0] or ".." in parts:
        raise ModelLoadError(f"{what}: external data must be a relative path inside the model's "
                             "folder; refused")
    try:
        path = (base / loc).resolve(strict=True)
    except (OSError, RuntimeError):
        raise ModelLoadError(f"{what}: no such file next to the model") from None
    if not path.is_relative_to(base):
        raise ModelLoadError(f"{what}, a symbolic link to {path} outside the model's folder; "
                             "refused")
    if not stat.S_ISREG(path.stat().st_mode):
        raise ModelLoadError(f"{what}: not a regular file")
    size = path.stat().st_size
    try:
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        raise ModelLoadError(f"{what}: offset / length are not integers") from None
    if offset < 0 or offset > size or (length is not None and not 0 <= length <= size - offset):
        raise ModelLoadError(f"{what}: offset {offset} / length {length} lie outside the "
                             f"{size}-byte file (truncated download?)")
    return path, offset, length


def check_onnx_strings(p: Path, model: Any) -> None:
    """Refuse names and strings that are not valid UTF-8 (protobuf hands them over as bytes,
    which then break every consumer down to the JSON report)."""
    stack: list[tuple[Any, str]] = [(model, "model")]
    while stack:
        msg, where = stack.pop()
        if msg.DESCRIPTOR.full_name == "onnx.TensorProto":  # skip the (large) data fields
            fields = [("name", msg.name), ("doc_string", msg.doc_string)]
            fields += [("external_data", e.key + e.value) for e in msg.external_data]
            bad = next((n for n, v in fields if isinstance(v, bytes)), None)
            if bad is not None:
                raise ModelLoadError(f"{p}: {where}.{bad} is not valid UTF-8; the file is corrupt")
            continue
        for fd, value in msg.ListFields():
            values = value if _repeated(fd) else [value]
            if fd.type == fd.TYPE_STRING and any(isinstance(v, bytes) for v in values):
                raise ModelLoadError(
                    f"{p}: {where}.{fd.name} is not valid UTF-8; the file is corrupt"
                )
            if fd.type == fd.TYPE_MESSAGE:
                stack.extend((v, f"{where}.{fd.name}") for v in values)


def _repeated(fd: Any) -> bool:
    flag = getattr(fd, "is_repeated", None)
    return bool(flag) if flag is not None else fd.label == fd.LABEL_REPEATED


def _check_onnx_finite(p: Path, model: Any) -> None:
    """Refuse NaN weights (a bit flip in a float can make one; quantization then fails with an
    obscure scale error)."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    floats = (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16)
    for t in onnx_tensors(model):
        if t.data_type in floats:
            try:
                values = numpy_helper.to_array(t)
            except Exception as exc:  # noqa: BLE001 - size / type mismatch: a corrupt tensor
                raise ModelLoadError(
                    f"{p}: tensor {t.name!r} cannot be read: {first_line(exc)}"
                ) from None
            if np.isnan(values).any():
                raise ModelLoadError(
                    f"{p}: tensor {t.name!r} holds NaN values; the model file is corrupt"
                )


register_loader("onnx", lambda p: p.suffix.lower() == ".onnx", _load_onnx)
