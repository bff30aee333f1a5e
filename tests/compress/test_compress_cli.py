"""``edgeopt compress`` on the command line: one JSON document on stdout, a model that
``edgeopt convert`` takes, and one-line errors with exit code 2 that leave nothing behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeopt.cli import main

from . import _models as M


def _run(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["compress", *map(str, args)], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_json_report_and_a_model_convert_takes(tmp_path: Path) -> None:
    out = tmp_path / "c"
    cmd = [sys.executable, "-m", "edgeopt.cli", "compress", str(M.trained_cnn_file()),
           "--data", str(M.train_npz()), "--val", str(M.val_npz()), "--prune-channels", "0.25",
           "--prune", "0.5", "--cluster", "8", "--distill", "--epochs", "1",
           "--format", "tflite", "--out", str(out), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report == json.loads((out / "report.json").read_text())
    assert report["schema"] == "edgeopt.compress/1" and report["kind"] == "compress"
    assert (out / "report.md").read_text().startswith("# edgeopt compress report")
    assert "<svg" in (out / "report.html").read_text()
    assert report["after"]["macs"]["total"] < report["before"]["macs"]["total"]
    row = report["measured"]["artifacts"][0]
    assert row["format"] == "tflite" and row["size"]["gzip"]["after"] < row["size"]["gzip"][
        "before"]
    assert row["latency"]["speedup_cpu"] > 0
    assert row["accuracy"]["after_without_distillation"] is not None
    assert "off on this host" in report["sparsity_preflight"]["verdict"] or report[
        "sparsity_preflight"]["this_host"]["enabled"]
    assert report["binarize"]["available"] is False
    assert list(out.iterdir()) and not (out / "_work").exists()
    import edgeopt

    conv = edgeopt.convert(out / "model.keras", "arm-cpu", M.train_npz(), formats="tflite",
                           out=tmp_path / "conv", latency_runs=2, num_calib=8)
    assert conv.artifacts[0]["precision"] == "int8"


@pytest.mark.parametrize("args, message", [
    (["--prune", "1.0"], "--prune must be a fraction in [0, 1)"),
    (["--prune", "-0.1"], "--prune must be a fraction in [0, 1)"),
    (["--prune-channels", "1"], "--prune-channels must be a fraction"),
    (["--cluster", "1"], "--cluster must be an integer >= 2"),
    ([], "nothing to do"),
    (["--qat", "--epochs", "0"], "--qat needs fine-tuning"),
    (["--binarize"], "binarisation is not available: larq 0.14 needs numpy<2"),
    (["--prune", "0.5", "--skip", "("], "--skip '(' is not a valid regular expression"),
])
def test_bad_options_are_one_line_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "c"
    code, stdout, stderr = _run([M.trained_cnn_file(), "--data", M.train_npz(), *args,
                                 "--out", out])
    assert code == 2 and message in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1 and not stdout and not out.exists()


def test_missing_data_is_refused(tmp_path: Path) -> None:
    code, _, stderr = _run([M.trained_cnn_file(), "--prune", "0.5", "--out", tmp_path / "c"])
    assert code == 2 and "no training data: pass --data PATH" in stderr


def test_unlabelled_data_without_distill_is_refused(tmp_path: Path) -> None:
    code, _, stderr = _run([M.trained_cnn_file(), "--data", M.train_npz(labels=False),
                            "--prune", "0.5", "--out", tmp_path / "c"])
    assert code == 2 and "has no labels; pass --distill" in stderr


def test_model_without_prunable_layers(tmp_path: Path) -> None:
    import keras

    inp = keras.Input(M.HWC, name="image")
    out = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(inp))
    path = tmp_path / "noweights.keras"
    keras.Model(inp, out).save(path)
    code, _, stderr = _run([path, "--data", M.train_npz(), "--cluster", "4", "--epochs", "0",
                            "--out", tmp_path / "c"])
    assert code == 2 and "no prunable layers" in stderr


def test_lambda_layers_are_refused(tmp_path: Path) -> None:
    import keras

    inp = keras.Input(M.HWC, name="image")
    x = keras.layers.Lambda(lambda t: t * 2.0)(inp)
    out = keras.layers.Dense(2)(keras.layers.Flatten()(x))
    path = tmp_path / "lambda.keras"
    keras.Model(inp, out).save(path)
    code, _, stderr = _run([path, "--data", M.train_npz(), "--prune", "0.5",
                            "--out", tmp_path / "c"])
    assert code == 2 and "Lambda" in stderr and "--trust-model" in stderr


def test_data_that_does_not_fit_the_model(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, image=np.zeros((4, 5, 5, 3), np.float32))
    code, _, stderr = _run([M.trained_cnn_file(), "--data", bad, "--prune", "0.5",
                            "--out", tmp_path / "c"])
    assert code == 2 and "bad.npz" in stderr and "expects" in stderr
