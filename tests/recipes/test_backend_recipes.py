"""Backends built from Recipes: non-finite / absurd calibration ranges kept float in both
formats (every ONNX calibration method survives them), transforms and exclusions reach ORT,
weight-only, and the Edge TPU refusal that names the tensor."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from edgeopt_runtime.errors import UnsupportedOpError

from edgeopt.backends import BuildRequest, get_backend
from edgeopt.recipes import Recipe, TransformSpec
from edgeopt.sources import load_source
from edgeopt.targets import CalibrationMethod, ExclusionPreset, Format, load_target

from . import _models as M


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _run(path: Path, feeds: dict) -> np.ndarray:
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, feeds)[0]


def _build_onnx(tmp: Path, recipe: Recipe, neg: float = -np.inf, calib=None):
    src_path = M.save(M.block(neg=neg), tmp)
    src = load_source(src_path)
    work = tmp / "work"
    work.mkdir(exist_ok=True)
    out = tmp / f"{recipe.key()}.onnx"
    built = get_backend("onnx").build(BuildRequest(
        source=src, profile=load_target("arm-cpu"), precision=recipe.precision,
        input_shapes={s.name: s.shape for s in src.inputs}, workdir=work, out_path=out,
        calib=calib if calib is not None else M.samples(16), recipe=recipe))
    return built, src_path


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
@pytest.mark.parametrize("neg", [-np.inf, -3.4028235e38], ids=["-inf", "-FLT_MAX"])
def test_onnx_static_keeps_unquantizable_ranges_float(tmp_path, method, neg):
    recipe = Recipe(Format.ONNX, "static", calibration_method=CalibrationMethod(method))
    built, src = _build_onnx(tmp_path, recipe, neg=neg)
    kept = {r["tensor"] for r in built.details["kept_float_ranges"]}
    assert {"bias2", "bias", "s2"} <= kept  # the mask, its broadcast, the masked scores
    note = next(n for n in built.notes if "unquantizable calibration ranges" in n)
    assert "'bias'" in note or "'bias2'" in note
    model = onnx.load(str(built.path))
    scales = [t for t in model.graph.initializer if t.name.endswith("_scale")]
    assert scales and all(np.isfinite(onnx.numpy_helper.to_array(t)).all() for t in scales)
    assert all(max(abs(onnx.numpy_helper.to_array(t).ravel())) < 1e6 for t in scales)
    ops = Counter(n.op_type for n in model.graph.node)
    assert ops["QuantizeLinear"] > 0
    for feeds in M.samples(6, seed=5):
        q, f = _run(built.path, feeds), _run(src, feeds)
        assert np.isfinite(q).all() and _cos(q, f) > 0.99


def test_onnx_static_without_masks_has_no_note(tmp_path):
    built, _ = _build_onnx(tmp_path, Recipe(Format.ONNX, "static"),
                           calib=M.samples(8, padded=False))
    assert "kept_float_ranges" not in built.details
    assert not any("unquantizable" in n for n in built.notes)


def test_onnx_dynamic_with_transforms_keeps_the_outlier_matmul_float(tmp_path):
    recipe = Recipe(Format.ONNX, "dynamic", op_types=("MatMul",),
                    transforms=(TransformSpec.make("smooth"), TransformSpec.make("outlier-split")))
    built, src = _build_onnx(tmp_path, recipe)
    assert built.precision == "dynamic" and built.details["recipe_key"] == recipe.key()
    assert built.details["transforms"][-1]["float_check"]["cosine_min"] > 1 - 1e-6
    model = onnx.load(str(built.path))
    float_mm = [n for n in model.graph.node if n.op_type == "MatMul"]
    assert any(n.name.endswith("_outlier_matmul") for n in float_mm)
    # the six weight MatMuls are int8 (the activation MatMuls are not: MatMulConstBOnly)
    assert Counter(n.op_type for n in model.graph.node)["MatMulInteger"] == 6
    assert any("outlier-split" in n for n in built.notes)
    for feeds in M.samples(4, seed=6):
        assert _cos(_run(built.path, feeds), _run(src, feeds)) > 0.995


def test_onnx_static_transformer_preset_and_keep_float(tmp_path):
    recipe = Recipe(Format.ONNX, "static", exclude=(ExclusionPreset.TRANSFORMER,),
                    keep_float=("^ffn_out(/|$)",))
    built, _ = _build_onnx(tmp_path, recipe)
    assert built.details["excluded_by_preset"] > 5
    assert built.details["keep_float"][0].startswith("ffn_out")
    model = onnx.load(str(built.path))
    readers = {n.name: n for n in model.graph.node}
    ln = readers["ln1"]  # kept float: reads a float tensor, not a DequantizeLinear output
    producer = {o: n for n in model.graph.node for o in n.output}
    assert producer[ln.input[0]].op_type != "DequantizeLinear"


def test_onnx_weight_only_uses_matmulnbits(tmp_path):
    built, src = _build_onnx(tmp_path, Recipe(Format.ONNX, "weight-only"))
    # ORT's pre-processing turns MatMul + bias Add of static 3-D shapes into fused nodes the
    # weight-only quantizer leaves alone: at least the three bias-free projections are int8
    assert built.precision == "weight-only" and built.details["weight_only_matmuls"] >= 3
    nbits = [n for n in onnx.load(str(built.path)).graph.node if n.op_type == "MatMulNBits"]
    assert all(onnx.helper.get_attribute_value(
        next(a for a in n.attribute if a.name == "bits")) == 8 for n in nbits)
    feeds = M.samples(1, seed=3)[0]
    assert _cos(_run(built.path, feeds), _run(src, feeds)) > 0.999


def _masked_keras(tmp: Path) -> Path:
    import keras

    t, d = 8, 16
    x = keras.Input((t, d), name="x")
    mask = keras.Input((t,), name="mask")
    bias = keras.layers.Rescaling(1e9, offset=-1e9, name="mask_bias")(mask)  # 0 or -1e9
    bias = keras.layers.Reshape((1, t), name="mask_row")(bias)
    q = keras.layers.Dense(d, name="q")(x)
    k = keras.layers.Dense(d, name="k")(x)
    v = keras.layers.Dense(d, name="v")(x)
    scores = keras.layers.Dot(axes=2, name="scores")([q, k])
    scores = keras.layers.Add(name="masked")([scores, bias])
    p = keras.layers.Softmax(name="attn")(scores)
    ctx = keras.layers.Dot(axes=(2, 1), name="context")([p, v])
    y = keras.layers.Dense(d, name="out")(ctx)
    keras.utils.set_random_seed(0)
    model = keras.Model([x, mask], y)
    path = tmp / "masked.keras"
    model.save(path)
    return path


def _keras_calib(n: int = 12) -> list[dict[str, np.ndarray]]:
    return [{"x": s["x"], "mask": s["mask"]} for s in M.samples(n, seed=4)]


def _build_tflite(tmp: Path, target: str):
    src = load_source(_masked_keras(tmp))
    work = tmp / "work"
    work.mkdir(exist_ok=True)
    prof = load_target(target)
    recipe = Recipe(Format.TFLITE, "int8")
    shapes = {s.name: (1, *s.shape[1:]) for s in src.inputs}
    return get_backend("tflite").build(BuildRequest(
        source=src, profile=prof, precision="int8", input_shapes=shapes, workdir=work,
        out_path=tmp / "m.tflite", calib=_keras_calib(), recipe=recipe))


def test_tflite_int8_keeps_the_mask_float_and_says_so(tmp_path):
    built = _build_tflite(tmp_path, "arm-cpu")
    kept = built.details["kept_float_ranges"]
    assert kept and all(abs(r["min"]) > 1e8 for r in kept)
    assert any("mask_bias" in r["tensor"] or "masked" in r["tensor"] for r in kept)
    assert any("unquantizable calibration ranges" in n for n in built.notes)
    import edgeopt_runtime as rt

    model = rt.load(built.path, threads=1)
    for feeds in _keras_calib(4):
        out = next(iter(model.run(feeds).values()))
        assert np.isfinite(out).all()


def test_edgetpu_refuses_an_unquantizable_range_naming_the_tensor(tmp_path):
    with pytest.raises(UnsupportedOpError, match="unquantizable calibration ranges.*mask"):
        _build_tflite(tmp_path, "edgetpu")


def test_tflite_recipe_per_channel_choice_reaches_the_converter(tmp_path):
    from tests.converter import _models as CM

    src = load_source(CM.keras_file())
    work = tmp_path / "work"
    work.mkdir()
    calib = [{"image": x[None]} for x in CM.images(CM.HWC, 8, seed=3)]
    prof = dataclasses.replace(load_target("arm-cpu"))
    scales = {}
    for pc in (True, False):
        recipe = Recipe(Format.TFLITE, "int8", per_channel=pc)
        built = get_backend("tflite").build(BuildRequest(
            source=src, profile=prof, precision="int8",
            input_shapes={s.name: s.shape for s in src.inputs}, workdir=work,
            out_path=tmp_path / f"pc{pc}.tflite", calib=calib, recipe=recipe))
        conv = next(o for o in CM.tflite_ops(built.path) if o["op"] == "CONV_2D")
        scales[pc] = conv["in_scales"][1]
    assert scales == {True: 8, False: 1}


def test_convert_report_names_the_kept_float_mask(tmp_path):
    import json

    import edgeopt

    src = M.save(M.block(), tmp_path)
    feeds = M.samples(16)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.concatenate([f["x"] for f in feeds]),
             mask=np.concatenate([f["mask"] for f in feeds]))
    report = edgeopt.convert(src, "arm-cpu", calib, formats="onnx", out=tmp_path / "out",
                             latency_runs=3)
    art = report.artifacts[0]
    assert {r["tensor"] for r in art["details"]["kept_float_ranges"]} >= {"bias", "s2"}
    assert all(isinstance(r["min"], str) for r in art["details"]["kept_float_ranges"]
               if r["tensor"] == "bias")  # "-inf": strict JSON has no infinity
    text = (tmp_path / "out" / "report.json").read_text()
    assert "unquantizable calibration ranges" in text and json.loads(text)
