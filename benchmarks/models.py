"""Seeded benchmark models, built in-process with Keras (``weights=None``: nothing is downloaded).

Each builder returns a ``keras.Model`` with a fixed batch of 1 (edge inference is batch 1, and
static shapes are what the Edge TPU and GPU profiles require). Random weights give the same
latency as trained ones, but a randomly initialised network's BatchNorm statistics (mean 0,
variance 1) do not match its activations, so activations drift in scale layer after layer. To
make the int8 drift numbers meaningful, :func:`settle_batchnorm` sets every BatchNorm's moving
statistics to the statistics of one calibration-like batch: the network then normalises its
activations the way a trained one does.

Builders import Keras lazily (the benchmark entry point must stay light until it runs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ModelSpec:
    """A benchmark model: how to build it and how to make inputs for it."""

    name: str
    description: str
    input_shape: tuple[int, ...]  # without the batch dim
    build: Callable[[int], Any]  # seed -> keras.Model
    value_range: tuple[float, float] = (0.0, 1.0)  # uniform input range ("image" in [0, 1])
    input_name: str = "image"

    def inputs(self, n: int, seed: int) -> list[np.ndarray]:
        """``n`` seeded batch-1 float32 inputs drawn uniformly from ``value_range``."""
        rng = np.random.default_rng(seed)
        lo, hi = self.value_range
        return [
            rng.uniform(lo, hi, (1, *self.input_shape)).astype(np.float32) for _ in range(n)
        ]


def _keras() -> Any:
    from edgeopt.backends._frameworks import import_keras

    return import_keras()


def settle_batchnorm(model: Any, sample: np.ndarray) -> None:
    """Set each BatchNormalization's moving mean/variance to the statistics of ``sample``.

    One forward pass in training mode with momentum 0 makes ``moving = batch statistics`` for
    every BN layer at once (each layer sees the already-normalised output of the layers before
    it, as in a trained network).

    Args:
        model: a Keras model (modified in place).
        sample: a batch of inputs (batch > 1 so variances are not degenerate).
    """
    keras = _keras()
    bns = [
        layer
        for layer in _all_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    if not bns:
        return
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = 0.0
    model(sample, training=True)
    for bn, m in zip(bns, saved, strict=True):
        bn.momentum = m


def _all_layers(model: Any) -> Iterator[Any]:
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def _seeded(seed: int) -> Any:
    keras = _keras()
    keras.utils.set_random_seed(seed)
    return keras


def _settled(shape: tuple[int, ...], model: Any, seed: int, high: float = 1.0) -> Any:
    # A different seed from the benchmark inputs: the settling batch is not a test input.
    rng = np.random.default_rng(seed + 1000)
    settle_batchnorm(model, rng.uniform(0, high, (8, *shape)).astype(np.float32))
    return model


# --------------------------------------------------------------------------- builders


def tiny_cnn(seed: int) -> Any:
    """A 3-conv CNN on 32x32x3 (0.28 M MACs): the CI / --quick smoke model."""
    keras = _seeded(seed)
    L = keras.layers
    inp = keras.Input((32, 32, 3), batch_size=1, name="image")
    x = L.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(inp)
    x = L.ReLU(6.0)(L.BatchNormalization()(x))
    x = L.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = L.ReLU(6.0)(L.BatchNormalization()(x))
    x = L.Conv2D(32, 1, use_bias=False)(x)
    x = L.ReLU(6.0)(L.BatchNormalization()(x))
    x = L.GlobalAveragePooling2D()(x)
    out = L.Dense(10, name="logits")(x)
    return _settled((32, 32, 3), keras.Model(inp, out, name="tiny_cnn"), seed)


def mobilenet_v2(seed: int) -> Any:
    """keras.applications.MobileNetV2, alpha 1.0, 224x224, 1000 classes, random weights."""
    keras = _seeded(seed)
    model = keras.applications.MobileNetV2(
        input_shape=(224, 224, 3), weights=None, classes=1000, classifier_activation=None
    )
    model = _batch_one(keras, model, (224, 224, 3))
    return _settled((224, 224, 3), model, seed)


def efficientnet_b0(seed: int) -> Any:
    """keras.applications.EfficientNetB0, 224x224, random weights (SiLU, squeeze-excite)."""
    keras = _seeded(seed)
    model = keras.applications.EfficientNetB0(
        input_shape=(224, 224, 3), weights=None, classes=1000, classifier_activation=None
    )
    model = _batch_one(keras, model, (224, 224, 3))
    return _settled((224, 224, 3), model, seed, high=255.0)


def _batch_one(keras: Any, model: Any, shape: tuple[int, ...]) -> Any:
    """Re-wrap an application model with a fixed batch-1 input named ``image``."""
    inp = keras.Input(shape, batch_size=1, name="image")
    return keras.Model(inp, model(inp), name=model.name)


def resnet18(seed: int) -> Any:
    """ResNet-18 (He et al. 2016, basic blocks [2, 2, 2, 2]), 224x224, 1000 classes."""
    keras = _seeded(seed)
    L = keras.layers
    inp = keras.Input((224, 224, 3), batch_size=1, name="image")
    x = L.Conv2D(64, 7, strides=2, padding="same", use_bias=False)(inp)
    x = L.ReLU()(L.BatchNormalization()(x))
    x = L.MaxPooling2D(3, strides=2, padding="same")(x)
    for stage, filters in enumerate((64, 128, 256, 512)):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(L, x, filters, stride)
    x = L.GlobalAveragePooling2D()(x)
    out = L.Dense(1000, name="logits")(x)
    return _settled((224, 224, 3), keras.Model(inp, out, name="resnet18"), seed)


def _basic_block(L: Any, x: Any, filters: int, stride: int) -> Any:  # noqa: N803 - keras.layers
    shortcut = x
    y = L.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
    y = L.ReLU()(L.BatchNormalization()(y))
    y = L.Conv2D(filters, 3, padding="same", use_bias=False)(y)
    y = L.BatchNormalization()(y)
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = L.Conv2D(filters, 1, strides=stride, use_bias=False)(shortcut)
        shortcut = L.BatchNormalization()(shortcut)
    return L.ReLU()(L.Add()([y, shortcut]))


# A small BERT-style encoder over precomputed token embeddings (float input, so every target's
# calibration path applies): 4 layers, d_model 256, 4 heads, FFN 1024, sequence 128.
_SEQ, _D, _HEADS, _FFN, _LAYERS = 128, 256, 4, 1024, 4


def transformer_encoder(seed: int) -> Any:
    """Post-LN transformer encoder, 4 x (MHA + GELU FFN), mean-pooled 256-d embedding output."""
    keras = _seeded(seed)
    L = keras.layers
    inp = keras.Input((_SEQ, _D), batch_size=1, name="embeddings")
    x = inp
    for _ in range(_LAYERS):
        att = L.MultiHeadAttention(_HEADS, _D // _HEADS)(x, x)
        x = L.LayerNormalization(epsilon=1e-6)(L.Add()([x, att]))
        h = L.Dense(_FFN, activation="gelu")(x)
        h = L.Dense(_D)(h)
        x = L.LayerNormalization(epsilon=1e-6)(L.Add()([x, h]))
    out = L.GlobalAveragePooling1D(name="pooled")(x)
    return keras.Model(inp, out, name="transformer_encoder")


MODELS: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        ModelSpec("tiny_cnn", "3-conv CNN, 32x32x3 (CI smoke model)", (32, 32, 3), tiny_cnn),
        ModelSpec(
            "mobilenet_v2", "keras.applications MobileNetV2 1.0, 224x224", (224, 224, 3),
            mobilenet_v2,
        ),
        ModelSpec("resnet18", "ResNet-18 (basic blocks), 224x224", (224, 224, 3), resnet18),
        ModelSpec(
            "efficientnet_b0", "keras.applications EfficientNetB0, 224x224", (224, 224, 3),
            efficientnet_b0,
            value_range=(0.0, 255.0),  # the application model rescales 0..255 itself
        ),
        ModelSpec(
            "transformer_encoder",
            f"BERT-style encoder, {_LAYERS} layers, d={_D}, {_HEADS} heads, seq {_SEQ}",
            (_SEQ, _D),
            transformer_encoder,
            value_range=(-1.0, 1.0),
            input_name="embeddings",
        ),
    )
}

QUICK_MODELS = ("tiny_cnn", "mobilenet_v2")
FULL_MODELS = tuple(MODELS)


def get(name: str) -> ModelSpec:
    """The benchmark model called ``name``.

    Raises:
        KeyError: unknown name (the message lists the known ones).
    """
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown benchmark model {name!r}; known: {', '.join(MODELS)}") from None
