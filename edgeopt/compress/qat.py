"""Quantization-aware fine-tuning (QAT) in the pattern the TFLite converter folds into int8.

Training model (``training_model``): every ``Conv*`` / ``DepthwiseConv*`` / ``Dense`` computes
with a fake-quantized kernel — symmetric per output channel, narrow range [-127, 127], scale
``max|w_c| / 127``, exactly what the converter's per-channel int8 weights use — through a
straight-through estimator; and at every point where the converter will requantize an activation
(after a layer and its fused ReLU / ReLU6, after adds, concatenations and average pooling) a
``FakeQuant`` with an 8-bit asymmetric range tracks the batch min/max by an exponential moving
average (tensorflow-model-optimization's default), starting from the float model's min/max on
the training data. Softmax / sigmoid / tanh outputs get none: int8 TFLite fixes their scale.
Activations the converter does not fuse (softmax, GELU, ...) are split off their layer so the
range sits on the pre-activation, where TFLite quantizes.

Batch normalization after a linear convolution / dense layer is folded into it first, so the
kernel that is fake-quantized is the kernel TFLite will quantize.

Exported model (``export``): built-in Keras layers only, with the learned ranges as
``keras.quantizers.fake_quant_with_min_max_vars`` ops (constants) and the kernels snapped to
their int8 grid. It saves as a normal ``.keras`` file that loads in safe mode, and
``edgeopt convert`` turns it into full int8: the converter takes its activation ranges from the
FakeQuant ops (measured: the int8 tensors get exactly ``(max - min) / 255``) and re-quantizes
the snapped kernels without error. tensorflow-model-optimization's ``quantize_model`` does the
same for tf-keras but refuses Keras 3 models (measured, 0.8.1).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from . import graph
from .train import call_model

WEIGHT_LAYERS = {"Conv1D", "Conv2D", "Dense", "DepthwiseConv1D", "DepthwiseConv2D"}
FUSED = {None, "linear", "relu", "relu6"}  # activations TFLite fuses into conv / dense
FIXED_RANGE = {"softmax", "sigmoid", "tanh", "log_softmax", "hard_sigmoid"}
QUANT_POINTS = {
    "Add", "Subtract", "Multiply", "Average", "Concatenate", "AveragePooling1D",
    "AveragePooling2D", "GlobalAveragePooling1D", "GlobalAveragePooling2D",
    "BatchNormalization", "Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "UpSampling2D",
}
EMA_DECAY = 0.99
FOLDABLE_INTO = {"Conv1D", "Conv2D", "Dense", "DepthwiseConv2D"}


def _keras() -> Any:
    import keras

    return keras


# ------------------------------------------------------------------------------ BN folding


def fold_batchnorm(model: Any) -> tuple[Any, list[str]]:
    """A copy of ``model`` with each BatchNormalization that directly follows a linear
    ``Conv*`` / ``Dense`` (its only reader) folded into that layer's kernel and bias.

    Returns:
        (model, names of the folded BatchNormalization layers).
    """
    keras = _keras()
    config = copy.deepcopy(model.get_config())
    layers = {layer.name: layer for layer in model.layers}
    cons = graph.consumers(config)
    ins = graph.inbound(config)
    pairs: dict[str, str] = {}  # bn -> producer
    for conf in config["layers"]:
        if conf["class_name"] != "BatchNormalization":
            continue
        src = ins.get(conf["name"], [])
        if len(src) != 1 or src[0] not in layers:
            continue
        prod = layers[src[0]]
        pconf = prod.get_config()
        if (type(prod).__name__ in FOLDABLE_INTO and cons.get(src[0]) == [conf["name"]]
                and pconf.get("activation") in FUSED - {"relu", "relu6"}
                and conf["config"].get("axis", -1) in (-1, len(prod.output.shape) - 1)):
            pairs[conf["name"]] = src[0]
    if not pairs:
        return model, []
    producers = set(pairs.values())
    config["layers"] = [c for c in config["layers"] if c["name"] not in pairs]
    for conf in config["layers"]:
        conf.pop("build_config", None)
        if conf["name"] in producers:
            conf["config"]["use_bias"] = True
        _rename_history(conf.get("inbound_nodes", []), pairs)
    outs = config.get("output_layers")
    if outs:
        single = isinstance(outs[0], str)
        fixed = [[pairs.get(o[0], o[0]), *list(o)[1:]] for o in ([outs] if single else outs)]
        config["output_layers"] = fixed[0] if single else fixed
    new = keras.Model.from_config(config)
    for layer in new.layers:
        old = layers[layer.name]
        if layer.name in producers:
            bn = layers[next(b for b, p in pairs.items() if p == layer.name)]
            layer.set_weights(_folded(old, bn))
        elif old.get_weights():
            layer.set_weights(old.get_weights())
    return new, sorted(pairs)


def _rename_history(item: Any, pairs: dict[str, str]) -> None:
    if isinstance(item, dict):
        hist = item.get("config", {}).get("keras_history") if item.get(
            "class_name") == "__keras_tensor__" else None
        if hist and hist[0] in pairs:
            item["config"]["keras_history"] = [pairs[hist[0]], *list(hist)[1:]]
            return
        for v in item.values():
            _rename_history(v, pairs)
    elif isinstance(item, (list, tuple)):
        for v in item:
            _rename_history(v, pairs)


def _folded(layer: Any, bn: Any) -> list[np.ndarray]:
    """Kernel and bias of ``layer`` followed by inference-mode ``bn``."""
    w = layer.get_weights()
    kernel = w[0]
    bias = w[1] if len(w) > 1 else np.zeros(kernel.shape[-1] if type(layer).__name__ !=
                                             "DepthwiseConv2D" else kernel.shape[-2] *
                                             kernel.shape[-1], np.float32)
    conf = bn.get_config()
    bw = bn.get_weights()
    i = 0
    gamma = bw[i] if conf.get("scale", True) else np.ones_like(bw[-1])
    i += 1 if conf.get("scale", True) else 0
    beta = bw[i] if conf.get("center", True) else np.zeros_like(bw[-1])
    i += 1 if conf.get("center", True) else 0
    mean, var = bw[i], bw[i + 1]
    factor = gamma / np.sqrt(var + conf.get("epsilon", 1e-3))
    if type(layer).__name__ == "DepthwiseConv2D":  # kernel [kh, kw, C, mult]: channel = C*mult
        shaped = factor.reshape(kernel.shape[-2], kernel.shape[-1])
        kernel = kernel * shaped
    else:
        kernel = kernel * factor
    bias = (bias.reshape(-1) - mean) * factor + beta
    return [kernel.astype(np.float32), bias.astype(np.float32)]


# ------------------------------------------------------------------------------ fake quant


def weight_scale(kernel: Any, depthwise: bool) -> Any:
    """Per-channel symmetric int8 scale ``max|w| / 127`` (keras.ops, keepdims)."""
    ops = _keras().ops
    axes = tuple(range(len(kernel.shape) - (2 if depthwise else 1)))
    m = ops.max(ops.abs(kernel), axis=axes, keepdims=True)
    return ops.maximum(m, 1e-12) / 127.0


def snap(kernel: np.ndarray, depthwise: bool) -> np.ndarray:
    """``kernel`` rounded to its per-channel int8 grid (what the converter will store)."""
    axes = tuple(range(kernel.ndim - (2 if depthwise else 1)))
    s = np.maximum(np.abs(kernel).max(axis=axes, keepdims=True), 1e-12) / 127.0
    return (np.clip(np.round(kernel / s), -127, 127) * s).astype(np.float32)


def _make_layers() -> tuple[type, type]:
    keras = _keras()
    ops = keras.ops

    class WeightFakeQuant(keras.layers.Layer):
        """Runs a built Conv / Dense layer with its kernel fake-quantized (STE)."""

        def __init__(self, inner: Any, fused: str | None, **kwargs: Any) -> None:
            super().__init__(name=f"{inner.name}_qat", **kwargs)
            self.inner = inner
            self.kind = type(inner).__name__
            self.fused = keras.activations.get(fused or "linear")

        def call(self, x: Any) -> Any:
            inner = self.inner
            k = inner.kernel
            depthwise = self.kind.startswith("Depthwise")
            s = weight_scale(k, depthwise)
            q = ops.clip(ops.round(k / s), -127.0, 127.0) * s
            k = k + ops.stop_gradient(q - k)
            if self.kind == "Dense":
                y = ops.matmul(x, k)
            elif depthwise:
                y = ops.depthwise_conv(x, k, strides=inner.strides, padding=inner.padding,
                                       data_format=inner.data_format,
                                       dilation_rate=inner.dilation_rate)
            else:
                y = inner.convolution_op(x, k)
            if getattr(inner, "bias", None) is not None:
                y = y + inner.bias
            return self.fused(y)

        def compute_output_shape(self, input_shape: Any) -> Any:
            return self.inner.compute_output_shape(input_shape)

    class ActivationFakeQuant(keras.layers.Layer):
        """8-bit asymmetric fake quantization with an EMA-tracked range."""

        def __init__(self, lo: float, hi: float, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._init = (float(min(lo, 0.0)), float(max(hi, 0.0, lo + 1e-6)))

        def build(self, input_shape: Any) -> None:
            lo, hi = self._init
            self.lo = self.add_weight(shape=(), initializer=keras.initializers.Constant(lo),
                                      trainable=False, name="min")
            self.hi = self.add_weight(shape=(), initializer=keras.initializers.Constant(hi),
                                      trainable=False, name="max")

        def call(self, x: Any, training: bool = False) -> Any:
            if training:
                lo = ops.minimum(ops.min(x), 0.0)
                hi = ops.maximum(ops.max(x), 0.0)
                self.lo.assign(EMA_DECAY * self.lo + (1 - EMA_DECAY) * ops.stop_gradient(lo))
                self.hi.assign(EMA_DECAY * self.hi + (1 - EMA_DECAY) * ops.stop_gradient(hi))
            return keras.quantizers.fake_quant_with_min_max_vars(x, self.lo, self.hi)

    return WeightFakeQuant, ActivationFakeQuant


_LAYERS: tuple[type, type] | None = None


def _layer_classes() -> tuple[type, type]:
    global _LAYERS
    if _LAYERS is None:
        _LAYERS = _make_layers()
    return _LAYERS


# ------------------------------------------------------------------------------ planning


def quant_points(model: Any) -> tuple[set[str], dict[str, str]]:
    """(layers whose output gets a FakeQuant, layers whose activation is split off: name ->
    activation). The FakeQuant of a layer read only by a fusable activation layer moves to
    that activation's output."""
    config = model.get_config()
    cons = graph.consumers(config)
    layers = {layer.name: layer for layer in model.layers}
    points: set[str] = set()
    split: dict[str, str] = {}
    for name, layer in layers.items():
        cls = type(layer).__name__
        conf = layer.get_config()
        act = conf.get("activation") if cls in WEIGHT_LAYERS or cls == "Activation" else None
        if isinstance(act, dict):
            act = act.get("config", {}).get("name")
        if cls in WEIGHT_LAYERS:
            if act not in FUSED:
                split[name] = act
            readers = cons.get(name, [])
            if act in FUSED and len(readers) == 1 and _is_fusable_activation(layers[readers[0]]):
                continue  # the activation layer right after carries the range
            points.add(name)
        elif cls in QUANT_POINTS:
            if cls == "Activation" and act in FIXED_RANGE:
                continue
            points.add(name)
    return points, split


def _is_fusable_activation(layer: Any) -> bool:
    cls = type(layer).__name__
    conf = layer.get_config()
    if cls == "ReLU":
        return conf.get("negative_slope", 0) == 0 and conf.get("threshold", 0) == 0
    return cls == "Activation" and conf.get("activation") in ("relu", "relu6", "linear")


def activation_ranges(model: Any, names: set[str], inputs: list[np.ndarray],
                      batch: int = 256) -> dict[str, tuple[float, float]]:
    """Min / max of each named layer's output over ``inputs`` (float model, inference mode)."""
    keras = _keras()
    ordered = sorted(names)
    if not ordered:
        return {}
    layers = {layer.name: layer for layer in model.layers}
    probe = keras.Model(model.inputs, [layers[n].output for n in ordered])
    lo = {n: np.inf for n in ordered}
    hi = {n: -np.inf for n in ordered}
    n = int(inputs[0].shape[0])
    for start in range(0, n, batch):
        xs = [x[start:start + batch] for x in inputs]
        outs = call_model(probe, xs, training=False)
        for name, o in zip(ordered, outs, strict=True):
            a = np.asarray(o)
            lo[name] = min(lo[name], float(a.min()))
            hi[name] = max(hi[name], float(a.max()))
    return {k: (lo[k], hi[k]) for k in ordered}


def _pre_activation_ranges(model: Any, split: dict[str, str], inputs: list[np.ndarray]
                           ) -> dict[str, tuple[float, float]]:
    """Ranges of the split layers' outputs before their activation."""
    keras = _keras()
    if not split:
        return {}
    ranges = {}
    layers = {layer.name: layer for layer in model.layers}
    for name in split:
        layer = layers[name]
        conf = layer.get_config()
        conf["activation"] = "linear"
        twin = type(layer).from_config(conf)
        twin.build(layer.input.shape)
        twin.set_weights(layer.get_weights())
        sub = keras.Model(model.inputs, twin(layer.input))
        lo, hi = np.inf, -np.inf
        for start in range(0, int(inputs[0].shape[0]), 256):
            xs = [x[start:start + 256] for x in inputs]
            a = np.asarray(call_model(sub, xs, training=False)[0])
            lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
        ranges[name] = (lo, hi)
    return ranges


# ------------------------------------------------------------------------------ models


class QATModel:
    """The training model and what ``export`` needs to rebuild a clean one."""

    def __init__(self, base: Any, inputs: list[np.ndarray]) -> None:
        keras = _keras()
        weight_cls, act_cls = _layer_classes()
        self.base = base
        self.points, self.split = quant_points(base)
        ranges = activation_ranges(base, self.points - set(self.split), inputs)
        ranges.update(_pre_activation_ranges(base, self.split, inputs))
        post = {n: a for n, a in self.split.items() if a not in FIXED_RANGE}
        self._post_names = set(post)
        if post:
            ranges.update({f"{n}/post": r for n, r in activation_ranges(base, set(post),
                                                                         inputs).items()})
        self.quantizers = {name: act_cls(lo, hi, name=f"{name.replace('/', '_')}_fq")
                           for name, (lo, hi) in ranges.items()}
        wrappers: dict[str, Any] = {}

        def clone(layer: Any) -> Any:
            if type(layer).__name__ in WEIGHT_LAYERS:
                act = layer.get_config().get("activation")
                fused = act if act in FUSED else None
                wrappers[layer.name] = weight_cls(layer, fused)
                return wrappers[layer.name]
            return layer  # shared: same variables as the base model

        def call(layer: Any, *args: Any, **kwargs: Any) -> Any:
            name = layer.inner.name if layer in wrappers.values() else layer.name
            return self._after(name, layer(*args, **kwargs))

        self.model = keras.models.clone_model(base, clone_function=clone, call_function=call)
        self.wrappers = wrappers

    def _after(self, name: str, out: Any) -> Any:
        keras = _keras()
        if name in self.split:
            out = self.quantizers[name](out)
            out = keras.layers.Activation(self.split[name], name=f"{name}_act")(out)
            if name in self._post_names:
                out = self.quantizers[f"{name}/post"](out)
            return out
        if name in self.quantizers:
            return self.quantizers[name](out)
        return out

    def ranges(self) -> dict[str, tuple[float, float]]:
        return {n: (float(q.lo.numpy()), float(q.hi.numpy())) for n, q in self.quantizers.items()}

    def export(self) -> Any:
        """A built-in-layers-only model: snapped kernels, constant FakeQuant ops."""
        keras = _keras()
        ranges = self.ranges()
        base = self.base

        def clone(layer: Any) -> Any:
            conf = layer.get_config()
            if layer.name in self.split:
                conf["activation"] = "linear"
            return type(layer).from_config(conf)

        def fq(out: Any, key: str) -> Any:
            lo, hi = ranges[key]
            return keras.quantizers.fake_quant_with_min_max_vars(out, lo, hi)

        def call(layer: Any, *args: Any, **kwargs: Any) -> Any:
            out = layer(*args, **kwargs)
            name = layer.name
            if name in self.split:
                out = fq(out, name)
                out = keras.layers.Activation(self.split[name], name=f"{name}_act")(out)
                return fq(out, f"{name}/post") if name in self._post_names else out
            return fq(out, name) if name in ranges else out

        exported = keras.models.clone_model(base, clone_function=clone, call_function=call)
        old = {layer.name: layer for layer in base.layers}
        for layer in exported.layers:
            if layer.name not in old:
                continue
            weights = old[layer.name].get_weights()
            if type(layer).__name__ in WEIGHT_LAYERS and weights:
                weights[0] = snap(weights[0], type(layer).__name__.startswith("Depthwise"))
            if weights:
                layer.set_weights(weights)
        return exported
