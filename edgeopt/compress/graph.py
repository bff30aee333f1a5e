"""The Keras side of compression: which layers hold compressible kernels, how layers connect,
and parameter / MAC counts.

Only functional and Sequential Keras 3 models are taken (a subclassed model has no graph to
rewrite). The graph is read from ``model.get_config()`` (each layer's ``inbound_nodes`` name the
producing layers), not from Keras internals, so it is the same graph that gets serialized.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from edgeopt_runtime.errors import ModelLoadError

# Layer class -> attributes holding the kernels that pruning and clustering act on. Biases,
# normalization parameters and embeddings of position are left alone (they are few, and
# zeroing or sharing them costs accuracy for no size gain).
KERNELS: dict[str, tuple[str, ...]] = {
    "Dense": ("kernel",),
    "EinsumDense": ("kernel",),
    "Conv1D": ("kernel",),
    "Conv2D": ("kernel",),
    "Conv3D": ("kernel",),
    "Conv1DTranspose": ("kernel",),
    "Conv2DTranspose": ("kernel",),
    "DepthwiseConv1D": ("kernel",),
    "DepthwiseConv2D": ("kernel",),
    "SeparableConv1D": ("depthwise_kernel", "pointwise_kernel"),
    "SeparableConv2D": ("depthwise_kernel", "pointwise_kernel"),
    "Embedding": ("embeddings",),
}


@dataclass(frozen=True)
class Kernel:
    """One compressible weight tensor: the layer path and the variable."""

    layer: str  # layer name (nested models: "outer/inner")
    attr: str
    variable: Any
    cls: str = ""  # the layer's class name

    @property
    def key(self) -> str:
        return f"{self.layer}/{self.attr}"

    @property
    def size(self) -> int:
        return int(math.prod(self.variable.shape))

    def numpy(self) -> np.ndarray:
        return np.asarray(self.variable.numpy())


def as_functional(model: Any, where: str) -> Any:
    """A functional model computing the same as ``model`` (Sequential is rebuilt on its layers).

    Raises:
        ModelLoadError: a subclassed model (no layer graph to rewrite).
    """
    import keras

    if isinstance(model, keras.Sequential):
        inputs = model.inputs
        if not inputs:
            raise ModelLoadError(f"{where}: the Sequential model was never built; save it after "
                                 "calling it once or give it an Input")
        x = inputs[0]
        for layer in model.layers:
            x = layer(x)
        return keras.Model(inputs, x, name=model.name)
    if type(model).__name__ != "Functional" and not _is_functional(model):
        raise ModelLoadError(
            f"{where}: compress rewrites functional or Sequential Keras models; this is a "
            f"subclassed {type(model).__name__}. Rebuild it with keras.Input and layers, or "
            "compress it in its own framework"
        )
    return model


def _is_functional(model: Any) -> bool:
    try:
        return "layers" in model.get_config() and "input_layers" in model.get_config()
    except Exception:  # subclassed models raise NotImplementedError or return {}
        return False


def walk_layers(model: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(path, layer) of every layer, descending into nested models."""
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        if hasattr(layer, "layers") and layer.layers:
            yield from walk_layers(layer, prefix=f"{path}/")
        else:
            yield path, layer


def kernels(model: Any, skip: tuple[Any, ...] = ()) -> list[Kernel]:
    """Every compressible kernel, in layer order; ``skip`` regexes exclude layer paths."""
    out = []
    for path, layer in walk_layers(model):
        if any(p.search(path) for p in skip):
            continue
        for attr in KERNELS.get(type(layer).__name__, ()):
            var = getattr(layer, attr, None)
            if var is not None and hasattr(var, "assign"):
                out.append(Kernel(path, attr, var, type(layer).__name__))
    return out


def first_layers(model: Any) -> set[str]:
    """Names of the kernel layers nearest the model inputs (the stem): reached from an input
    through parameter-free layers only."""
    config = model.get_config()
    cons = consumers(config)
    kinds = {layer.name: type(layer).__name__ for layer in model.layers}
    frontier = [n[0] if isinstance(n, (list, tuple)) else n
                for n in (config.get("input_layers") or [])]
    if frontier and isinstance(frontier[0], str) and len(frontier) == 3 and isinstance(
            frontier[1], int):
        frontier = [frontier[0]]  # a single input: ["name", 0, 0]
    found: set[str] = set()
    seen: set[str] = set()
    while frontier:
        name = frontier.pop()
        for reader in cons.get(name, []):
            if reader in seen:
                continue
            seen.add(reader)
            if kinds.get(reader) in KERNELS:
                found.add(reader)
            else:
                frontier.append(reader)
    return found


def inbound(config: dict[str, Any]) -> dict[str, list[str]]:
    """Layer name -> names of the layers feeding it (from the functional config)."""
    out: dict[str, list[str]] = {}
    for layer in config["layers"]:
        names: list[str] = []
        _history(layer.get("inbound_nodes", []), names)
        out[layer["name"]] = names
    return out


def _history(item: Any, names: list[str]) -> None:
    if isinstance(item, dict):
        if item.get("class_name") == "__keras_tensor__":
            hist = item.get("config", {}).get("keras_history")
            if hist:
                names.append(hist[0])
            return
        for v in item.values():
            _history(v, names)
    elif isinstance(item, (list, tuple)):
        for v in item:
            _history(v, names)


def consumers(config: dict[str, Any]) -> dict[str, list[str]]:
    """Layer name -> names of the layers that read its output (one entry per use)."""
    out: dict[str, list[str]] = {layer["name"]: [] for layer in config["layers"]}
    for name, ins in inbound(config).items():
        for src in ins:
            out.setdefault(src, []).append(name)
    return out


def output_layers(config: dict[str, Any]) -> set[str]:
    outs = config.get("output_layers") or []
    if outs and isinstance(outs[0], str):  # a single output: ["name", 0, 0]
        outs = [outs]
    return {o[0] for o in outs}


# ------------------------------------------------------------------------------ counting


def parameters(model: Any) -> dict[str, int]:
    """Total, trainable and non-zero parameter counts."""
    total = nonzero = 0
    for w in model.weights:
        a = np.asarray(w.numpy())
        total += a.size
        nonzero += int(np.count_nonzero(a))
    trainable = sum(int(math.prod(w.shape)) for w in model.trainable_weights)
    return {"total": total, "trainable": trainable, "nonzero": nonzero}


def macs(model: Any) -> dict[str, Any]:
    """Multiply-accumulates of one inference (batch 1), per layer type.

    Counted from each layer's output shape and kernel shape: a convolution costs
    ``output elements x kernel elements per output`` (depthwise: the kernel window only), a
    dense layer ``output elements x input width``. Elementwise layers, pooling and
    normalization are not counted (they cost memory traffic, not MACs). Dynamic dims other
    than the batch make a layer uncountable; it is listed instead of counted as 0.
    """
    by_type: dict[str, int] = {}
    uncounted: list[str] = []
    for path, layer in walk_layers(model):
        cls = type(layer).__name__
        if cls not in KERNELS or cls == "Embedding":
            continue
        n = _layer_macs(layer, cls)
        if n is None:
            uncounted.append(path)
            continue
        by_type[cls] = by_type.get(cls, 0) + n
    return {"total": sum(by_type.values()), "by_layer_type": by_type, "uncounted": uncounted}


def _layer_macs(layer: Any, cls: str) -> int | None:
    try:
        out_shape = tuple(layer.output.shape)[1:]
    except (AttributeError, ValueError):
        return None
    if any(d is None for d in out_shape):
        return None
    out_elems = math.prod(out_shape)
    if cls.startswith("SeparableConv"):
        dk = tuple(layer.depthwise_kernel.shape)
        pk = tuple(layer.pointwise_kernel.shape)
        spatial = out_elems // pk[-1]
        in_ch = dk[-2] * dk[-1]
        return spatial * in_ch * math.prod(dk[:-2]) + spatial * math.prod(pk[:-1]) * pk[-1]
    k = tuple(layer.kernel.shape)
    if cls.startswith("DepthwiseConv"):
        return out_elems * math.prod(k[:-2])  # each output: one kernel window of one channel
    if cls.endswith("Transpose"):
        in_shape = tuple(layer.input.shape)[1:]
        if any(d is None for d in in_shape):
            return None
        return math.prod(in_shape) * math.prod(k[:-2]) * k[-2]
    if cls == "EinsumDense":
        return out_elems * max(1, math.prod(k) // max(1, math.prod(out_shape[-1:])))
    return out_elems * math.prod(k[:-1])  # Conv*: kh*kw*in per output; Dense: in per output
