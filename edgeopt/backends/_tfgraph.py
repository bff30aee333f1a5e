"""TF sources as something the converters take: a SavedModel folder or a ``tf.function``.

Both converters need named inputs and outputs that match the ``ModelSource`` signature, and
static-shape targets need the shapes baked in. Keras models are exported through
``keras.export.ExportArchive`` (a plain ``tf.Module`` does not track Keras 3 variables, and the
TFLite converter then fails on READ_VARIABLE), SavedModels are used as they are or re-wrapped
when the shapes must change.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from ..sources import ModelSource
from . import Shapes
from ._frameworks import import_keras, import_tf, stdout_to_stderr

SIGNATURE = "serving_default"


def _specs(tf: Any, source: ModelSource, shapes: Shapes) -> list[Any]:
    return [
        tf.TensorSpec(list(shapes[s.name]), tf.as_dtype(s.dtype), name=s.name)
        for s in source.inputs
    ]


def _shapes_key(shapes: Shapes) -> str:
    text = repr(sorted(shapes.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _keras_call(model: Any, names: list[str]) -> Any:
    """A function of positional input tensors returning ``{output_name: tensor}``."""
    tf = import_tf()

    def call(*xs: Any) -> dict[str, Any]:
        result = model(xs[0] if len(xs) == 1 else list(xs), training=False)
        flat = tf.nest.flatten(result)
        return dict(zip(names, flat, strict=True))

    return call


def _signature_call(source: ModelSource) -> Any:
    _loaded, fn = source.handle
    names = [s.name for s in source.inputs]

    def call(*xs: Any) -> dict[str, Any]:
        return fn(**dict(zip(names, xs, strict=True)))

    return call


def tf_function(source: ModelSource, shapes: Shapes) -> tuple[Any, list[Any]]:
    """A ``tf.function`` with ``input_signature`` for tf2onnx, and that signature."""
    tf = import_tf()
    spec = _specs(tf, source, shapes)
    if source.format == "savedmodel":
        call = _signature_call(source)
    else:
        call = _keras_call(source.handle, [s.name for s in source.outputs])
    return tf.function(call, input_signature=spec, autograph=False), spec


def saved_model(source: ModelSource, shapes: Shapes, workdir: Path) -> Path:
    """A SavedModel folder whose ``serving_default`` has the source's names and ``shapes``.

    Cached in ``workdir`` per shape set, so several targets and precisions share one export.
    """
    natural = {s.name: tuple(s.shape) for s in source.inputs}
    if source.format == "savedmodel" and shapes == natural and source.signature_key == SIGNATURE:
        return source.path
    out = workdir / f"savedmodel_{_shapes_key(shapes)}"
    if out.is_dir():
        return out
    tf = import_tf()
    spec = _specs(tf, source, shapes)
    tmp = workdir / f".{out.name}.partial"
    with stdout_to_stderr():
        if source.format == "savedmodel":
            module = tf.Module()
            module.inner = source.handle[0]  # keeps the variables tracked
            module.f = tf.function(_signature_call(source), input_signature=spec, autograph=False)
            tf.saved_model.save(module, str(tmp), signatures={SIGNATURE: module.f})
        else:
            keras = import_keras()
            model = source.handle
            archive = keras.export.ExportArchive()
            archive.track(model)
            archive.add_endpoint(
                name=SIGNATURE,
                fn=_keras_call(model, [s.name for s in source.outputs]),
                input_signature=spec,
            )
            archive.write_out(str(tmp))
    tmp.rename(out)
    return out
