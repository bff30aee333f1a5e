"""Issue 13 on the convert command line: partial success, the preprocessing guard, dynamic
H/W Keras inputs on arm-cpu TFLite (``--input-shape``), quiet / verbose, the kept reference's
policy, and op-name / memory-budget checks of user target profiles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result

from edgeopt.cli import main

from . import _models as M

pytest.importorskip("tensorflow")


def _cli(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_one_failing_target_does_not_abort_the_others(tmp_path: Path) -> None:
    calib = tmp_path / "x.npz"
    np.savez(calib, x=M.images((4,), 8, seed=5))
    out = tmp_path / "out"
    r = _cli("convert", M.cos_savedmodel_dir(), "--target", "arm-cpu", "--target", "edgetpu",
             "--calib", calib, "--format", "tflite", "--out", out, "--latency-runs", 2,
             "--no-memory", "--json")
    assert r.exit_code == 1, r.stderr  # partial: the report says which failed and why
    report = json.loads(r.stdout)
    status = {t["name"]: t["status"] for t in report["targets"]}
    assert status == {"arm-cpu": "ok", "edgetpu": "failed"}
    assert (out / "arm-cpu" / "model_int8.tflite").is_file() and not (out / "edgetpu").exists()
    assert "1 of 2 target(s) did not fully convert (edgetpu: failed)" in r.stderr
    assert r.stderr.count("COS") >= 1 and "Traceback" not in r.stderr
    # nothing at all buildable: exit 2, nothing written
    r = _cli("convert", M.cos_savedmodel_dir(), "--target", "edgetpu", "--calib", calib,
             "--out", tmp_path / "none", "--no-memory")
    assert r.exit_code == 2 and "COS" in r.stderr and not (tmp_path / "none").exists()


def test_one_failing_format_keeps_the_other(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A format whose converter fails (here tf2onnx, made to fail as a real converter bug
    would) is a failure record of its target; the other format is written and measured."""
    from edgeopt_runtime.errors import UnsupportedOpError

    from edgeopt.backends import get_backend

    onnx = get_backend("onnx")

    def broken(request: Any) -> object:
        # a framework message naming the run's scratch files, as converters' messages do
        raise UnsupportedOpError(
            f"tf2onnx: cannot write {request.out_path} from {request.workdir / 'f.onnx'}: "
            + "op FancyOp has no ONNX equivalent; " * 20)

    monkeypatch.setattr(type(onnx), "build", lambda self, request: broken(request))
    out = tmp_path / "out"
    r = _cli("convert", M.keras_file(), "--target", "arm-cpu", "--calib", M.calib_npz(),
             "--out", out, "--latency-runs", 2, "--no-memory", "--json")
    assert r.exit_code == 1, r.stderr
    t = json.loads(r.stdout)["targets"][0]
    assert t["status"] == "partial" and [a["format"] for a in t["artifacts"]] == ["tflite"]
    (f,) = t["failures"]
    assert f["format"] == "onnx" and f["error_type"] == "UnsupportedOpError"
    assert len(f["error"]) > 600  # the whole message, not cut at 300 characters
    # no staging path: the output file is named under OUT, a scratch file by its origin
    assert ".edgeopt-tmp" not in f["error"] and "_work" not in f["error"]
    assert str(out / "arm-cpu" / "model_int8.onnx") in f["error"]
    assert f"a file converted from {M.keras_file()}" in f["error"]
    assert ".edgeopt-tmp" not in r.stderr
    assert (out / "arm-cpu" / "model_int8.tflite").is_file()
    assert not list((out / "arm-cpu").glob("model_int8.onnx"))
    assert "failed" in (out / "report.md").read_text()


def test_scale_on_float_arrays_is_refused_with_the_fix(tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = _cli("convert", M.keras_file(), "--target", "arm-cpu", "--calib", M.calib_npz(),
             "--preprocess", "scale=1/255", "--out", out)
    assert r.exit_code == 2 and not out.exists()
    assert "already float32" in r.stderr and "apply_to=all" in r.stderr
    assert "Drop --preprocess" in r.stderr
    # asked for explicitly: applied, warned on stderr, before/after statistics in the report
    r = _cli("convert", M.keras_file(), "--target", "arm-cpu", "--calib", M.calib_npz(),
             "--preprocess", "scale=1/255", "--preprocess", "apply_to=all", "--format",
             "tflite", "--out", out, "--latency-runs", 2, "--no-memory", "--json")
    assert r.exit_code == 0, r.stderr
    assert "edgeopt: warning: calibration:" in r.stderr and "already-float input" in r.stderr
    stats = json.loads(r.stdout)["calibration"]["statistics"]["image"]
    before, after = stats["before_preprocessing"], stats["model_input"]
    assert before["max"] == pytest.approx(after["max"] * 255, rel=1e-5)


def test_integer_arrays_still_take_scale(tmp_path: Path) -> None:
    calib = tmp_path / "u8.npz"
    np.savez(calib, image=(M.images(M.HWC, 8, seed=3) * 255).astype(np.uint8))
    r = _cli("convert", M.keras_file(), "--target", "arm-cpu", "--calib", calib,
             "--preprocess", "scale=1/255", "--format", "tflite", "--out", tmp_path / "o",
             "--latency-runs", 2, "--no-memory", "--json")
    assert r.exit_code == 0, r.stderr
    stats = json.loads(r.stdout)["calibration"]["statistics"]["image"]
    assert stats["before_preprocessing"]["max"] > 200 and stats["model_input"]["max"] <= 1.0


@pytest.fixture(scope="module")
def dynamic_hw_keras() -> Path:
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((None, None, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    path = M.root() / "dynamic_hw.keras"
    keras.Model(inp, keras.layers.Dense(3)(x)).save(path)
    return path


def test_dynamic_hw_keras_on_arm_cpu_tflite(dynamic_hw_keras: Path, tmp_path: Path) -> None:
    calib = tmp_path / "c.npz"
    np.savez(calib, image=M.images((12, 12, 3), 8, seed=1))
    r = _cli("convert", dynamic_hw_keras, "--target", "arm-cpu", "--calib", calib,
             "--input-shape", "image=1,12,12,3", "--out", tmp_path / "o", "--latency-runs", 2,
             "--no-memory", "--json")
    assert r.exit_code == 0, r.stderr
    t = json.loads(r.stdout)["targets"][0]
    assert t["status"] == "ok" and t["input_shapes"]["image"] == [1, 12, 12, 3]
    assert {a["format"] for a in t["artifacts"]} == {"tflite", "onnx"}
    # without --input-shape the TFLite artifact takes H/W from the data, and says so
    r = _cli("convert", dynamic_hw_keras, "--target", "arm-cpu", "--calib", calib,
             "--format", "tflite", "--out", tmp_path / "o1", "--latency-runs", 2,
             "--no-memory", "--json")
    assert r.exit_code == 0, r.stderr
    (art,) = json.loads(r.stdout)["targets"][0]["artifacts"]
    assert any("dynamic input dims fixed" in n and "--input-shape" in n for n in art["notes"])
    assert "dynamic input dims fixed" in r.stderr
    # a shape that contradicts the data is one line naming the input
    r = _cli("convert", dynamic_hw_keras, "--target", "arm-cpu", "--calib", calib,
             "--input-shape", "image=1,12,12,4", "--out", tmp_path / "o2")
    assert r.exit_code == 2 and "image" in r.stderr and "Traceback" not in r.stderr
    r = _cli("convert", dynamic_hw_keras, "--target", "arm-cpu", "--calib", calib,
             "--input-shape", "nope=1,2", "--out", tmp_path / "o3")
    assert r.exit_code == 2 and "has no input 'nope'" in r.stderr


def test_quiet_shows_warnings_only_and_no_keep_reference(tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = _cli("convert", M.keras_file(), "--target", "arm-cpu", "--calib", M.calib_npz(),
             "--format", "tflite", "--out", out, "--latency-runs", 2, "--no-memory", "--quiet",
             "--no-keep-reference", "--keep-float", "no_such_layer")
    assert r.exit_code == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines and all(ln.startswith("edgeopt: warning: ") for ln in lines), lines
    assert any("no_such_layer" in ln for ln in lines)  # --keep-float matching nothing
    block = json.loads((out / "arm-cpu" / "manifest.json").read_text())["reference"]
    assert block["kept"] is False and block["policy"] == "never"
    assert not (out / "arm-cpu" / "reference").exists()
    r = _cli("convert", M.keras_file(), "--target", "arm-cpu", "--calib", M.calib_npz(),
             "--out", out, "--force", "--quiet", "--verbose")
    assert r.exit_code == 2 and "exclude each other" in r.stderr


def test_user_profile_op_names_and_memory_budget(tmp_path: Path) -> None:
    from edgeopt_runtime.errors import TargetError

    from edgeopt.targets import load_target, profile_from_dict

    with pytest.raises(TargetError, match="'CONV2D' is not a TFLite builtin op name; did you "
                                          "mean 'CONV_2D'"):
        profile_from_dict({"name": "x", "formats": ["tflite"],
                           "ops": {"supported": ["CONV2D"]}}, "x.toml")
    with pytest.raises(TargetError, match="memory_budget_mb"):
        profile_from_dict({"name": "x", "formats": ["tflite"], "memory_budget_mb": -1}, "x.toml")
    toml = tmp_path / "b.toml"
    toml.write_text('name = "b"\nformats = ["tflite"]\nmemory_budget_mb = 0.5\n')
    assert load_target(str(toml)).memory_budget_mb == 0.5
    out = tmp_path / "out"
    r = _cli("convert", M.keras_file(), "--target", toml, "--calib", M.calib_npz(),
             "--out", out, "--latency-runs", 2, "--json")
    assert r.exit_code == 1, r.stderr  # the artifact needs more than 0.5 MiB to run
    gates = json.loads(r.stdout)["gates"]["results"]
    (mem,) = [g for g in gates if g["gate"] == "memory_budget"]
    assert not mem["passed"] and mem["value_mib"] > 0.5 and "OVER" in mem["message"]
    assert "gate failed:" in r.stderr and (out / "b" / "model_int8.tflite").is_file()


def test_a_model_the_runtime_refuses_is_a_conversion_problem(tmp_path: Path) -> None:
    """The converter's own output refused by the runtime's checks is not called corrupt."""
    import types

    from edgeopt_runtime.errors import UnsupportedOpError

    from edgeopt.convert import _load_built

    stage = tmp_path / ".out.edgeopt-tmp-1"
    (stage / "_work").mkdir(parents=True)
    bad = stage / "arm-cpu" / "model_int8.tflite"
    bad.parent.mkdir()
    bad.write_bytes(b"TFL3" + bytes(60))
    ctx = types.SimpleNamespace(work=stage / "_work", stage=stage, out=tmp_path / "out",
                                source=types.SimpleNamespace(path=Path("model.keras")))
    with pytest.raises(UnsupportedOpError) as err:
        _load_built(ctx, bad, "tflite")
    text = str(err.value)
    assert "TFLite converter produced a tflite model that edgeopt_runtime cannot load" in text
    assert "corrupt" not in text and ".edgeopt-tmp" not in text and "model.keras" in text


def test_inspect_the_source_model(tmp_path: Path) -> None:
    r = _cli("inspect", M.keras_file(), "--target", "edgetpu", "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    (rep,) = doc["reports"]  # the Edge TPU takes TFLite int8 only
    assert rep["format"] == "tflite" and "as convert builds it" in rep["model"]
    assert rep["summary"]["verdict"].startswith("all") and "synthetic" in rep["notes"][0]
    assert {o["op"] for o in rep["ops"]} >= {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}
    r = _cli("inspect", M.keras_file(), "--target", "arm-cpu")
    assert r.exit_code == 0, r.stderr
    assert "(tflite int8, as convert builds it)" in r.stdout
    assert "(onnx int8, as convert builds it)" in r.stdout


def test_keras3_savedmodel_read_variable_says_how_to_fix_it(tmp_path: Path) -> None:
    """A Keras 3 model saved with tf.saved_model.save: TFLite calibration fails on
    READ_VARIABLE with a dynamic batch; the one line says to fix the batch, and that works."""
    import tensorflow as tf

    sm = tmp_path / "k3sm"
    tf.saved_model.save(M.keras_model(), str(sm))
    r = _cli("convert", sm, "--target", "arm-cpu", "--format", "tflite", "--calib",
             M.calib_npz(), "--out", tmp_path / "o", "--no-memory", "--latency-runs", 2)
    assert r.exit_code == 2, r.stderr  # the only artifact asked for failed: nothing written
    assert "READ_VARIABLE" in r.stderr and "--input-shape inputs=1,8,8,3" in r.stderr
    r = _cli("convert", sm, "--target", "arm-cpu", "--format", "tflite", "--calib",
             M.calib_npz(), "--out", tmp_path / "o", "--no-memory", "--latency-runs", 2,
             "--input-shape", "inputs=1,8,8,3")
    assert r.exit_code == 0, r.stderr
