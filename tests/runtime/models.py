"""Tiny seeded models for runtime tests, built with TensorFlow inside the test process.

The runtime itself never imports TensorFlow; tests may.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SHAPE = (8, 8, 3)


def keras_model(seed: int = 0, dynamic_batch: bool = False):  # noqa: ANN201 - keras type
    import keras

    keras.utils.set_random_seed(seed)
    batch = None if dynamic_batch else 1
    inp = keras.Input(SHAPE, batch_size=batch, name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(5, name="logits")(x)
    return keras.Model(inp, out)


def representative(n: int = 16, seed: int = 1):  # noqa: ANN201
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield [rng.uniform(0, 1, (1, *SHAPE)).astype(np.float32)]


def to_tflite(model, path: Path, *, int8: bool, io_dtype: str = "float32") -> Path:  # noqa: ANN001
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io_dtype != "float32":
            conv.inference_input_type = getattr(tf, io_dtype)
            conv.inference_output_type = getattr(tf, io_dtype)
    path.write_bytes(conv.convert())
    return path


def to_onnx(model, path: Path) -> Path:  # noqa: ANN001
    import tensorflow as tf
    import tf2onnx

    spec = [tf.TensorSpec((None, *SHAPE), tf.float32, name="image")]

    @tf.function(input_signature=spec)
    def fn(x):  # noqa: ANN001, ANN202
        return {"logits": model(x, training=False)}

    tf2onnx.convert.from_function(fn, input_signature=spec, opset=17, output_path=str(path))
    return path
