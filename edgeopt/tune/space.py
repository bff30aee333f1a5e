"""What the search starts from for one (source model, target, format): the model's shape, its
layer groups and the starting recipes.

* **Transformer detection.** ONNX: ``edgeopt.recipes.graph.detect`` on the float graph (the
  exporter's, or tf2onnx's for TF sources). TFLite: the Keras model's layers (a
  ``MultiHeadAttention`` layer, or attention-shaped ``Softmax`` next to two
  ``LayerNormalization`` layers), else the float ``.tflite`` graph (a SOFTMAX fed by a
  BATCH_MATMUL of two activations, and two LayerNorm tails ``SQUARED_DIFFERENCE`` / ``RSQRT``),
  which covers SavedModel sources. A transformer gets the transformer starting points (TFLite:
  dynamic-range first, measured 2.6x at cosine 0.9999 on a Keras encoder while full int8 runs
  0.8x of float).
* **Layer groups.** ONNX: ``edgeopt.recipes.groups.onnx_groups``. TFLite: one group per source
  layer that owns weight ops (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, TRANSPOSE_CONV,
  BATCH_MATMUL with a constant operand), its keep-float pattern the layer's name scope as it
  appears in the converter's tensor names (``(^|/|;)conv2_1/``): the TFLite backend matches
  keep-float regexes against op output tensor names of the calibrated model, which come from
  the same SavedModel as the float model's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..recipes import Recipe
from ..recipes.groups import LayerGroup
from ..targets import Format, TargetProfile

_TFLITE_WEIGHT_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV",
                      "BATCH_MATMUL", "CONV_3D"}
_ATTENTION_LAYERS = {"MultiHeadAttention", "GroupedQueryAttention", "GroupQueryAttention"}
_SUFFIX = re.compile(r"_\d+$")


@dataclass(frozen=True)
class ModelShape:
    """What the search knows about the model before measuring anything."""

    transformer: bool
    evidence: str  # why (for the report)
    groups: tuple[LayerGroup, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"transformer": self.transformer, "evidence": self.evidence,
                "layer_groups": len(self.groups)}


def starting_points(profile: TargetProfile, fmt: str, shape: ModelShape) -> list[Recipe]:
    """The target's starting recipes for this model (``edgeopt.recipes.space``)."""
    from ..recipes.space import starting_points as starts

    return starts(profile, fmt, shape.transformer)


def model_shape(source: Any, fmt: str, float_path: Path) -> ModelShape:
    """Transformer detection and layer groups of ``source`` in format ``fmt``, from its float
    model in that format (``float_path``)."""
    if Format(fmt) is Format.ONNX:
        import onnx

        from ..recipes.graph import detect
        from ..recipes.groups import onnx_groups

        model = onnx.load(str(float_path), load_external_data=False)
        found = detect(model)
        evidence = (f"ONNX graph: {found.layers} attention Softmax, {found.layer_norms} "
                    f"LayerNorms, {found.weight_matmuls} weight MatMuls" if found else
                    "ONNX graph: no attention-shaped Softmax with LayerNorms")
        if found is None and source.is_tensorflow:
            keras_says = keras_transformer(source)
            if keras_says:
                return ModelShape(True, keras_says, tuple(onnx_groups(model)))
        return ModelShape(found is not None, evidence, tuple(onnx_groups(model)))
    from ..inspect.tflite_graph import read_tflite

    graph = read_tflite(float_path)
    why = keras_transformer(source) if source.format in ("keras", "h5") else None
    why = why or tflite_transformer(graph)
    return ModelShape(why is not None, why or "TFLite graph: no attention pattern",
                      tuple(tflite_groups(graph, _layer_names(source))))


# ------------------------------------------------------------------------------ detection


def keras_transformer(source: Any) -> str | None:
    """Why the Keras model is a transformer encoder (None when it is not)."""
    model = source.handle if source.format in ("keras", "h5") else None
    if model is None:
        return None
    kinds: dict[str, int] = {}
    for layer in _flat_layers(model):
        kinds[type(layer).__name__] = kinds.get(type(layer).__name__, 0) + 1
    attention = sum(n for k, n in kinds.items() if k in _ATTENTION_LAYERS)
    norms = kinds.get("LayerNormalization", 0)
    if attention:
        return (f"Keras layers: {attention} attention layer(s), {norms} LayerNormalization "
                f"layer(s)")
    return None


def _flat_layers(model: Any) -> list[Any]:
    out = []
    for layer in getattr(model, "layers", []) or []:
        out.append(layer)
        if hasattr(layer, "layers") and layer is not model:
            out += _flat_layers(layer)
    return out


def tflite_transformer(graph: Any) -> str | None:
    """Why a float TFLite graph looks like a transformer (None when it does not)."""
    producers = graph.producers()
    by_index = {op.index: op for op in graph.ops}

    def fed_by_activation_matmul(op: Any, depth: int = 4) -> bool:
        frontier = [op]
        for _ in range(depth):
            nxt = []
            for o in frontier:
                for t in o.activations_in:
                    p = by_index.get(producers.get(t.index, -1))
                    if p is None:
                        continue
                    if p.name == "BATCH_MATMUL" and len(p.activations_in) == 2:
                        return True
                    nxt.append(p)
            frontier = nxt
        return False

    attention = sum(1 for op in graph.ops if op.name == "SOFTMAX" and fed_by_activation_matmul(op))
    norms = min(sum(op.name == "SQUARED_DIFFERENCE" for op in graph.ops),
                sum(op.name == "RSQRT" for op in graph.ops))
    if attention and norms >= 2:
        return (f"TFLite graph: {attention} attention SOFTMAX fed by activation BATCH_MATMULs, "
                f"{norms} LayerNorm tails")
    return None


# ------------------------------------------------------------------------------ TFLite groups


def _layer_names(source: Any) -> list[str]:
    if source.format not in ("keras", "h5"):
        return []
    from ..layers import keras_layer_names

    return keras_layer_names(source.handle)


def tflite_groups(graph: Any, layer_names: list[str]) -> list[LayerGroup]:
    """One group per source layer owning weight ops (see the module docstring)."""
    names = set(layer_names)
    last = max(1, len(graph.ops) - 1)
    groups: dict[str, tuple[str, float]] = {}  # name -> (scope pattern, position)
    for op in graph.ops:
        if op.name not in _TFLITE_WEIGHT_OPS or not any(t.is_constant for t in op.inputs):
            continue
        if op.name == "BATCH_MATMUL" and len(op.activations_in) > 1:
            continue
        tensor = op.outputs[0].name if op.outputs else ""
        scope = _scope(tensor, names)
        if scope is None:
            name, pattern = tensor, f"^{re.escape(tensor)}$"
        else:
            name = _SUFFIX.sub("", scope) if _SUFFIX.sub("", scope) in names else scope
            pattern = f"(^|/|;){re.escape(scope)}/"
        groups[name] = (pattern, op.index / last)  # the layer's last weight op sets position
    return [LayerGroup(n, (p,), pos) for n, (p, pos) in groups.items()]


def _scope(tensor: str, names: set[str]) -> str | None:
    """The innermost path component of a converter tensor name that names a source layer
    (exactly or with Keras 3's ``_N`` suffix): the layer's name scope as written."""
    first = tensor.split(";")[0].split(":")[0]
    for part in reversed(first.split("/")[:-1]):
        if part in names or _SUFFIX.sub("", part) in names:
            return part
    return None
