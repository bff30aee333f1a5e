"""MobileNetV2 (Keras architecture, random weights, seeded) through all three targets.

Slow (~1 min: a 224x224 full-int8 calibration): ``pytest -m slow tests/inspect``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from edgeopt.inspect import preflight
from edgeopt.targets import load_target

from . import _models

# Skipped unless selected with -m slow: the fast suite (plain `pytest`) must stay fast.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        "'slow' not in (config.getoption('markexpr') or '')", reason="slow: run with -m slow"
    ),
]


def _mobilenet_int8(batch: int | None) -> Path:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    if batch is None:  # keras.applications default: unknown batch
        model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    else:  # what a conversion for the Edge TPU must do: a static batch of 1
        inp = keras.Input((224, 224, 3), batch_size=batch)
        model = keras.applications.MobileNetV2(weights=None, input_tensor=inp)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    rng = np.random.default_rng(0)

    def rep():  # noqa: ANN202
        for _ in range(4):
            yield [rng.uniform(-1.0, 1.0, (1, 224, 224, 3)).astype(np.float32)]

    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.uint8
    conv.inference_output_type = tf.uint8
    path = _models.root() / f"mobilenetv2_b{batch}.tflite"
    path.write_bytes(conv.convert())
    return path


@pytest.fixture(scope="module")
def mnv2() -> Path:
    return _mobilenet_int8(batch=1)


def test_mobilenetv2_maps_entirely_to_the_edge_tpu(mnv2: Path) -> None:
    rep = preflight(mnv2, load_target("edgetpu"))
    ops = Counter(e["op"] for e in rep["ops"])
    assert ops["CONV_2D"] == 35 and ops["DEPTHWISE_CONV_2D"] == 17 and ops["ADD"] == 10
    assert rep["summary"]["fully_delegated"], [e for e in rep["ops"] if not e["delegated"]]
    part = rep["partition"]
    assert part["subgraphs"] == 1 and part["first_unmapped_op"] is None
    # ~3.5 M parameters in int8 plus int32 biases: between 3 and 4 MiB, fits the ~8 MiB cache
    assert 3 * 2**20 < part["parameter_bytes"] < 4 * 2**20 and part["fits_on_chip"]


def test_mobilenetv2_on_mobile_gpu_and_arm_cpu(mnv2: Path) -> None:
    gpu = preflight(mnv2, load_target("mobile-gpu"))
    assert gpu["summary"]["fully_delegated"]
    arm = preflight(mnv2, load_target("arm-cpu"))
    assert arm["measurement"]["available"]
    on_cpu = Counter(e["op"] for e in arm["ops"] if not e["delegated"])
    # every convolution, add, mean and dense runs in XNNPACK
    assert not {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "FULLY_CONNECTED"} & set(on_cpu)


def test_mobilenetv2_with_keras_dynamic_batch_is_refused_for_the_edge_tpu() -> None:
    rep = preflight(_mobilenet_int8(batch=None), load_target("edgetpu"))
    assert rep["summary"]["delegated"] == 0
    assert any("static batch size of 1" in n for n in rep["notes"])
