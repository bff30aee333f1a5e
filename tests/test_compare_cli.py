"""``edgeopt compare`` / ``edgeopt diff`` end to end on a trained classifier.

The classifier is the bundled example (examples/digits_cnn.keras, real UCI digits, validation
set calibration_data/digits/val.npz with labels). Without it, a tiny CNN is trained here on
seeded, learnable synthetic data (class templates plus noise). Float and int8 TFLite files are
converted here with TensorFlow directly, so these tests do not depend on ``edgeopt convert``:
a well-calibrated int8 model (calibration data as it is) and a deliberately broken one
(calibrated on inputs scaled by 0.1, so real inputs saturate the input quantizer).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from edgeopt.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "digits_cnn.keras"
CALIB = ROOT / "calibration_data" / "digits" / "calib.npz"
VAL = ROOT / "calibration_data" / "digits" / "val.npz"

tf = pytest.importorskip("tensorflow")


def _synthetic_classifier(d: Path) -> tuple[Any, np.ndarray, Path]:
    """Train a small CNN on 4 noisy 8x8 templates; returns (model, calib x, val.npz path)."""
    import keras

    rng = np.random.default_rng(0)
    templates = rng.normal(size=(4, 8, 8, 1)).astype(np.float32)

    def make(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        r = np.random.default_rng(seed)
        y = r.integers(0, 4, n)
        return (templates[y] + r.normal(scale=0.6, size=(n, 8, 8, 1))).astype(np.float32), y

    x_train, y_train = make(800, 1)
    x_val, y_val = make(300, 2)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1), name="input"),
        keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
        keras.layers.GlobalAveragePooling2D(name="gap"),
        keras.layers.Dense(4, name="logits"),
    ])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, epochs=20, batch_size=64, verbose=0)
    model.save(d / "model.keras")
    np.savez(d / "val.npz", input=x_val, labels=y_val)
    return model, x_train[:100], d / "val.npz"


def _tflite(model: Any, calib: np.ndarray | None, path: Path) -> Path:
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if calib is not None:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([calib[i : i + 1]] for i in range(len(calib)))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    path.write_bytes(conv.convert())
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import keras

    d = tmp_path_factory.mktemp("compare")
    if EXAMPLE.exists() and VAL.exists() and CALIB.exists():
        model = keras.models.load_model(EXAMPLE, compile=False)
        with np.load(CALIB) as z:
            calib = z["input"][:100]
        source, val = EXAMPLE, VAL
    else:
        model, calib, val = _synthetic_classifier(d)
        source = d / "model.keras"
    return {
        "source": source,
        "val": val,
        "float": _tflite(model, None, d / "float.tflite"),
        "int8": _tflite(model, calib, d / "int8.tflite"),
        "broken": _tflite(model, calib * 0.1, d / "broken.tflite"),
        "dir": d,
    }


def _run(*args: Any) -> Any:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_float_and_int8_accuracy_side_by_side_gates_pass(models: dict[str, Path],
                                                         tmp_path: Path) -> None:
    out = tmp_path / "rep"
    r = _run("compare", models["float"], models["int8"], "--data", models["val"], "--out", out,
             "--source", models["source"], "--layer-samples", 16,
             "--max-drop", "2", "--min-sqnr", "10", "--min-cosine", "0.99", "--json")
    assert r.exit_code == 0, r.stderr
    rep = json.loads(r.stdout)  # stdout holds exactly one JSON document
    acc = rep["task"]["metrics"]["accuracy"]
    assert acc["float"] >= 0.85 and acc["quantized"] >= 0.85
    assert abs(acc["drop"]) <= 0.02 and acc["ci_low"] <= acc["drop"] <= acc["ci_high"]
    assert rep["task"]["num_samples"] == rep["data"]["count"] == rep["data"]["labels"]["count"]
    assert rep["gates"]["passed"] and len(rep["gates"]["results"]) == 3
    drift = rep["drift"][0]["metrics"]
    assert drift["sqnr_db"] > 20 and drift["top1_agreement"] > 0.97
    assert rep["drift"][0]["kind"] == "classifier"
    # the gates read the worst sample by default; a pooled SQNR of > 20 dB hides samples
    # below it, which --gate-on min names and --gate-on mean lets pass
    assert drift["sqnr_db_min"] <= drift["sqnr_db_p5"] <= drift["sqnr_db_median"]
    if drift["sqnr_db_min"] < 20:
        strict = _run("compare", models["float"], models["int8"], "--data", models["val"],
                      "--out", tmp_path / "strict", "--no-per-layer", "--min-sqnr", "20")
        assert strict.exit_code == 1 and "samples below 20 dB" in strict.stderr
        mean = _run("compare", models["float"], models["int8"], "--data", models["val"],
                    "--out", tmp_path / "mean", "--no-per-layer", "--min-sqnr", "20",
                    "--gate-on", "mean")
        assert mean.exit_code == 0, mean.stderr
    # latency: the evaluator's one way (interleaved timed runs on one feed), not per sample
    assert rep["latency"]["reference"]["runs"] == rep["latency"]["candidate"]["runs"] == 50
    assert rep["data"]["count"] == 300 and rep["data"]["max_samples"] is None  # all, streamed
    pl = rep["per_layer"]
    assert pl["available"] and pl["method"] == "tflite-quantization-debugger"
    assert pl["num_samples"] == 16 and all(isinstance(e["sqnr_db"], float | str)
                                           for e in pl["layers"])
    assert any(e["layer"] for e in pl["layers"])  # names mapped back to Keras layers
    html = (out / "report.html").read_text()
    assert f"{100 * acc['float']:.2f}%" in html and f"{100 * acc['quantized']:.2f}%" in html
    assert "Gates: PASSED" in html
    md = (out / "report.md").read_text()
    assert "| accuracy |" in md and "**Gates: PASSED**" in md


def test_gates_fail_on_broken_model_and_report_is_still_written(models: dict[str, Path],
                                                                tmp_path: Path) -> None:
    out = tmp_path / "rep"
    r = _run("compare", models["float"], models["broken"], "--data", models["val"], "--out", out,
             "--no-per-layer", "--max-drop", "5", "--min-sqnr", "10")
    assert r.exit_code == 1
    rep = json.loads((out / "report.json").read_text())
    acc = rep["task"]["metrics"]["accuracy"]
    assert acc["drop"] > 0.2 and acc["significant"]
    assert f"over by {100 * acc['drop'] - 5:.2f} points" in r.stderr
    assert "edgeopt: gate failed: max-drop: accuracy drop" in r.stderr
    assert "edgeopt: gate failed: min-sqnr" in r.stderr
    assert not rep["gates"]["passed"]
    assert "Gates: FAILED" in (out / "report.html").read_text()
    # The same model passes a budget it fits: gates decide, not the model.
    r = _run("compare", models["float"], models["broken"], "--data", models["val"], "--out",
             tmp_path / "rep2", "--no-per-layer", "--max-drop", "100%")
    assert r.exit_code == 0, r.stderr
    # And a relative budget below the real relative drop fails.
    rel = 100 * acc["drop"] / acc["float"]
    r = _run("compare", models["float"], models["broken"], "--data", models["val"], "--out",
             tmp_path / "rep3", "--no-per-layer", "--max-drop", f"{rel - 1:.1f}%")
    assert r.exit_code == 1 and "% of float" in r.stderr


def test_diff_shows_the_regression(models: dict[str, Path], tmp_path: Path) -> None:
    for name in ("int8", "broken"):
        r = _run("compare", models["float"], models[name], "--data", models["val"],
                 "--out", tmp_path / name, "--no-per-layer")
        assert r.exit_code == 0
    r = _run("diff", tmp_path / "int8", tmp_path / "broken" / "report.json")
    assert r.exit_code == 0
    assert "accuracy: quantized" in r.stdout and "WORSE" in r.stdout
    r = _run("diff", tmp_path / "int8", tmp_path / "broken", "--json", "--fail-on-regression")
    assert r.exit_code == 1
    d = json.loads(r.stdout)
    worse = {c["what"] for c in d["entries"][0]["changes"] if c["worse"]}
    assert {"accuracy: quantized", "accuracy: drop"} <= worse


def test_tflite_without_source_matches_the_two_files(models: dict[str, Path],
                                                      tmp_path: Path) -> None:
    r = _run("compare", models["float"], models["int8"], "--data", models["val"], "--out",
             tmp_path, "--json", "--layer-samples", 8)
    assert r.exit_code == 0
    rep = json.loads(r.stdout)
    pl = rep["per_layer"]
    assert pl["available"] and pl["method"] == "tflite-tensor-matching"
    assert pl["num_samples"] == 8 and pl["layers"][0]["rank"] == 1
    assert all(e["keep_float"].startswith("^") and e["suggestion"] for e in pl["layers"])
    assert rep["validation"]["status"] == "ok" and rep["validation"]["checked"]["scales"] > 0


def _labels_and_data_files(models: dict[str, Path], d: Path) -> dict[str, Path]:
    with np.load(models["val"]) as z:
        x = z["input"]
    np.save(d / "short_labels.npy", np.zeros(len(x) - 3, np.int64))
    np.savez(d / "nolabels.npz", input=x)
    np.savez(d / "wrong_shape.npz", input=np.zeros((5, 3, 3, 1), np.float32))
    return {"short": d / "short_labels.npy", "nolabels": d / "nolabels.npz",
            "wrong": d / "wrong_shape.npz"}


@pytest.mark.parametrize("case, expect", [
    ("labels", "labels but"),
    ("no-labels-drop", "--max-drop needs labels"),
    ("bad-drop", "--max-drop: expected a number"),
    ("wrong-data", "wrong_shape.npz: input 'input' expects float32"),
    ("signature", "does not match candidate"),
    ("missing", "no such file"),
])
def test_bad_input_exits_2_with_one_line(models: dict[str, Path], tmp_path: Path, case: str,
                                         expect: str) -> None:
    f = _labels_and_data_files(models, tmp_path)
    base = ["compare", models["float"], models["int8"], "--data", models["val"], "--out",
            tmp_path / "rep", "--no-per-layer"]
    args = {
        "labels": base + ["--labels", f["short"]],
        "no-labels-drop": base[:4] + [f["nolabels"]] + base[5:] + ["--max-drop", "1"],
        "bad-drop": base + ["--max-drop", "abc"],
        "wrong-data": base[:4] + [f["wrong"]] + base[5:],
        "signature": ["compare", models["float"], _other_signature(tmp_path)] + base[3:],
        "missing": ["compare", tmp_path / "nope.tflite"] + base[2:],
    }[case]
    r = _run(*args)
    assert r.exit_code == 2, (r.stdout, r.stderr)
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("edgeopt: error:")]
    assert len(errors) == 1 and expect in errors[0], r.stderr
    assert "Traceback" not in r.stderr


def _other_signature(d: Path) -> Path:
    import keras

    m = keras.Sequential([keras.Input((5, 5, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    return _tflite(m, None, d / "other.tflite")


def test_onnx_qdq_per_layer_from_the_two_files(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    from tests.test_layers import _data, _onnx_float_model, _samples

    float_path, qdq_path = tmp_path / "float.onnx", tmp_path / "qdq.onnx"
    _onnx_float_model(str(float_path))
    x, calib = _data(40, seed=3)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(_samples(calib))

        def get_next(self) -> dict | None:
            return next(self._it, None)

    quantize_static(str(float_path), str(qdq_path), Reader(), quant_format=QuantFormat.QDQ)
    np.savez(tmp_path / "data.npz", x=x)
    r = _run("compare", float_path, qdq_path, "--data", tmp_path / "data.npz", "--out",
             tmp_path / "rep", "--json")
    assert r.exit_code == 0, r.stderr
    rep = json.loads(r.stdout)
    pl = rep["per_layer"]
    assert pl["available"] and pl["method"] == "onnx-activation-matching"
    assert pl["layers"][0]["layer"] == "model/fragile/MatMul"
    assert "Per-layer SQNR" in (tmp_path / "rep" / "report.html").read_text()


def test_labels_file_follows_the_num_subset(models: dict[str, Path], tmp_path: Path) -> None:
    with np.load(models["val"]) as z:
        np.save(tmp_path / "labels.npy", z["labels"])
    reps = []
    for extra in ([], ["--labels", tmp_path / "labels.npy"]):
        r = _run("compare", models["float"], models["int8"], "--data", models["val"],
                 "--num", 50, "--seed", 7, "--out", tmp_path / f"r{len(extra)}",
                 "--no-per-layer", "--json", *extra)
        assert r.exit_code == 0, r.stderr
        reps.append(json.loads(r.stdout))
    a, b = (rep["task"]["metrics"]["accuracy"] for rep in reps)
    # Misaligned labels would put a ~97% accurate model near chance.
    assert a == b and a["float"] > 0.85 and reps[0]["data"]["count"] == 50
    rows = reps[0]["data"]["rows"]
    assert len(rows) == 50 and rows == sorted(rows) and max(rows) < 300
