"""``edgeopt convert`` and the targets' accelerators: the pre-flight result per artifact, the
Edge TPU compile step (against a fake ``edgetpu_compiler`` that prints the real tool's log), the
static batch of 1 for the Edge TPU, host-CPU timing notes and ``--strict``."""

from __future__ import annotations

import functools
import json
import os
import shutil
import stat
import sys
from pathlib import Path

import edgeopt_runtime as rt
import pytest
from click.testing import CliRunner, Result
from edgeopt_runtime.manifest import read_manifest, sha256_file
from edgeopt_runtime.model import edgetpu_available, gpu_delegate_available

import edgeopt
from edgeopt import accelerators as acc
from edgeopt.accelerators import edgetpu as tpu
from edgeopt.accelerators import preflight as pfl
from edgeopt.cli import main
from edgeopt.convert import ConvertReport
from edgeopt.inspect import preflight
from edgeopt.inspect import report as R
from edgeopt.inspect.tflite_graph import read_tflite
from edgeopt.targets import load_target
from tests.inspect.test_edgetpu import FAKE, LOG_INTERNAL

from . import _models as M

NUM_CALIB = 8
COMPILER_VERSION = "16.0.384591198"

# edgetpu_compiler 16 -s output for the tiny Keras model (M.keras_model, 8 ops), in the layout
# of the real tool (see tests/inspect/test_edgetpu.py for the sources).
_HEAD = f"""Edge TPU Compiler version {COMPILER_VERSION}
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 250 ms.

Input model: {{model}}
Input size: 4.27KiB
Output model: {{out}}/{{stem}}_edgetpu.tflite
Output size: 40.02KiB
On-chip memory used for caching model parameters: 3.25KiB
On-chip memory remaining for caching model parameters: 7.98MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 8
Operation log: {{out}}/{{stem}}_edgetpu.log
"""
_TABLE = """
Operator                       Count      Status

QUANTIZE                       2          Mapped to Edge TPU
CONV_2D                        1          Mapped to Edge TPU
DEPTHWISE_CONV_2D              1          Mapped to Edge TPU
MEAN                           1          Mapped to Edge TPU
FULLY_CONNECTED                2          Mapped to Edge TPU
SOFTMAX                        1          {softmax}
Compilation child process completed within timeout period.
Compilation succeeded!
"""
LOG_ALL_MAPPED = _HEAD + _TABLE.format(softmax="Mapped to Edge TPU")
LOG_SOFTMAX_ON_CPU = (
    _HEAD
    + "Number of operations that will run on Edge TPU: 7\n"
    + "Number of operations that will run on CPU: 1\n"
    + _TABLE.format(
        softmax="Operation is otherwise supported, but not mapped due to some unspecified "
        "limitation"
    )
)


@functools.cache
def leaky_keras_file() -> Path:
    """Conv -> LeakyReLU -> Conv -> GAP -> Dense: LEAKY_RELU has an int8 TFLite kernel but is
    not on the Edge TPU's list, so it sits in the middle of an otherwise mappable graph."""
    import keras

    keras.utils.set_random_seed(4)
    inp = keras.Input(M.HWC, name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_a")(inp)
    x = keras.layers.LeakyReLU(negative_slope=0.1, name="leaky")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_b")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(M.CLASSES, activation="softmax", name="probs")(x)
    path = M.root() / "leaky.keras"
    keras.Model(inp, out).save(path)
    return path


def _path_without_compiler() -> str:
    """This PATH minus any folder that holds a real edgetpu_compiler."""
    dirs = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(d for d in dirs if not (Path(d) / tpu.COMPILER_NAME).exists())


@pytest.fixture
def no_compiler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", _path_without_compiler())


@pytest.fixture
def fake_compiler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """Put a fake edgetpu_compiler first on PATH; ``use(log, rc)`` sets what it prints."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / tpu.COMPILER_NAME
    exe.write_text(FAKE.format(python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{_path_without_compiler()}")

    def use(log: str, rc: int = 0) -> None:
        f = tmp_path / "log.txt"
        f.write_text(log)
        monkeypatch.setenv("FAKE_LOG", str(f))
        monkeypatch.setenv("FAKE_RC", str(rc))

    return use


def _convert(model: Path, targets: list[str], out: Path, **kwargs: object) -> ConvertReport:
    return edgeopt.convert(
        model, targets, M.calib_npz(), out=out, num_calib=NUM_CALIB, latency_runs=1, **kwargs
    )


def _cli(args: list[str]) -> Result:
    return CliRunner().invoke(main, args, catch_exceptions=False)


def _cli_args(model: Path, out: Path, *extra: str) -> list[str]:
    return ["convert", str(model), "--target", "edgetpu", "--calib", str(M.calib_npz()),
            "--num-calib", str(NUM_CALIB), "--latency-runs", "1", "--out", str(out), *extra]


def _artifact(report: dict, target: str, precision: str = "int8") -> dict:
    return next(a for t in report["targets"] if t["name"] == target for a in t["artifacts"]
                if a["precision"] == precision)


@functools.cache
def _supported_report() -> ConvertReport:
    """The fully supported tiny model for the Edge TPU and the mobile GPU, no compiler."""
    saved = os.environ["PATH"]
    os.environ["PATH"] = _path_without_compiler()
    try:
        return _convert(M.keras_file(), ["edgetpu", "mobile-gpu"], M.root() / "out_targets",
                        strict=True)  # all on the accelerators: strict does not raise
    finally:
        os.environ["PATH"] = saved


# ------------------------------------------------------------------ fully supported model


def test_supported_model_is_fully_on_the_edge_tpu_with_static_batch_one() -> None:
    report = _supported_report()
    art = _artifact(report.data, "edgetpu")
    pf = art["preflight"]
    assert pf["schema"] == "edgeopt.inspect/1" and pf["delegate"] == "edgetpu"
    assert pf["summary"]["fully_delegated"] and pf["summary"]["first_blocking_op"] is None
    part = pf["partition"]
    assert part["subgraphs"] == 1 and part["cpu_op_count"] == 0
    assert part["tpu_op_count"] == pf["ops_total"] == len(pf["ops"]) >= 8
    assert part["first_unmapped_op"] is None and part["fits_on_chip"]
    assert part["parameter_bytes"] > 0
    assert all(o["runs_on"] == "edgetpu" and "inputs" not in o for o in pf["ops"])
    assert pf["ops_listed"] == "all" and "edgeopt inspect" in pf["full_report"]
    # The Keras model has a dynamic batch; the Edge TPU artifact has batch 1, nothing dynamic.
    assert M.keras_model().inputs[0].shape[0] is None
    graph = read_tflite(report.out / art["path"])
    for t in (*graph.inputs, *graph.outputs):
        assert t.shape_signature[0] == 1 and -1 not in t.shape_signature, t
    assert not any(t.is_dynamic for t in graph.tensors)
    assert art["io"]["inputs"][0]["shape"] == [1, *M.HWC]


def _md_section(md: str, title: str, sub: str) -> str:
    """The ``### sub`` part of the ``## title`` section of a Markdown report."""
    part = md.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    return part.split(f"\n### {sub}\n", 1)[1].split("\n### ", 1)[0]


def test_missing_compiler_is_said_plainly_and_the_prediction_shown() -> None:
    report = _supported_report()
    art = _artifact(report.data, "edgetpu")
    comp = art["edgetpu_compiler"]
    assert comp["available"] is False and comp["status"] == "not_available"
    assert comp["message"] == (
        "edgetpu_compiler not found on PATH: showing the pre-flight prediction only"
    )
    assert [m.file for m in read_manifest(report.out / "edgetpu").models] == ["model_int8.tflite"]
    md = (report.out / "report.md").read_text()
    section = _md_section(md, "edgetpu · model_int8.tflite", "Target compatibility")
    assert comp["message"] in section
    n = art["preflight"]["ops_total"]
    assert f"Edge TPU partition: {n} ops on the TPU, 0 on the CPU, 1 subgraph(s)" in section
    assert "on-chip SRAM" in section


def test_gpu_report_for_both_float16_and_int8_and_host_cpu_notes() -> None:
    report = _supported_report()
    md = (report.out / "report.md").read_text()
    for precision in ("float16", "int8"):
        art = _artifact(report.data, "mobile-gpu", precision)
        pf = art["preflight"]
        assert pf["delegate"] == "gpu" and pf["summary"]["fully_delegated"], pf["summary"]
        assert "analyzer" in pf and pf["ops_total"] == len(pf["ops"])
        assert art["runtime"]["target_delegate"] == "gpu"
        if not gpu_delegate_available():  # this host: the runtime falls back and says so
            assert art["runtime"]["host_delegate"] == "xnnpack"
            note = next(n for n in art["runtime"]["notes"] if "host-CPU timings" in n)
            assert note in art["notes"] and note in art["latency"]["host_notes"]
            section = _md_section(md, f"mobile-gpu · model_{precision}.tflite",
                                  "Target compatibility")
            assert note in section
    gates = report.data["gates"]
    assert gates["strict"] is True and gates["passed"] is True
    assert sorted(g["artifact"] for g in gates["results"]) == [
        "edgetpu/model_int8.tflite", "mobile-gpu/model_float16.tflite",
        "mobile-gpu/model_int8.tflite",
    ]
    assert "Accelerator checks (--strict): PASSED" in md


# ------------------------------------------------------------------ unsupported op, --strict


def test_strict_cli_fails_on_an_unsupported_op_in_the_middle(tmp_path: Path, no_compiler) -> None:
    out = tmp_path / "out"
    result = _cli(_cli_args(leaky_keras_file(), out, "--strict", "--json"))
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)  # the report is still printed and written
    assert report == json.loads((out / "report.json").read_text())
    assert (out / "edgetpu" / "model_int8.tflite").is_file() and (out / "report.md").is_file()
    (line,) = [ln for ln in result.stderr.splitlines() if "--strict" in ln]
    assert line.startswith("edgeopt: --strict: edgetpu/model_int8.tflite")
    pf = _artifact(report, "edgetpu")["preflight"]
    first = pf["partition"]["first_unmapped_op"]
    assert first["op"] == "LEAKY_RELU" and f"#{first['index']} LEAKY_RELU" in line
    k = first["index"]
    assert [o["delegated"] for o in pf["ops"][:k]] == [True] * k
    assert all(R.AFTER_UNMAPPED in {r["code"] for r in o["reasons"]} for o in pf["ops"][k + 1:])
    gate = report["gates"]["results"][0]
    assert report["gates"] == {**report["gates"], "strict": True, "passed": False}
    assert gate["first_blocking_op"]["op"] == "LEAKY_RELU" and gate["source"] == "pre-flight"
    md = (out / "report.md").read_text()
    assert f"the graph breaks at #{k} LEAKY_RELU" in md
    assert "replace LeakyReLU" in md  # the suggestion reaches the Markdown table


def test_strict_api_raises_after_writing_everything(tmp_path: Path, no_compiler) -> None:
    out = tmp_path / "out"
    with pytest.raises(acc.StrictError) as info:
        _convert(leaky_keras_file(), ["edgetpu"], out, strict=True)
    assert info.value.exit_code == 1 and "LEAKY_RELU" in str(info.value)
    report = info.value.report
    assert isinstance(report, ConvertReport) and report.out == out
    assert json.loads((out / "report.json").read_text())["gates"]["passed"] is False
    rt.load(out / "edgetpu")  # the artifact is in place and loads


# ------------------------------------------------------------------ fake edgetpu_compiler


def test_fake_compiler_success_goes_into_manifest_and_report(tmp_path: Path,
                                                             fake_compiler) -> None:
    fake_compiler(LOG_ALL_MAPPED)
    report = _convert(M.keras_file(), ["edgetpu"], tmp_path / "out", strict=True)
    tdir = report.out / "edgetpu"
    entries = read_manifest(tdir).models
    assert [e.file for e in entries] == ["model_int8.tflite", "model_int8_edgetpu.tflite"]
    plain, compiled = entries
    assert (compiled.format, compiled.precision) == ("tflite", "int8")
    assert compiled.sha256 == sha256_file(tdir / compiled.file)
    assert compiled.inputs == plain.inputs and compiled.outputs == plain.outputs
    assert (tdir / "model_int8_edgetpu.log").is_file()
    comp = _artifact(report.data, "edgetpu")["edgetpu_compiler"]
    assert comp["status"] == "compiled" and comp["version"] == COMPILER_VERSION
    assert comp["ops_tpu"] == 8 and comp["ops_cpu"] == 0 and comp["subgraphs"] == 1
    assert comp["on_chip_bytes"] == int(3.25 * 1024) and comp["off_chip_bytes"] == 0
    assert comp["model"]["path"] == "edgetpu/model_int8_edgetpu.tflite"
    assert comp["log"] == "edgetpu/model_int8_edgetpu.log"
    assert comp["differences"] == [] and comp["agrees_with_prediction"]
    assert ".edgeopt-tmp-" not in json.dumps(report.data)  # no staging paths in the report
    gate = report.data["gates"]["results"][0]
    assert gate["passed"] and gate["source"] == "edgetpu_compiler"
    if not edgetpu_available():  # this host: the plain model on the CPU, with a note
        model = rt.load(tdir, format="tflite")
        assert model.path.name == "model_int8.tflite"
        assert any("libedgetpu.so.1 not found" in n for n in model.notes)
        runtime_notes = _artifact(report.data, "edgetpu")["runtime"]["notes"]
        assert any("libedgetpu.so.1 not found" in n for n in runtime_notes)
    md = (report.out / "report.md").read_text()
    assert f"edgetpu_compiler {COMPILER_VERSION}: 8 of 8 ops mapped to the Edge TPU" in md
    assert "agrees with the pre-flight prediction" in md


def test_failing_compile_is_reported_and_strict_fails(tmp_path: Path, fake_compiler) -> None:
    fake_compiler(LOG_INTERNAL, rc=1)
    out = tmp_path / "out"
    result = _cli(_cli_args(M.keras_file(), out, "--strict"))
    assert result.exit_code == 1, result.output
    assert "edgetpu_compiler failed" in result.stderr and "Compilation failed" in result.stderr
    assert "edgetpu_compiler failed" in result.stdout  # the summary line
    report = json.loads((out / "report.json").read_text())
    comp = _artifact(report, "edgetpu")["edgetpu_compiler"]
    assert comp["status"] == "failed" and comp["returncode"] == 1
    assert "Compilation failed" in comp["error"] and "Node number 1" in comp["output_tail"]
    assert comp["differences"][0].startswith("the compiler failed")
    assert sorted(p.name for p in (out / "edgetpu").iterdir()) == [
        "manifest.json", "model_int8.tflite", "reference"]  # reference/: the kept float model
    assert [e.file for e in read_manifest(out / "edgetpu").models] == ["model_int8.tflite"]


def test_compiler_disagreement_fails_the_gate(tmp_path: Path, fake_compiler) -> None:
    """The compiler outranks the prediction: SOFTMAX left on the CPU fails the check."""
    fake_compiler(LOG_SOFTMAX_ON_CPU)
    src = _supported_report().out / "edgetpu" / "model_int8.tflite"
    tdir = tmp_path / "edgetpu"
    tdir.mkdir()
    model = Path(shutil.copy(src, tdir / src.name))
    prediction = preflight(model, load_target("edgetpu"))
    block, compiled = tpu.compile_edgetpu(model, tdir, prediction, shown_dir="edgetpu")
    assert compiled == tdir / "model_int8_edgetpu.tflite" and block["ops_cpu"] == 1
    assert len(block["differences"]) == 1 and block["differences"][0].startswith("SOFTMAX")
    art = {"target": "edgetpu", "path": "edgetpu/model_int8.tflite", "format": "tflite",
           "preflight": acc.compact_preflight(prediction, str(model), "edgetpu"),
           "edgetpu_compiler": block}
    gate = acc.artifact_gate(art, acc.get("tflite", "edgetpu"))
    assert not gate.passed and gate.facts["source"] == "edgetpu_compiler"
    assert "left 1 op(s) on the CPU; first: SOFTMAX" in gate.message


# ------------------------------------------------------------------ report size


def test_big_models_keep_only_blocking_ops(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    """Above OPS_IN_REPORT ops, the report keeps the blocking ops, counts and the inspect hint."""
    from tests.inspect import _models as IM

    model = IM.leaky_middle_int8()
    full = preflight(model, load_target("edgetpu"))
    whole = acc.compact_preflight(full, "out/edgetpu/m.tflite", "edgetpu")
    assert whole["ops_listed"] == "all" and len(whole["ops"]) == len(full["ops"])
    monkeypatch.setattr(pfl, "OPS_IN_REPORT", len(full["ops"]) - 1)
    trimmed = acc.compact_preflight(full, "out/edgetpu/m.tflite", "edgetpu")
    assert trimmed["ops_listed"] == "blocking" and trimmed["ops_total"] == len(full["ops"])
    assert [o["op"] for o in trimmed["ops"]] == ["LEAKY_RELU"]  # followers are not listed
    counts = trimmed["op_counts"]
    assert sum(c["accelerator"] + c["cpu"] for c in counts.values()) == len(full["ops"])
    assert counts["LEAKY_RELU"] == {"accelerator": 0, "cpu": 1}
    assert "edgeopt inspect out/edgetpu/m.tflite --target edgetpu" in trimmed["ops_note"]
    assert "tpu_ops" not in trimmed["partition"] and trimmed["partition"]["cpu_op_count"] > 1
    assert len(json.dumps(trimmed)) < len(json.dumps(whole))
