"""Layouts: a TFLite model converted from an NCHW source is fed and read in the source layout.

The model is a tiny NHWC Keras model with a 4-D and a 2-D output; its manifest says how the
NCHW source's tensors map onto it, as ``edgeopt convert`` writes it for onnx2tf conversions.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import edgeopt_runtime as rt
import numpy as np
import pytest
from edgeopt_runtime.errors import InputError, ModelLoadError
from edgeopt_runtime.layout import IOLayouts, Layout, annotate, channels_last, infer
from edgeopt_runtime.manifest import sha256_file, write_manifest

NCHW_TO_NHWC = {"source": "NCHW", "model": "NHWC", "perm": [0, 2, 3, 1]}


@functools.cache
def model_file() -> Path:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3), batch_size=1, name="image")
    feat = keras.layers.Conv2D(4, 3, padding="same", name="feat")(inp)
    logits = keras.layers.Dense(5, name="logits")(keras.layers.GlobalAveragePooling2D()(feat))
    model = keras.Model(inp, {"feat": feat, "logits": logits})
    path = Path(tempfile.mkdtemp(prefix="edgeopt-layout-")) / "model.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


def artifact(tmp: Path, layouts: dict | None = None) -> Path:
    """An artifact dir whose manifest gives 'image' and 'feat' NCHW->NHWC layouts."""
    src = model_file()
    (tmp / src.name).write_bytes(src.read_bytes())
    plain = rt.load(tmp / src.name)
    layouts = layouts if layouts is not None else {"image": NCHW_TO_NHWC, "feat": NCHW_TO_NHWC}
    entry = {
        "file": src.name, "format": "tflite", "precision": "float32",
        "sha256": sha256_file(tmp / src.name), "size_bytes": src.stat().st_size,
        "inputs": annotate([s.to_dict() for s in plain.inputs], layouts),
        "outputs": annotate([s.to_dict() for s in plain.outputs], layouts),
    }
    write_manifest(tmp, {"models": [entry], "runtime": {"threads": 1}})
    return tmp


def test_layout_from_dict_checks_every_field() -> None:
    assert Layout.from_dict(NCHW_TO_NHWC, 4, "x").perm == (0, 2, 3, 1)
    bad = [
        ("not an object", [0, 2, 3, 1], "must be an object"),
        ("short perm", {**NCHW_TO_NHWC, "perm": [0, 2, 1]}, "permutation of 0..3"),
        ("repeats", {**NCHW_TO_NHWC, "perm": [0, 2, 2, 1]}, "permutation"),
        ("batch moved", {**NCHW_TO_NHWC, "perm": [1, 2, 3, 0]}, "batch axis"),
        ("bools", {**NCHW_TO_NHWC, "perm": [False, True, 2, 3]}, "permutation"),
        ("strings", {**NCHW_TO_NHWC, "perm": ["0", "2", "3", "1"]}, "permutation"),
        ("name", {**NCHW_TO_NHWC, "source": "nchw; rm -rf"}, "layout names"),
        ("long name", {**NCHW_TO_NHWC, "model": "N" * 40}, "layout names"),
    ]
    for what, value, fragment in bad:
        with pytest.raises(ModelLoadError, match=fragment):
            Layout.from_dict(value, 4, what)


def test_infer_and_channels_last() -> None:
    assert infer((1, 3, 224, 224), (1, 224, 224, 3)) == channels_last(4)
    assert infer((1, 3, 3, 3), (1, 3, 3, 3)) is None  # unchanged (also when ambiguous)
    assert infer((1, 10), (1, 10)) is None
    assert channels_last(3).perm == (0, 2, 1) and channels_last(5).source == "NCDHW"
    with pytest.raises(ValueError, match="channels-last"):
        infer((1, 3, 8, 6), (1, 6, 8, 3))
    lay = channels_last(4)
    x = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    assert np.array_equal(x.transpose(lay.perm).transpose(lay.inverse), x)
    assert lay.source_shape((2, 4, 5, 3)) == (2, 3, 4, 5)


def test_artifact_takes_and_returns_the_source_layout(tmp_path: Path) -> None:
    model = rt.load(artifact(tmp_path), threads=1)
    plain = rt.load(model_file(), threads=1)
    assert [s.shape for s in model.inputs] == [(1, 3, 8, 8)]
    assert {s.name: s.shape for s in model.outputs} == {"feat": (1, 4, 8, 8), "logits": (1, 5)}
    x = np.random.default_rng(0).uniform(0, 1, (1, 3, 8, 8)).astype(np.float32)
    got = model.run(x)
    want = plain.run(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
    assert np.array_equal(got["feat"], want["feat"].transpose(0, 3, 1, 2))
    assert np.array_equal(got["logits"], want["logits"])
    assert got["feat"].flags.c_contiguous
    raw = model.run(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), raw=True)  # model's layout
    assert np.array_equal(raw["feat"], want["feat"])
    batch = np.concatenate([x, x * 0.5])
    many = model.run_batch(batch)
    assert many["feat"].shape == (2, 4, 8, 8)
    assert np.allclose(many["feat"][1], model.run(batch[1:])["feat"][0])


def test_wrong_layout_is_one_clear_error(tmp_path: Path) -> None:
    model = rt.load(artifact(tmp_path), threads=1)
    with pytest.raises(InputError, match=r"'image': expected shape \[1, 3, 8, 8\] \(NCHW, the "
                                         r"source model's layout\), got \[1, 8, 8, 3\]; raw=True"):
        model.run(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(InputError, match="expected shape"):
        model.run(np.zeros((1, 3, 8), np.float32))


def test_profile_and_cli_feeds_follow_the_source_layout(tmp_path: Path) -> None:
    model = rt.load(artifact(tmp_path), threads=1)
    result = rt.profile(model, runs=3, warmup=1).to_dict()
    assert result["inputs"]["arrays"][0]["shape"] == [1, 3, 8, 8]  # random feeds, NCHW
    assert result["latency"]["p50_ms"] > 0


def test_malformed_layout_in_a_manifest_is_refused_at_load(tmp_path: Path) -> None:
    bad = {"image": {**NCHW_TO_NHWC, "perm": [0, 1, 2]}}
    with pytest.raises(ModelLoadError, match=r"manifest|'image'.*permutation"):
        rt.load(artifact(tmp_path, bad))


def test_layouts_from_converter_details_match_by_name() -> None:
    plain = rt.load(model_file())
    found = IOLayouts.from_dict({"inputs": {"image": NCHW_TO_NHWC}, "outputs": {}},
                                plain.inputs, plain.outputs)
    assert found is not None and found.inputs[0] == channels_last(4)
    assert found.outputs == [None, None]
    assert IOLayouts.from_dict({"inputs": {}, "outputs": {}}, plain.inputs, plain.outputs) is None
    assert found.to_dict(plain.inputs, plain.outputs) == {"inputs": {"image": NCHW_TO_NHWC},
                                                          "outputs": {}}


@pytest.mark.parametrize("max_instances", [None, 1])  # interpreter pool / one behind a lock
def test_layouts_hold_from_many_threads(tmp_path: Path, max_instances: int | None) -> None:
    """8 threads x 20 calls on one layout model (and on a ``with_layouts`` view of the plain
    one, as the converter measures it): every result is the lone call's for that input."""
    import threading

    model = rt.load(artifact(tmp_path), threads=1, max_instances=max_instances)
    plain = rt.load(model_file(), threads=1, max_instances=max_instances)
    view = plain.with_layouts(IOLayouts.from_dict(
        {"inputs": {"image": NCHW_TO_NHWC}, "outputs": {"feat": NCHW_TO_NHWC}},
        plain.inputs, plain.outputs))
    rng = np.random.default_rng(5)
    xs = [rng.uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32) for _ in range(6)]
    want = [model.run(x) for x in xs]
    errors: list[str] = []
    start = threading.Barrier(8)

    def work(k: int) -> None:
        start.wait()
        for i in range(20):
            j = (k * 5 + i) % len(xs)
            m = view if (k + i) % 2 else model
            try:
                got = m.run(xs[j]) if i % 3 else m.run_batch(np.concatenate([xs[j], xs[j]]))
            except Exception as exc:  # noqa: BLE001 - every failure is collected
                errors.append(f"thread {k} call {i}: {type(exc).__name__}: {exc}")
                continue
            for name in ("feat", "logits"):
                if not np.array_equal(got[name][:1], want[j][name]):
                    errors.append(f"thread {k} call {i}: {name} differs")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:5]
    assert view.runner is plain.runner and view.inputs[0].shape == (1, 3, 8, 8)
    if max_instances is None:
        assert model.runner.instances >= 1
