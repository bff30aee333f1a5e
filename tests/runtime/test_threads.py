"""One ``Model`` from many threads: every call succeeds and returns what a lone call returns;
dynamic batches of a multi-input model resize all inputs, then allocate once, and keep working.

Issue #10: a shared TFLite Model failed 25-75 % of calls from 4-8 threads ("There is at least 1
reference to internal data") and once returned a wrong result; a two-input model with a dynamic
batch failed at batch >= 2 and stayed broken.
"""

from __future__ import annotations

import threading
from pathlib import Path

import edgeopt_runtime as rt
import numpy as np
import pytest
from edgeopt_runtime.errors import InputError

from .models import SHAPE, keras_model, to_onnx, to_tflite

THREADS = 8
CALLS = 25


def _two_inputs_keras():  # noqa: ANN202 - keras type
    import keras

    keras.utils.set_random_seed(3)
    a = keras.Input((6,), name="a")  # batch None: dynamic
    b = keras.Input((6,), name="b")
    # Concatenate needs equal batch sizes: resizing and allocating per input fails at batch 2
    x = keras.layers.Concatenate()([keras.layers.Dense(4)(a), keras.layers.Dense(4)(b)])
    return keras.Model([a, b], keras.layers.Dense(3, name="out")(x))


def _tflite_two_inputs(model, path: Path, int8: bool) -> Path:  # noqa: ANN001
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        rng = np.random.default_rng(0)

        def rep():  # noqa: ANN202
            for _ in range(8):
                yield {n: rng.standard_normal((1, 6)).astype(np.float32) for n in ("a", "b")}

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep
    path.write_bytes(conv.convert())
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("threads")
    dyn = keras_model(dynamic_batch=True)
    two = _two_inputs_keras()
    return {
        "int8_tflite": to_tflite(dyn, d / "int8.tflite", int8=True),
        "float_tflite": to_tflite(dyn, d / "float.tflite", int8=False),
        "onnx": to_onnx(dyn, d / "float.onnx"),
        "two_float": _tflite_two_inputs(two, d / "two_float.tflite", int8=False),
        "two_int8": _tflite_two_inputs(two, d / "two_int8.tflite", int8=True),
    }


def _inputs(n: int, batch: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    return [rng.uniform(0, 1, (batch, *SHAPE)).astype(np.float32) for _ in range(n)]


def _hammer(model: rt.Model, xs: list[np.ndarray], want: list[np.ndarray]) -> list[str]:
    """THREADS threads x CALLS calls on one model; return every failure or wrong result."""
    errors: list[str] = []
    start = threading.Barrier(THREADS)

    def work(k: int) -> None:
        start.wait()
        for i in range(CALLS):
            j = (k * 7 + i) % len(xs)
            try:
                got = model.run(xs[j])[0]
            except Exception as exc:  # noqa: BLE001 - any failure is what this test counts
                errors.append(f"thread {k} call {i}: {type(exc).__name__}: {exc}")
                continue
            if not np.array_equal(got, want[j]):
                errors.append(f"thread {k} call {i}: wrong result for input {j}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return errors


@pytest.mark.parametrize(
    ("key", "max_instances"),
    [("int8_tflite", None), ("int8_tflite", 1), ("float_tflite", None), ("float_tflite", 1),
     ("onnx", None)],  # max_instances is the TFLite interpreter pool's bound
)  # fmt: skip
def test_shared_model_from_many_threads_is_always_right(
    models: dict, key: str, max_instances: int | None
) -> None:
    model = rt.load(models[key], threads=1, max_instances=max_instances)
    xs = _inputs(16)
    want = [model.run(x)[0] for x in xs]  # one thread: the reference
    assert _hammer(model, xs, want) == []
    if key != "onnx":
        limit = max_instances or rt.backends.tflite.DEFAULT_MAX_INSTANCES
        assert 1 <= model.runner.instances <= limit


def test_dynamic_batches_from_many_threads(models: dict) -> None:
    """Each thread feeds its own batch size: resizing is per interpreter, never shared."""
    model = rt.load(models["float_tflite"], threads=1)
    xs = [_inputs(1, batch=b)[0] for b in (1, 2, 3, 5)]
    want = [model.run(x)[0] for x in xs]
    assert _hammer(model, xs, want) == []


@pytest.mark.parametrize("key", ["two_float", "two_int8"])
def test_multi_input_dynamic_batch_resizes_all_then_allocates(models: dict, key: str) -> None:
    model = rt.load(models[key], threads=1)
    assert [s.shape for s in model.inputs] == [(None, 6), (None, 6)]
    rng = np.random.default_rng(5)
    a, b = (rng.standard_normal((4, 6)).astype(np.float32) for _ in range(2))
    singles = np.concatenate([model.run({"a": a[i : i + 1], "b": b[i : i + 1]})[0]
                              for i in range(4)])  # fmt: skip
    for n in (2, 4, 1, 3, 4):  # grow, shrink, grow again: it keeps working
        got = model.run({"a": a[:n], "b": b[:n]})[0]
        np.testing.assert_allclose(got, singles[:n], rtol=1e-5, atol=1e-5)
    assert np.allclose(model.run_batch({"a": a, "b": b})[0], singles, atol=1e-5)


def test_a_resize_the_model_cannot_take_is_refused_and_the_model_keeps_working(
    models: dict,
) -> None:
    model = rt.load(models["two_float"], threads=1)
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((2, 6)).astype(np.float32), rng.standard_normal((3, 6))
    with pytest.raises(InputError, match=r"cannot run inputs of shapes .*\[3, 6\]"):
        model.run({"a": a, "b": b.astype(np.float32)})
    ok = model.run({"a": a, "b": b[:2].astype(np.float32)})[0]
    assert ok.shape == (2, 3)
    assert model.run({"a": a[:1], "b": b[:1].astype(np.float32)})[0].shape == (1, 3)
