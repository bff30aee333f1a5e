"""Structured (channel) pruning: remove whole filters / units, so the exported graph is smaller
and does fewer MACs — the only pruning that makes int8 inference faster on XNNPACK and ONNX
Runtime, which have no sparse int8 kernels.

A *group* is a producer layer (``Conv1D``/``Conv2D`` with one group, or ``Dense``) whose output
channels flow only through per-channel layers (batch norm, activations, pooling, dropout,
padding, depthwise convolutions with multiplier 1, a ``Flatten``) into consumer layers
(``Conv*``/``Dense``) that read them as input channels. Removing channel ``j`` then slices the
producer's kernel and bias, every per-channel layer's weights and the consumers' input rows —
nothing else in the graph sees the difference. Channels that reach an ``Add``/``Concatenate``
(residuals), a reshape or a model output are coupled to other tensors and are left alone;
``plan`` says why per layer.

Ranking criteria (``Criterion``): L1 or L2 norm of the filter (Li et al. 2017), or the
first-order Taylor estimate of the loss change when the filter is removed, ``(sum g*w)^2``
over the filter's weights accumulated over training batches (Molchanov et al. 2019). The
benchmark measures which keeps more accuracy before fine-tuning (``docs/compression.md``).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import graph
from .options import Criterion

PRODUCERS = {"Conv1D", "Conv2D", "Dense"}
CONSUMERS = {"Conv1D", "Conv2D", "Dense", "Conv2DTranspose", "Conv1DTranspose"}
PASS_THROUGH = {
    "Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "Dropout", "SpatialDropout1D",
    "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "AlphaDropout", "Identity",
    "MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling1D",
    "GlobalMaxPooling2D", "ZeroPadding1D", "ZeroPadding2D", "Cropping1D", "Cropping2D",
    "UpSampling1D", "UpSampling2D", "ActivityRegularization",
}
PER_CHANNEL_WEIGHTS = {"BatchNormalization", "DepthwiseConv1D", "DepthwiseConv2D", "PReLU"}


@dataclass
class Group:
    """One prunable producer and everything its channels touch."""

    producer: str
    channels: int
    per_channel: list[str] = field(default_factory=list)  # layers sliced on their channel axis
    consumers: list[str] = field(default_factory=list)  # layers sliced on their input axis
    flatten: dict[str, int] = field(default_factory=dict)  # consumer -> spatial positions
    keep: np.ndarray | None = None  # sorted kept channel indices, once ranked
    scores: np.ndarray | None = None


@dataclass
class Plan:
    groups: list[Group]
    skipped: dict[str, str]  # producer -> why its channels cannot be removed

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": [
                {"layer": g.producer, "channels": g.channels,
                 "kept": int(len(g.keep)) if g.keep is not None else g.channels,
                 "consumers": g.consumers, "per_channel": g.per_channel}
                for g in self.groups
            ],
            "skipped": dict(self.skipped),
        }


def plan(model: Any, skip: tuple[Any, ...] = ()) -> Plan:
    """Find the prunable channel groups of a functional model."""
    config = model.get_config()
    layers = {layer.name: layer for layer in model.layers}
    cons = graph.consumers(config)
    ins = graph.inbound(config)
    outputs = graph.output_layers(config)
    groups, skipped = [], {}
    for name, layer in layers.items():
        cls = type(layer).__name__
        if cls not in PRODUCERS or any(p.search(name) for p in skip):
            continue
        why = _producer_problem(layer, cls)
        if why is None:
            group = Group(name, _out_channels(layer, cls))
            why = _trace(group, name, layers, cons, ins, outputs)
        if why:
            skipped[name] = why
        else:
            groups.append(group)
    return Plan(groups, skipped)


def _producer_problem(layer: Any, cls: str) -> str | None:
    conf = layer.get_config()
    if conf.get("data_format", "channels_last") != "channels_last":
        return "channels_first layout"
    if conf.get("groups", 1) != 1:
        return "grouped convolution"
    if _out_channels(layer, cls) < 2:
        return "a single channel"
    if conf.get("activation") in _ACROSS_CHANNELS:
        return f"its {conf['activation']} activation mixes channels"
    return None


_ACROSS_CHANNELS = ("softmax", "log_softmax")


def _out_channels(layer: Any, cls: str) -> int:
    return int(layer.kernel.shape[-1])


def _trace(group: Group, start: str, layers: dict[str, Any], cons: dict[str, list[str]],
           ins: dict[str, list[str]], outputs: set[str]) -> str | None:
    """Follow the producer's channels to their consumers; the reason it fails, or None."""
    frontier = [(start, None)]  # (layer whose output we follow, spatial size after a Flatten)
    seen: set[str] = set()
    while frontier:
        name, flat = frontier.pop()
        if name in outputs:
            return f"its channels reach the model output through {name!r}"
        readers = cons.get(name, [])
        if not readers:
            return f"{name!r} has no consumer"
        for reader in readers:
            if reader in seen:
                continue
            seen.add(reader)
            layer = layers[reader]
            cls = type(layer).__name__
            if len(ins.get(reader, [])) != 1:
                return f"its channels meet other tensors in {reader!r} ({cls})"
            if cls in CONSUMERS:
                if cls == "Conv2D" and layer.get_config().get("groups", 1) != 1:
                    return f"consumer {reader!r} is a grouped convolution"
                group.consumers.append(reader)
                if flat is not None:
                    group.flatten[reader] = flat
                continue
            if cls == "Flatten":
                if flat is not None:
                    return f"two Flatten layers on the path ({reader!r})"
                shape = tuple(layer.input.shape)[1:]
                if any(d is None for d in shape):
                    return f"{reader!r} flattens a dynamic shape"
                frontier.append((reader, math.prod(shape[:-1])))
                continue
            if cls in ("DepthwiseConv1D", "DepthwiseConv2D"):
                if layer.get_config().get("depth_multiplier", 1) != 1:
                    return f"depthwise {reader!r} has depth_multiplier > 1"
                group.per_channel.append(reader)
            elif cls in ("BatchNormalization", "PReLU"):
                axis = layer.get_config().get("axis", -1)
                if cls == "BatchNormalization" and axis not in (-1, len(layer.input.shape) - 1):
                    return f"{reader!r} normalizes axis {axis}, not the channels"
                group.per_channel.append(reader)
            elif cls == "Activation" and layer.get_config().get("activation") in _ACROSS_CHANNELS:
                return f"{reader!r} applies softmax across the channels"
            elif cls not in PASS_THROUGH:
                return f"its channels reach {reader!r} ({cls}), which edgeopt cannot slice"
            if flat is not None and cls not in ("Dropout", "Identity", "ActivityRegularization",
                                                "GaussianNoise", "GaussianDropout", "AlphaDropout",
                                                "Activation", "ReLU"):
                return f"{reader!r} ({cls}) after a Flatten"
            frontier.append((reader, flat))
    if not group.consumers:
        return "no consumer reads its channels"
    return None


# ------------------------------------------------------------------------------ ranking


def rank(model: Any, p: Plan, fraction: float, criterion: Criterion,
         taylor_scores: dict[str, np.ndarray] | None = None) -> None:
    """Choose the channels each group keeps (``group.keep``): the highest-scoring
    ``channels - floor(fraction * channels)`` (at least 1)."""
    layers = {layer.name: layer for layer in model.layers}
    for g in p.groups:
        kernel = np.asarray(layers[g.producer].kernel.numpy())
        if criterion is Criterion.TAYLOR:
            if taylor_scores is None:
                raise ValueError("taylor criterion without scores")  # programming error
            scores = taylor_scores[g.producer]
        else:
            scores = filter_norms(kernel, criterion)
        g.scores = scores
        n_keep = max(1, g.channels - int(math.floor(fraction * g.channels)))
        order = np.argsort(-scores, kind="stable")
        g.keep = np.sort(order[:n_keep])


def filter_norms(kernel: np.ndarray, criterion: Criterion) -> np.ndarray:
    """L1 or L2 norm per output channel (last axis) of a kernel."""
    flat = kernel.reshape(-1, kernel.shape[-1]).astype(np.float64)
    if criterion is Criterion.L2:
        return np.sqrt((flat ** 2).sum(axis=0))
    return np.abs(flat).sum(axis=0)


# ------------------------------------------------------------------------------ rebuilding


def apply(model: Any, p: Plan) -> Any:
    """A new functional model with the planned channels removed and the weights sliced.

    Only producers change their config (``filters`` / ``units``); per-channel layers and
    consumers take their sizes from their inputs when the model is rebuilt.
    """
    import keras

    config = copy.deepcopy(model.get_config())
    by_name = {g.producer: g for g in p.groups if g.keep is not None}
    for layer_conf in config["layers"]:
        layer_conf.pop("build_config", None)  # sizes come from the (new) inputs
        g = by_name.get(layer_conf["name"])
        if g is not None:
            key = "units" if layer_conf["class_name"] == "Dense" else "filters"
            layer_conf["config"][key] = int(len(g.keep))
    new = keras.Model.from_config(config)
    out_keep = {g.producer: g.keep for g in by_name.values()}
    chan_keep: dict[str, np.ndarray] = {}
    in_keep: dict[str, tuple[np.ndarray, int | None]] = {}
    for g in by_name.values():
        for name in g.per_channel:
            chan_keep[name] = g.keep
        for name in g.consumers:
            in_keep[name] = (g.keep, g.flatten.get(name))
    old = {layer.name: layer for layer in model.layers}
    for layer in new.layers:
        weights = [np.asarray(w) for w in old[layer.name].get_weights()]
        if not weights:
            continue
        cls = type(layer).__name__
        if layer.name in in_keep:
            keep, flat = in_keep[layer.name]
            weights[0] = _slice_inputs(weights[0], keep, flat, cls)
        if layer.name in out_keep:
            keep = out_keep[layer.name]
            weights[0] = weights[0][..., keep]
            if len(weights) > 1:
                weights[1] = weights[1][keep]
        if layer.name in chan_keep:
            weights = _slice_per_channel(weights, chan_keep[layer.name], cls)
        layer.set_weights(weights)
    return new


def _slice_inputs(kernel: np.ndarray, keep: np.ndarray, flat: int | None, cls: str) -> np.ndarray:
    if flat is not None:  # Dense after Flatten: row = position * channels + channel
        channels = kernel.shape[0] // flat
        rows = (np.arange(flat)[:, None] * channels + keep[None, :]).ravel()
        return kernel[rows]
    if cls.endswith("Transpose"):  # [k..., out, in]
        return kernel[..., keep]
    if cls == "Dense":
        return kernel[keep]
    return kernel[..., keep, :]  # Conv*: [k..., in, out]


def _slice_per_channel(weights: list[np.ndarray], keep: np.ndarray, cls: str) -> list[np.ndarray]:
    if cls.startswith("DepthwiseConv"):  # kernel [k..., C, 1], bias [C]
        out = [weights[0][..., keep, :]]
        return out + [w[keep] for w in weights[1:]]
    if cls == "PReLU":  # alpha shaped like the input without batch: channels last
        return [w[..., keep] for w in weights]
    return [w[keep] for w in weights]  # BatchNormalization: gamma, beta, mean, variance
