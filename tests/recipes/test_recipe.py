"""Recipe values: validation, normalization, to_dict/from_dict, stable keys; the [recipes]
section of target profiles; starting points per target."""

from __future__ import annotations

import json

import pytest
from edgeopt_runtime.errors import TargetError

from edgeopt.recipes import Recipe, RecipeError, TransformSpec
from edgeopt.recipes.space import starting_points
from edgeopt.targets import (
    CalibrationMethod,
    ExclusionPreset,
    Format,
    KeepFloatPolicy,
    QuantType,
    Scheme,
    load_target,
    profile_from_dict,
)


def test_round_trip_and_key_are_stable():
    r = Recipe(Format.ONNX, "static", activation_type=QuantType.INT8,
               calibration_method=CalibrationMethod.ENTROPY,
               exclude=(ExclusionPreset.TRANSFORMER,), keep_float=("ffn_out$",),
               transforms=(TransformSpec.make("smooth", alpha=0.6),
                           TransformSpec.make("outlier-split")))
    d = r.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["transforms"] == [{"name": "smooth", "alpha": 0.6},
                               {"name": "outlier-split", "ratio": 6.0}]
    back = Recipe.from_dict(d)
    assert back == r and back.key() == r.key() and hash(back) == hash(r)
    # the key is sha256 of canonical JSON: a literal value guards against accidental changes
    assert Recipe(Format.ONNX, "dynamic", op_types=("MatMul",)).key() == \
        Recipe.from_dict({"format": "onnx", "mode": "dynamic", "op_types": ["MatMul"]}).key()
    assert len(r.key()) == 16 and r.key() != back.with_keep_float(("x",)).key()


def test_fields_a_mode_ignores_do_not_change_the_value():
    a = Recipe(Format.ONNX, "dynamic", calibration_method=CalibrationMethod.ENTROPY,
               activation_type=QuantType.INT8).normalized()
    b = Recipe(Format.ONNX, "dynamic")
    assert a == b and a.key() == b.key()
    f16 = Recipe(Format.TFLITE, "float16", per_channel=False, keep_float=("x",))
    assert f16.normalized() == Recipe(Format.TFLITE, "float16").normalized()


def test_precision_names_and_calibration_need():
    assert Recipe(Format.ONNX, "static").precision == "int8"
    assert Recipe(Format.ONNX, "dynamic").precision == "dynamic"
    assert Recipe(Format.TFLITE, "int16x8").precision == "int16x8"
    assert Recipe(Format.ONNX, "static").calibrated
    assert not Recipe(Format.ONNX, "dynamic").calibrated
    assert Recipe(Format.ONNX, "dynamic", transforms=(TransformSpec.make("smooth"),)).calibrated
    assert not Recipe(Format.TFLITE, "dynamic").calibrated


@pytest.mark.parametrize(("data", "message"), [
    ({"format": "onnx", "mode": "int8"}, "not a onnx mode"),
    ({"format": "tflite", "mode": "weight-only"}, "not a tflite mode"),
    ({"format": "onnx", "mode": "static", "calibration_method": "kl"}, "'minmax'"),
    ({"format": "onnx", "mode": "static", "per_channel": "yes"}, "true or false"),
    ({"format": "onnx", "mode": "static", "keep_float": ["("]}, "not a valid regex"),
    ({"format": "onnx", "mode": "static", "colour": 1}, "unknown recipe key"),
    ({"format": "onnx"}, "needs 'mode'"),
    ({"format": "onnx", "mode": "dynamic", "transforms": [{"name": "fold"}]}, "unknown transform"),
    ({"format": "onnx", "mode": "dynamic", "transforms": [{"name": "smooth", "alpha": 2}]},
     "in [0.0, 1.0]"),
    ({"format": "onnx", "mode": "dynamic", "transforms": [{"name": "smooth", "beta": 1}]},
     "no parameter"),
    ({"format": "tflite", "mode": "int8", "transforms": [{"name": "smooth"}]}, "ONNX graph"),
])
def test_bad_recipes_are_refused_with_the_key_named(data, message):
    with pytest.raises(RecipeError, match=message.replace("[", r"\[").replace("(", r"\(")):
        Recipe.from_dict(data)


def test_from_profile_is_what_convert_builds():
    arm = load_target("arm-cpu")
    r = Recipe.from_profile(arm, "onnx", "int8")
    assert (r.mode, r.activation_type, r.weight_type, r.per_channel) == \
        ("static", QuantType.UINT8, QuantType.INT8, True)
    r = Recipe.from_profile(arm, "onnx", "dynamic", keep_float=("a",))
    assert r.mode == "dynamic" and r.keep_float == ("a",)
    tpu = Recipe.from_profile(load_target("edgetpu"), "tflite", "int8")
    assert tpu == Recipe(Format.TFLITE, "int8")


def test_target_recipe_spaces():
    tpu = load_target("edgetpu").recipes
    assert tpu.tflite == (Scheme.INT8,) and tpu.keep_float is KeepFloatPolicy.PARTITION_SPLIT
    assert load_target("arm-cpu").recipes.keep_float is KeepFloatPolicy.ALLOWED
    # the section is optional: a profile without it admits everything the backends build
    bare = profile_from_dict({"name": "x", "formats": ["onnx"]})
    assert bare.recipes.onnx and bare.to_dict()["recipes"]["keep_float"] == "allowed"


@pytest.mark.parametrize(("section", "message"), [
    ({"tflite": ["int4"]}, "'int8'"),
    ({"keep_float": "sometimes"}, "'partition-split'"),
    ({"colour": 1}, "unknown key"),
    ({"per_tensor": 1}, "true or false"),
])
def test_bad_recipe_sections_are_refused(section, message):
    with pytest.raises(TargetError, match=message):
        profile_from_dict({"name": "x", "formats": ["onnx"], "recipes": section}, "x.toml")


def test_starting_points_follow_the_space_and_the_model_shape():
    arm = load_target("arm-cpu")
    first = starting_points(arm, "onnx", transformer=True)[0]
    assert first.mode == "dynamic" and first.op_types == ("MatMul",)
    assert [t.name.value for t in first.transforms] == ["smooth", "outlier-split"]
    assert starting_points(arm, "onnx", transformer=False)[0].mode == "static"
    assert starting_points(arm, "tflite", transformer=True)[0].mode == "dynamic"
    assert starting_points(arm, "tflite", transformer=False)[0].mode == "int8"
    tpu = load_target("edgetpu")
    assert [r.mode for r in starting_points(tpu, "tflite", transformer=True)] == ["int8"]
    narrow = profile_from_dict({"name": "n", "formats": ["onnx"],
                                "recipes": {"onnx": ["dynamic"], "transforms": []}})
    got = starting_points(narrow, "onnx", transformer=True)
    assert got and all(r.mode == "dynamic" and not r.transforms for r in got)
