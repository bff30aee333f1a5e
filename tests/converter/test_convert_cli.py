"""``edgeopt convert`` on the command line: JSON on stdout, exit code 2 and nothing under OUT on
bad input, and the bundled example converting for all three targets."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import edgeopt_runtime as rt
import numpy as np
import pytest
from click.testing import CliRunner, Result

from edgeopt.cli import main
from tests._console import problem_lines

from . import _models as M

REPO = Path(__file__).resolve().parents[2]


def _cli(args: list[str], monkeypatch: pytest.MonkeyPatch) -> Result:
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_json_is_the_only_thing_on_stdout(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "edgeopt.cli", "convert", str(M.keras_file()),
           "--target", "arm-cpu", "--calib", str(M.calib_npz()), "--num-calib", "8",
           "--calib-method", "percentile", "--keep-float", "fc_1", "--out", str(out),
           "--latency-runs", "2", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)  # the whole stdout is one JSON document
    assert report["kind"] == "convert" and report == json.loads((out / "report.json").read_text())
    assert report["settings"]["keep_float"] == ["fc_1"]
    by_format = {a["format"]: a for a in report["targets"][0]["artifacts"]}
    assert by_format["onnx"]["calibration_method"] == "percentile"
    assert by_format["tflite"]["calibration_method"] == "minmax"  # TFLite: min/max only
    assert any("min/max only" in n for n in report["notes"])
    assert by_format["tflite"]["details"]["keep_float"]
    methods = json.loads((out / "arm-cpu" / "manifest.json").read_text())["calibration"]
    assert methods["methods"] == {"model_int8.tflite": "minmax", "model_int8.onnx": "percentile"}
    # progress lines also when stderr is not a terminal, but nothing else there
    assert "arm-cpu: tflite int8: converting: done" in proc.stderr
    assert all(ln.startswith("edgeopt: ") for ln in proc.stderr.splitlines()), proc.stderr


def test_sigint_removes_the_staging_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # Many latency runs (the maximum) keep the conversion busy long enough to be interrupted.
    cmd = [sys.executable, "-m", "edgeopt.cli", "convert", str(M.keras_file()), "--target",
           "arm-cpu", "--calib", str(M.calib_npz()), "--out", str(out),
           "--latency-runs", "100000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not list(tmp_path.glob(".out.edgeopt-tmp-*")) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            time.sleep(0.05)
        assert list(tmp_path.glob(".out.edgeopt-tmp-*")), "staging folder never appeared"
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted by SIGINT" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no OUT, no staging folder


def _bad(tmp: Path) -> dict[str, tuple[list[str], str]]:
    keras, calib = str(M.keras_file()), str(M.calib_npz())
    nan = tmp / "nan.npz"
    np.savez(nan, image=np.full((2, *M.HWC), np.nan, np.float32))
    shape = tmp / "shape.npz"
    np.savez(shape, image=np.zeros((2, 4, 4, 3), np.float32))
    corrupt = tmp / "m.onnx"
    corrupt.write_bytes(b"\x00garbage")
    toml = tmp / "t.toml"
    toml.write_text('name = "t"\nformats = ["tflite"]\ncolour = "red"\n')
    full = tmp / "full"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    cos_calib = tmp / "x.npz"
    np.savez(cos_calib, x=M.images((4,), 2, seed=1))
    base = ["--target", "arm-cpu", "--calib", calib]
    return {
        "missing model": (["nope.keras", *base], "no such file"),
        "corrupt model": ([str(corrupt), *base], "not a readable ONNX model"),
        "unknown target": ([keras, "--target", "gpu9", "--calib", calib], "unknown target"),
        "bad toml": ([keras, "--target", str(toml), "--calib", calib], "unknown key(s) colour"),
        "nan calib": ([keras, "--target", "arm-cpu", "--calib", str(nan)], "NaN"),
        "shape calib": ([keras, "--target", "arm-cpu", "--calib", str(shape)], "expects"),
        "no calib": ([keras, "--target", "arm-cpu"], "--allow-synthetic"),
        "out not empty": ([keras, *base, "--out", str(full)], "--force"),
        "keep-float edgetpu": ([keras, "--target", "edgetpu", "--calib", calib,
                                "--keep-float", "fc"], "float_fallback = false"),
        "forbidden op": ([str(M.cos_savedmodel_dir()), "--target", "edgetpu", "--calib",
                          str(cos_calib)], "COS"),
        "rewrite keras": ([keras, "--target", "edgetpu", "--calib", calib, "--rewrite",
                           "edgetpu"], "rewrites ONNX graphs"),
    }


def test_bad_input_exit_code_2_one_line_nothing_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, (args, fragment) in _bad(tmp_path).items():
        out = tmp_path / f"out-{name.replace(' ', '-')}"
        if "--out" not in args:
            args = [*args, "--out", str(out)]
        result = _cli(["convert", *args], monkeypatch)
        assert result.exit_code == 2, (name, result.stdout, result.stderr)
        lines = problem_lines(result.stderr)
        assert len(lines) == 1 and lines[0].startswith("edgeopt: error: "), (name, lines)
        assert fragment in lines[0], (name, lines[0])
        assert result.stdout == ""
        assert not out.exists(), name
    assert (tmp_path / "full" / "keep.txt").exists()
    assert not list(tmp_path.glob(".*edgeopt-*"))


def test_image_folder_calibration_with_preprocess(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    images = REPO / "calibration_data" / "digits" / "images"
    result = _cli(["convert", str(M.keras_file()), "--target", "arm-cpu", "--format", "onnx",
                   "--calib", str(images), "--preprocess", "resize=8,8", "--preprocess",
                   "color=rgb", "--preprocess", "scale=1/255", "--num-calib", "10",
                   "--latency-runs", "1", "--out", str(out)], monkeypatch)
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((out / "arm-cpu" / "manifest.json").read_text())
    assert manifest["calibration"]["format"] == "image-dir"
    assert manifest["calibration"]["count"] == 10
    pre = manifest["preprocessing"]
    assert pre["resize"] == [8, 8] and pre["color"] == "rgb"
    assert pre["scale"] == pytest.approx(1 / 255)
    bad = _cli(["convert", str(M.keras_file()), "--target", "arm-cpu", "--calib", str(images),
                "--preprocess", "mean=abc", "--out", str(tmp_path / "bad")], monkeypatch)
    assert bad.exit_code == 2 and "--preprocess mean='abc'" in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_usage_errors_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    for args in (["--format", "coreml"], ["--num-calib", "0"], ["--calib-method", "kl"]):
        result = _cli(["convert", str(M.keras_file()), "--target", "arm-cpu", *args],
                      monkeypatch)
        assert result.exit_code == 2, args


def _bundled_example() -> Path:
    found = sorted((REPO / "examples").glob("digits_cnn.*"))
    assert found, "the bundled example examples/digits_cnn.* is missing"
    return found[0]


def test_bundled_example_converts_for_all_three_targets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = REPO / "calibration_data" / "digits"
    out = tmp_path / "out"
    result = _cli(["convert", str(_bundled_example()), "--target", "arm-cpu", "--target",
                   "edgetpu", "--target", "mobile-gpu", "--calib", str(data / "calib.npz"),
                   "--val", str(data / "val.npz"), "--out", str(out), "--latency-runs", "5"],
                  monkeypatch)
    assert result.exit_code == 0, result.stderr
    assert "mobile-gpu/model_float16.tflite" in result.stdout and "wrote" in result.stdout
    report = json.loads((out / "report.json").read_text())
    arts = [a for t in report["targets"] for a in t["artifacts"]]
    assert len(arts) == 5
    for art in arts:
        acc = art["task"]["metrics"]["accuracy"]
        assert acc["float"] > 0.9  # a real classifier on real digits
        assert acc["drop"] <= 0.02, art["path"]  # int8 costs at most 2 accuracy points here
    for target in ("arm-cpu", "edgetpu", "mobile-gpu"):
        model = rt.load(out / target)
        assert model.inputs[0].shape[1:] == (16, 16, 1)
