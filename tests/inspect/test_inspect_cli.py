"""``edgeopt inspect``: readable table, --json document, artifact directories, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner
from edgeopt_runtime.manifest import sha256_file, write_manifest

from edgeopt.cli import main

from . import _models


def run(*args: str):  # noqa: ANN201
    return CliRunner().invoke(main, ["inspect", *args])


def test_table_shows_the_break_and_the_reason() -> None:
    res = run(str(_models.leaky_middle_int8()), "--target", "edgetpu")
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "LEAKY_RELU" in out and "not in the supported-op list" in out
    assert "graph breaks at #2 LEAKY_RELU" in out
    assert "summary: 2 of 8 ops run on the Edge TPU, 6 on the CPU" in out
    assert "parameters:" in out


def test_json_is_one_document_on_stdout() -> None:
    res = run(str(_models.supported_int8()), "--target", "mobile-gpu", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["schema"] == "edgeopt.inspect/1" and doc["target"] == "mobile-gpu"
    (report,) = doc["reports"]
    assert report["summary"]["fully_delegated"] and report["delegate"] == "gpu"


def test_target_profile_path_is_accepted(tmp_path: Path) -> None:
    from edgeopt.targets import builtin_dir

    toml = tmp_path / "mytpu.toml"
    text = (
        (builtin_dir() / "edgetpu.toml").read_text().replace('name = "edgetpu"', 'name = "mytpu"')
    )
    toml.write_text(
        text.replace('"LEAKY_RELU", ', "").replace('  "ADD",', '  "ADD", "LEAKY_RELU",')
    )
    res = run(str(_models.leaky_middle_int8()), "--target", str(toml), "--json")
    assert res.exit_code == 0, res.output
    (report,) = json.loads(res.stdout)["reports"]
    assert report["target"] == "mytpu" and report["summary"]["fully_delegated"]


def test_artifact_directory_inspects_every_model(tmp_path: Path) -> None:
    tfl = tmp_path / "model_int8.tflite"
    shutil.copy(_models.supported_int8(), tfl)
    onx = tmp_path / "model_int8.onnx"
    shutil.copy(_models.qdq_onnx()[1], onx)
    models = [
        {
            "file": p.name,
            "format": p.suffix[1:],
            "precision": "int8",
            "sha256": sha256_file(p),
            "size_bytes": p.stat().st_size,
        }
        for p in (tfl, onx)
    ]
    write_manifest(tmp_path, {"target": {"name": "arm-cpu"}, "runtime": {}, "models": models})
    res = run(str(tmp_path), "-t", "arm-cpu", "--json")
    assert res.exit_code == 0, res.output
    reports = json.loads(res.stdout)["reports"]
    assert [r["format"] for r in reports] == ["tflite", "onnx"]
    table = run(str(tmp_path), "-t", "arm-cpu")
    assert "QLinearConv" in table.stdout and "xnnpack" in table.stdout


def test_user_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    missing = run(str(tmp_path / "none.tflite"), "-t", "edgetpu")
    assert missing.exit_code == 2 and "edgeopt: error:" in missing.stderr
    assert "file not found" in missing.stderr
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"x")
    wrong = run(str(bad), "-t", "edgetpu")
    assert wrong.exit_code == 2 and ".tflite or .onnx" in wrong.stderr
    target = run(str(_models.supported_int8()), "-t", "no-such-target")
    assert target.exit_code == 2 and "unknown target" in target.stderr
    empty = run(str(tmp_path), "-t", "edgetpu")
    assert empty.exit_code == 2 and "manifest.json" in empty.stderr
