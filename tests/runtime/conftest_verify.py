"""Seeded base models for the model-verification and fuzz tests (imported explicitly).

``build_base_models`` writes small float and int8 TFLite and ONNX models covering the common
kernels (conv, depthwise, pooling, add/mul, pad, slice, concat, transpose, mean, fully connected,
softmax; QDQ conv for ONNX). The fuzz tests and ``tests/stress/fuzz_models.py`` mutate them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

CONV_SHAPE = (16, 16, 3)


def _conv_keras(seed: int):  # noqa: ANN202 - keras type
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input(CONV_SHAPE, batch_size=1, name="image")
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv_a")(inp)
    y = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6", name="dw")(x)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.Conv2D(8, 1, name="conv_b")(x)
    x = keras.layers.MaxPooling2D(2, name="max_pool")(x)
    x = keras.layers.AveragePooling2D(2, name="avg_pool")(x)
    x = keras.layers.Reshape((-1,), name="flat")(x)
    x = keras.layers.Dense(10, name="dense")(x)
    out = keras.layers.Softmax(name="probs")(x)
    return keras.Model(inp, out, name="conv_model")


def _mixed_keras(seed: int):  # noqa: ANN202
    """Two inputs, two outputs, and the ops the conv model lacks."""
    import keras

    keras.utils.set_random_seed(seed)
    img = keras.Input((8, 8, 4), batch_size=1, name="image")
    vec = keras.Input((6,), batch_size=1, name="vec")
    x = keras.layers.ZeroPadding2D(1)(img)
    x = keras.layers.Conv2D(4, 3, dilation_rate=2, activation="tanh")(x)
    x = keras.layers.Cropping2D(1)(x)
    x = keras.layers.Concatenate()([x, keras.layers.Cropping2D(2)(img)])
    x = keras.layers.Permute((2, 1, 3))(x)
    x = keras.layers.Multiply()([x, x])
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Concatenate()([x, vec])
    h = keras.layers.Dense(12, activation="sigmoid")(x)
    a = keras.layers.Dense(3, name="a")(h)
    b = keras.layers.Dense(2, activation="softmax", name="b")(
        keras.layers.Subtract()([h, x[:, :12]])
    )
    return keras.Model([img, vec], [a, b])


def _representative(
    shapes: dict[str, tuple[int, ...]], seed: int = 1, ints: frozenset[str] | set[str] = frozenset()
):  # noqa: ANN202
    """Seeded calibration samples keyed by input name (the converter may reorder inputs);
    ``ints`` inputs get small token ids."""

    def gen():  # noqa: ANN202
        rng = np.random.default_rng(seed)
        for _ in range(8):
            yield {
                n: rng.integers(0, 10, (1, *s)).astype(np.int32)
                if n in ints
                else rng.standard_normal((1, *s)).astype(np.float32)
                for n, s in shapes.items()
            }

    return gen


def _tflite(model, path: Path, *, int8: bool) -> Path:  # noqa: ANN001
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        shapes = {t.name.split(":")[0]: tuple(t.shape[1:]) for t in model.inputs}
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = _representative(shapes)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    path.write_bytes(conv.convert())
    return path


def _onnx_from_keras(model, path: Path) -> Path:  # noqa: ANN001
    import tensorflow as tf
    import tf2onnx

    spec = [tf.TensorSpec((1, *CONV_SHAPE), tf.float32, name="image")]

    @tf.function(input_signature=spec)
    def fn(x):  # noqa: ANN001, ANN202
        return {"probs": model(x, training=False)}

    tf2onnx.convert.from_function(fn, input_signature=spec, opset=17, output_path=str(path))
    return path


def _onnx_int8(src: Path, path: Path) -> Path:
    """Static QDQ int8 (ORT's defaults: S8S8, per-tensor) calibrated on seeded noise."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_static

    name = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(x["image"] for x in _representative({"image": CONV_SHAPE})())

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {name: x}

    quantize_static(
        str(src), str(path), Reader(), activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
    )  # fmt: skip
    return path


def _onnx_helper(path: Path, seed: int = 0) -> Path:
    """A hand-built graph: Gather, MatMul, Add, Relu, Reshape, Transpose, Concat, Softmax."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((10, 6)).astype(np.float32), "table"),
        numpy_helper.from_array(rng.standard_normal((6, 8)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b"),
        numpy_helper.from_array(np.array([1, 32], dtype=np.int64), "flat"),
    ]
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"], axis=0),
        helper.make_node("MatMul", ["emb", "w"], ["mm"]),
        helper.make_node("Add", ["mm", "b"], ["add"]),
        helper.make_node("Relu", ["add"], ["relu"]),
        helper.make_node("Transpose", ["relu"], ["tr"], perm=[0, 2, 1]),
        helper.make_node("Reshape", ["tr", "flat"], ["flat_out"]),
        helper.make_node("Concat", ["flat_out", "x"], ["cat"], axis=1),
        helper.make_node("Softmax", ["cat"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "fuzz_helper",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 4]),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5]),
        ],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 37])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _misc_keras(seed: int):  # noqa: ANN202
    """Conv/BN/LeakyReLU, separable and transposed conv, resize, split, gating, reduce-max."""
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((16, 16, 3), batch_size=1, name="image")
    x = keras.layers.Conv2D(8, 3, padding="same")(inp)
    x = keras.layers.LeakyReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.SeparableConv2D(8, 3, padding="same", activation="swish")(x)
    y = keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same")(x)
    y = keras.layers.UpSampling2D(interpolation="bilinear")(keras.layers.MaxPooling2D(4)(y))
    y = keras.layers.Resizing(16, 16)(y)
    a, b = keras.ops.split(x, 2, axis=-1)
    x = keras.layers.Concatenate()([a * keras.ops.sigmoid(b), y, keras.ops.relu6(x)[..., :2]])
    x = keras.layers.Conv2D(4, 1, activation="hard_sigmoid")(x)
    return keras.Model(inp, keras.ops.max(x, axis=[1, 2]))


def _transformer_keras(seed: int):  # noqa: ANN202
    """Embedding, attention (batch matmul, softmax), layer norm, GELU."""
    import keras

    keras.utils.set_random_seed(seed)
    ids = keras.Input((8,), batch_size=1, dtype="int32", name="ids")
    x = keras.layers.Embedding(50, 16)(ids)
    x = keras.layers.LayerNormalization()(x + keras.layers.MultiHeadAttention(2, 8)(x, x))
    x = keras.layers.Dense(16)(keras.layers.Dense(32, activation="gelu")(x))
    return keras.Model(ids, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(x)))


def _rnn_keras(seed: int):  # noqa: ANN202
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((6, 4), batch_size=1, name="seq")
    x = keras.layers.GRU(4)(keras.layers.LSTM(8, return_sequences=True)(inp))
    return keras.Model(inp, x)


def build_valid_zoo(out: Path, seed: int = 0) -> dict[str, Path]:
    """Valid models of many kinds (float16 weights, dynamic range, int8, 16x8, attention, RNN)
    that the checks must accept."""
    import tensorflow as tf

    out.mkdir(parents=True, exist_ok=True)
    models = {"misc": _misc_keras(seed), "transformer": _transformer_keras(seed)}
    models["rnn"] = _rnn_keras(seed)
    plan = [("misc", m) for m in ("fp16", "dynamic", "int8", "16x8")]
    plan += [("transformer", "float"), ("transformer", "int8"), ("rnn", "dynamic")]
    paths = {}
    for name, mode in plan:
        model = models[name]
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        if mode != "float":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
        if mode == "fp16":
            conv.target_spec.supported_types = [tf.float16]
        if mode in ("int8", "16x8"):
            shapes = {t.name.split(":")[0]: tuple(t.shape[1:]) for t in model.inputs}
            ints = {n for n, t in zip(shapes, model.inputs, strict=True) if "int" in str(t.dtype)}
            conv.representative_dataset = _representative(shapes, ints=ints)
            conv.target_spec.supported_ops = [
                tf.lite.OpsSet.TFLITE_BUILTINS_INT8
                if mode == "int8"
                else tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
            ]
        paths[f"{name}_{mode}"] = out / f"{name}_{mode}.tflite"
        paths[f"{name}_{mode}"].write_bytes(conv.convert())
    return paths


def build_base_models(out: Path, seed: int = 0) -> dict[str, Path]:
    """Build every base model into ``out``; return name -> path (suffix gives the format)."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    out.mkdir(parents=True, exist_ok=True)
    conv = _conv_keras(seed)
    mixed = _mixed_keras(seed + 1)
    models = {
        "float_conv.tflite": _tflite(conv, out / "float_conv.tflite", int8=False),
        "int8_conv.tflite": _tflite(conv, out / "int8_conv.tflite", int8=True),
        "float_mixed.tflite": _tflite(mixed, out / "float_mixed.tflite", int8=False),
        "int8_mixed.tflite": _tflite(mixed, out / "int8_mixed.tflite", int8=True),
        "float_conv.onnx": _onnx_from_keras(conv, out / "float_conv.onnx"),
        "helper.onnx": _onnx_helper(out / "helper.onnx", seed),
    }
    models["int8_conv.onnx"] = _onnx_int8(models["float_conv.onnx"], out / "int8_conv.onnx")
    return models


@pytest.fixture(scope="session")
def valid_zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Valid models of many kinds, built once per test session."""
    return build_valid_zoo(tmp_path_factory.mktemp("verify_zoo"))


@pytest.fixture(scope="session")
def base_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The seeded base models, built once per test session."""
    return build_base_models(tmp_path_factory.mktemp("verify_models"))
