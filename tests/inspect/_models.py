"""Tiny seeded TFLite / ONNX models for the inspect tests, built once per test session.

Builders are cached (``functools.cache``) and write into one session folder, so the test
modules share the files without a conftest.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

HWC = (8, 8, 3)


@functools.cache
def root() -> Path:
    d = Path(tempfile.mkdtemp(prefix="edgeopt-inspecttest-"))
    atexit.register(shutil.rmtree, d, ignore_errors=True)
    return d


def _convert(model, name: str, *, int8: bool, io: str = "uint8") -> Path:  # noqa: ANN001
    """Convert a Keras model; int8 = full-integer with a seeded representative dataset."""
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        shape = tuple(d or 1 for d in model.inputs[0].shape)
        rng = np.random.default_rng(1)

        def rep():  # noqa: ANN202
            for _ in range(8):
                yield [rng.uniform(0.0, 1.0, shape).astype(np.float32)]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = getattr(tf, io)
        conv.inference_output_type = getattr(tf, io)
    path = root() / name
    path.write_bytes(conv.convert())
    return path


def _keras(build: Callable, batch: int | None = 1, shape: tuple[int, ...] = HWC):  # noqa: ANN202
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input(shape, batch_size=batch, name="image")
    return keras.Model(inp, build(keras, inp))


def _head(keras, x):  # noqa: ANN001, ANN202
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.layers.Dense(5, activation="softmax")(x)


@functools.cache
def supported_int8() -> Path:
    """Conv/ReLU6 -> depthwise -> max-pool -> GAP -> dense -> softmax, uint8 IO: Edge TPU ops."""

    def build(keras, x):  # noqa: ANN001, ANN202
        x = keras.layers.Conv2D(8, 3, padding="same", activation="relu6")(x)
        x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D(2)(x)
        return _head(keras, x)

    return _convert(_keras(build), "supported_int8.tflite", int8=True)


@functools.cache
def leaky_middle_int8() -> Path:
    """Conv -> LeakyReLU (not an Edge TPU op) -> conv -> head: the graph breaks at LEAKY_RELU."""

    def build(keras, x):  # noqa: ANN001, ANN202
        x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
        x = keras.layers.LeakyReLU(negative_slope=0.1)(x)
        x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
        return _head(keras, x)

    return _convert(_keras(build), "leaky_middle_int8.tflite", int8=True)


@functools.cache
def dynamic_batch_int8() -> Path:
    """The supported model with an unknown batch dimension (shape signature -1)."""

    def build(keras, x):  # noqa: ANN001, ANN202
        x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
        return _head(keras, x)

    return _convert(_keras(build, batch=None), "dynamic_batch_int8.tflite", int8=True)


@functools.cache
def batch2_int8() -> Path:
    """A static batch of 2: every 4-D activation has 4 dimensions larger than 1."""

    def build(keras, x):  # noqa: ANN001, ANN202
        x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
        return _head(keras, x)

    return _convert(_keras(build, batch=2), "batch2_int8.tflite", int8=True)


@functools.cache
def float_model() -> Path:
    """The supported architecture left in float32."""

    def build(keras, x):  # noqa: ANN001, ANN202
        x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
        return _head(keras, x)

    return _convert(_keras(build), "float.tflite", int8=False)


@functools.cache
def topk_middle_float() -> Path:
    """Float conv -> TOPK_V2 (no GPU kernel) -> dense: the GPU keeps the larger side."""
    import tensorflow as tf

    def build(keras, x):  # noqa: ANN001, ANN202
        x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
        x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
        x = keras.layers.Reshape((8 * 8 * 4,))(x)
        x = keras.layers.Lambda(lambda t: tf.math.top_k(t, k=16)[0])(x)
        return keras.layers.Dense(5)(x)

    return _convert(_keras(build), "topk_middle_float.tflite", int8=False)


@functools.cache
def qdq_onnx() -> tuple[Path, Path]:
    """(float, int8 QDQ) ONNX pair: Conv -> Relu -> Erf -> Add; ORT has no int8 Erf."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(4, np.float32), "b")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Erf", ["r"], ["e"], name="erf"),
        helper.make_node("Add", ["e", "r"], ["y"], name="add"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    fp = root() / "erf.onnx"
    onnx.save(model, str(fp))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)}] * 4)

        def get_next(self) -> dict | None:
            return next(self.it, None)

    q = root() / "erf_int8.onnx"
    quantize_static(
        str(fp),
        str(q),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return fp, q
