"""Issue 13 end to end on the bundled example (a real digits classifier): progress lines when
stderr is not a terminal, warnings on stderr once, ``--log-file``, ``--max-eval``, the kept float
reference and ``compare`` against the source model or against nothing, memory headline, and a
noise-proof ``edgeopt diff`` (two runs of the same artifacts: 20 of 20 pass).

One ``edgeopt convert`` subprocess (module fixture, ~15 s) serves most tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edgeopt.cli import main

pytest.importorskip("tensorflow")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "digits_cnn.keras"
CALIB = ROOT / "calibration_data" / "digits" / "calib.npz"
VAL = ROOT / "calibration_data" / "digits" / "val.npz"
MAX_EVAL = 64


def _run(*args: Any) -> Any:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("workday")
    out, log = d / "out", d / "convert.log"
    cmd = [sys.executable, "-m", "edgeopt.cli", "convert", str(EXAMPLE), "--target", "arm-cpu",
           "--calib", str(CALIB), "--val", str(VAL), "--max-eval", str(MAX_EVAL),
           "--latency-runs", "20", "--out", str(out), "--log-file", str(log)]
    # stderr is a pipe (not a terminal): plain progress lines, here every 20 ms
    env = {**os.environ, "EDGEOPT_PROGRESS_INTERVAL": "0.02"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"dir": d, "out": out, "log": log, "stderr": proc.stderr, "stdout": proc.stdout,
            "report": json.loads((out / "report.json").read_text())}


def _artifact(report: dict[str, Any], fmt: str) -> dict[str, Any]:
    return next(a for a in report["targets"][0]["artifacts"] if a["format"] == fmt)


def test_progress_lines_without_a_terminal(converted: dict[str, Any]) -> None:
    err = converted["stderr"]
    assert "\r" not in err  # no bar redraws in a log
    assert "edgeopt: arm-cpu: tflite int8: calibrating: done, 200 samples in" in err
    assert "edgeopt: arm-cpu: onnx int8: converting: done," in err
    assert f"edgeopt: arm-cpu: tflite int8: validating: done, {MAX_EVAL} samples in" in err
    assert "edgeopt: arm-cpu: measuring memory: done, 2 models in" in err
    # periodic lines while a step runs: done/total, percent, elapsed and ETA
    periodic = [ln for ln in err.splitlines() if "%), " in ln and "ETA" in ln]
    assert periodic, err[-3000:]
    assert all(ln.startswith("edgeopt: ") and " elapsed, ETA " in ln for ln in periodic)
    assert "Traceback" not in err and "INFO:" not in err


def test_every_report_warning_is_on_stderr_once(converted: dict[str, Any]) -> None:
    notes = converted["report"]["notes"]
    assert notes  # e.g. the pre-flight's SOFTMAX on the CPU
    for note in notes:
        assert converted["stderr"].count(f"edgeopt: warning: {note}\n") == 1, note


def test_log_file_has_the_stages_and_the_frameworks_output(converted: dict[str, Any]) -> None:
    log = converted["log"].read_text()
    assert "arm-cpu: tflite int8: converting: started" in log
    assert "--- output of" in log  # the converters' own output goes here, not to the terminal
    assert "--- output of" not in converted["stderr"]


def test_max_eval_and_memory_and_kept_reference(converted: dict[str, Any]) -> None:
    report, out = converted["report"], converted["out"]
    assert report["settings"]["max_eval"] == MAX_EVAL
    assert report["data"]["count"] == MAX_EVAL and report["data"]["max_samples"] == MAX_EVAL
    for fmt in ("tflite", "onnx"):
        mem = _artifact(report, fmt)["memory"]
        assert mem["error"] is None and 0 < mem["peak_working_set_bytes"] < 2**30
        assert mem["after_load_bytes"] <= mem["peak_working_set_bytes"]
    assert "memory: peak working set" in converted["stdout"]
    assert "peak working set" in (out / "report.md").read_text()
    manifest = json.loads((out / "arm-cpu" / "manifest.json").read_text())
    block = manifest["reference"]
    assert block["kept"] and block["policy"] == "auto"
    files = {m["format"]: m["file"] for m in block["models"]}
    assert files == {"tflite": "reference/float32.tflite", "onnx": "reference/float32.onnx"}
    # not a model the runtime (or a deploy bundle) would pick
    assert all(not m["file"].startswith("reference/") for m in manifest["models"])
    for fmt in ("tflite", "onnx"):
        assert _artifact(report, fmt)["float_sha256"] == next(
            m["sha256"] for m in block["models"] if m["format"] == fmt)


def _drift(report: dict[str, Any]) -> dict[str, float]:
    return report["drift"][0]["metrics"]


def test_compare_against_the_keras_source(converted: dict[str, Any], tmp_path: Path) -> None:
    r = _run("compare", EXAMPLE, converted["out"] / "arm-cpu", "--data", VAL, "--max-eval",
             MAX_EVAL, "--no-per-layer", "--latency-runs", 5, "--out", tmp_path, "--json")
    assert r.exit_code == 0, r.stderr
    rep = json.loads(r.stdout)
    ref = rep["models"]["reference"]
    assert ref["path"] == str(EXAMPLE)
    assert any("byte-identical to the float model" in n for n in ref["notes"])
    # the same artifact, reference and samples as convert measured: the same drift numbers
    want = _artifact(converted["report"], "tflite")["drift"][0]["metrics"]
    assert _drift(rep)["sqnr_db"] == pytest.approx(want["sqnr_db"], rel=1e-9)
    assert rep["data"]["count"] == MAX_EVAL


def test_compare_with_the_kept_reference(converted: dict[str, Any], tmp_path: Path) -> None:
    r = _run("compare", converted["out"] / "arm-cpu", "--format", "onnx", "--data", VAL,
             "--max-eval", MAX_EVAL, "--no-per-layer", "--latency-runs", 5, "--out", tmp_path,
             "--json")
    assert r.exit_code == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["models"]["candidate"]["format"] == "onnx"
    assert rep["models"]["reference"]["path"].endswith("reference/float32.onnx")
    want = _artifact(converted["report"], "onnx")["drift"][0]["metrics"]
    assert _drift(rep)["sqnr_db"] == pytest.approx(want["sqnr_db"], rel=1e-9)


def test_compare_without_a_kept_reference_says_what_to_do(converted: dict[str, Any],
                                                          tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(converted["out"] / "arm-cpu", old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["reference"]  # as written before edgeopt kept references
    (old / "manifest.json").write_text(json.dumps(manifest))
    r = _run("compare", old, "--data", VAL, "--out", tmp_path / "rep")
    assert r.exit_code == 2
    assert "holds no float tflite reference" in r.stderr
    assert f"edgeopt compare {EXAMPLE} {old}" in r.stderr and "Traceback" not in r.stderr
    # a tampered kept reference is refused (sha256), not measured against
    shutil.rmtree(old)
    shutil.copytree(converted["out"] / "arm-cpu", old)
    ref = old / "reference" / "float32.tflite"
    ref.write_bytes(ref.read_bytes()[:-1] + b"\x00")
    r = _run("compare", old, "--data", VAL, "--out", tmp_path / "rep")
    assert r.exit_code == 2 and "sha256" in r.stderr


def _same_artifact_runs(converted: dict[str, Any], tmp_path: Path, runs: int) -> None:
    from edgeopt.commands.diff import diff_reports
    from edgeopt.compare import run_compare

    reports = [run_compare(None, converted["out"] / "arm-cpu", VAL, max_eval=16,
                           latency_runs=20, per_layer=False, isolate=False).to_dict()
               for _ in range(runs + 1)]
    speedups = [r["latency"]["speedup_p50"] for r in reports]
    for old, new in zip(reports, reports[1:], strict=False):
        d = diff_reports(old, new)
        assert d["regressions"] == 0, d
        assert d["entries"][0]["artifact_changed"] is False
    paths = []
    for i in (0, 1):
        paths.append(tmp_path / f"r{i}.json")
        paths[-1].write_text(json.dumps(reports[i]))
    r = _run("diff", *paths, "--fail-on-regression")
    assert r.exit_code == 0, r.stdout
    print("speedup p50 over 21 runs of the same artifact:", min(speedups), max(speedups))


def test_diff_of_runs_of_the_same_artifacts_never_regresses(converted: dict[str, Any],
                                                            tmp_path: Path) -> None:
    _same_artifact_runs(converted, tmp_path, 3)


@pytest.mark.slow
def test_diff_of_two_runs_of_the_same_artifacts_passes_20_of_20(converted: dict[str, Any],
                                                                 tmp_path: Path) -> None:
    """Done-when of issue 13: `diff` on two runs of the same artifacts passes 20 of 20."""
    _same_artifact_runs(converted, tmp_path, 20)
