"""Model-aware starting points: Keras transformer encoders get the TFLite transformer recipes
(dynamic-range first), CNNs the int8 ones; the float TFLite graph tells the same for sources
without Keras layers (SavedModel)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edgeopt.targets import load_target
from edgeopt.tune.space import keras_transformer, model_shape, starting_points

SEQ, D = 8, 16


def _encoder(path: Path) -> Path:
    import keras

    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = keras.Input((SEQ, D), batch_size=1, name="embeddings")
    att = L.MultiHeadAttention(2, D // 2)(inp, inp)
    x = L.LayerNormalization(epsilon=1e-6)(L.Add()([inp, att]))
    h = L.Dense(32, activation="gelu")(x)
    x = L.LayerNormalization(epsilon=1e-6)(L.Add()([x, L.Dense(D)(h)]))
    keras.Model(inp, L.GlobalAveragePooling1D()(x)).save(path)
    return path


def _cnn(path: Path) -> Path:
    import keras

    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = keras.Input((16, 16, 3), batch_size=1)
    x = L.Conv2D(4, 3, activation="relu", name="conv")(inp)
    x = L.GlobalAveragePooling2D()(x)
    keras.Model(inp, L.Dense(3, activation="softmax", name="head")(x)).save(path)
    return path


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from edgeopt.sources import load_source

    root = tmp_path_factory.mktemp("space")
    return {"encoder": load_source(_encoder(root / "enc.keras")),
            "cnn": load_source(_cnn(root / "cnn.keras")), "root": root}


def test_keras_encoder_is_a_transformer_cnn_is_not(sources: dict[str, Any]) -> None:
    why = keras_transformer(sources["encoder"])
    assert why is not None and "1 attention layer" in why and "2 LayerNormalization" in why
    assert keras_transformer(sources["cnn"]) is None


@pytest.mark.parametrize(("name", "first"), [("encoder", "dynamic"), ("cnn", "int8")])
def test_tflite_starting_points_follow_the_model(sources: dict[str, Any], name: str,
                                                 first: str) -> None:
    from edgeopt.backends import get_backend

    src = sources[name]
    shapes = {s.name: (1, *s.shape[1:]) for s in src.inputs}
    float_path = get_backend("tflite").build_float(src, shapes, sources["root"] / f"w-{name}")
    shape = model_shape(src, "tflite", float_path)
    assert shape.transformer is (name == "encoder")
    starts = starting_points(load_target("arm-cpu"), "tflite", shape)
    assert starts[0].mode == first
    if name == "encoder":
        # the float .tflite alone (a SavedModel source has no Keras layers) says so too
        from edgeopt.inspect.tflite_graph import read_tflite
        from edgeopt.tune.space import tflite_transformer

        assert tflite_transformer(read_tflite(float_path)) is not None
    else:
        assert {g.name for g in shape.groups} == {"conv", "head"}
