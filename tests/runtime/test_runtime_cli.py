"""``python -m edgeopt_runtime profile|run``: output formats, bad input, atomic output files."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import edgeopt_runtime as rt
import numpy as np
import pytest
from edgeopt_runtime.cli import main, write_npz_atomic

from .models import SHAPE
from .test_profile import build_models


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_models(tmp_path_factory.getbasetemp())


def _cli(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    """The real command in a fresh interpreter (what a device script sees)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "edgeopt_runtime", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def _x(n: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, *SHAPE)).astype(np.float32)


# -- profile -----------------------------------------------------------------------------------
def test_profile_json_is_one_document_on_stdout(models: dict) -> None:
    proc = _cli("profile", models["int8_tflite"], "--json", "--runs", "5", "--warmup", "1")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # LiteRT's own log lines went to stderr, not here
    assert doc["schema"] == "edgeopt.profile/1" and doc["latency"]["runs"] == 5
    assert doc["runtime"]["delegate"] == "xnnpack" and doc["timing"]["warmup_runs"] == 1
    assert "Traceback" not in proc.stderr


def test_profile_options_reach_the_profile(
    models: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    npz = tmp_path / "in.npz"
    np.savez(npz, image=_x())
    argv = ["profile", str(models["float_onnx"]), "--json", "--threads", "1", "--warmup", "0"]
    code = main([*argv, "--duration", "0.05", "--input", str(npz), "--no-op-profile"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["runtime"]["threads"] == 1 and doc["latency"]["mode"] == "duration"
    assert doc["inputs"]["source"] == "npz" and doc["op_profile"]["available"] is False
    assert (
        main(["profile", str(models["float_tflite"]), "--json", "--seed", "7", "--runs", "2"]) == 0
    )
    assert json.loads(capsys.readouterr().out)["inputs"]["seed"] == 7


def test_profile_table_is_readable(models: dict, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", str(models["int8_onnx"]), "--runs", "5", "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    for word in ("onnxruntime", "load (cold)", "first inference", "p99", "throughput"):
        assert word in out
    assert "rss_before_load" in out and "VmRSS" in out  # memory rows state their method
    assert "per-op time (onnxruntime" in out and "op type" in out
    assert main(["profile", str(models["float_tflite"]), "--runs", "3"]) == 0
    assert "per-op time not exposed by the LiteRT Python API" in capsys.readouterr().out


# -- bad input: one line, exit 2, no traceback -------------------------------------------------
def _bad_files(models: dict, d: Path) -> dict[str, tuple[list[str], str]]:
    (d / "model.txt").write_text("not a model")
    (d / "corrupt.tflite").write_bytes(os.urandom(512))
    (d / "truncated.onnx").write_bytes(models["float_onnx"].read_bytes()[:40])
    (d / "empty.tflite").write_bytes(b"")
    (d / "onnx_named.tflite").write_bytes(models["float_onnx"].read_bytes())
    np.savez(d / "names.npz", wrong=_x(), other=_x())
    np.savez(d / "shape.npz", image=np.zeros((1, 4, 4, 3), np.float32))
    tfl = str(models["float_tflite"])
    return {
        "missing model": (["profile", str(d / "nope.tflite")], "nope.tflite"),
        "wrong extension": (["profile", str(d / "model.txt")], "extension"),
        "corrupt tflite": (["profile", str(d / "corrupt.tflite")], "corrupt.tflite"),
        "truncated onnx": (["profile", str(d / "truncated.onnx")], "truncated.onnx"),
        "empty": (["profile", str(d / "empty.tflite")], "empty"),
        "onnx named tflite": (["profile", str(d / "onnx_named.tflite")], "onnx"),
        "dir without model": (["profile", str(d)], str(d)),
        "missing npz": (["profile", tfl, "--input", str(d / "none.npz")], "none.npz"),
        "npz wrong names": (["profile", tfl, "--input", str(d / "names.npz")], "image"),
        "npz wrong shape": (["profile", tfl, "--input", str(d / "shape.npz")], "[?, 8, 8, 3]"),
        "run wrong names": (
            ["run", tfl, "--input", str(d / "names.npz"), "--output", str(d / "o.npz")],
            "names.npz",
        ),
        "missing delegate": (["profile", tfl, "--delegate", "/nonexistent/libx.so"], "libx.so"),
    }


CASES = [
    "missing model",
    "wrong extension",
    "corrupt tflite",
    "truncated onnx",
    "empty",
    "onnx named tflite",
    "dir without model",
    "missing npz",
    "npz wrong names",
    "npz wrong shape",
    "run wrong names",
    "missing delegate",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_no_traceback(models: dict, tmp_path: Path, case: str) -> None:
    argv, needle = _bad_files(models, tmp_path)[case]
    proc = _cli(*argv)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("edgeopt-runtime: error:")]
    assert len(errors) == 1, proc.stderr
    assert needle in errors[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o.npz").exists()


def test_argument_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["profile", "m.tflite", "--runs", "0"],
        ["profile", "m.tflite", "--runs", "3", "--duration", "1"],
        ["run", "m.tflite", "--input", "a.npz"],
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        # argparse's own usage errors: "edgeopt-runtime[ profile]: error: ..."
        assert re.search(r"^edgeopt-runtime( \w+)?: error: ", capsys.readouterr().err, re.M)


# -- run ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "key", ["float_tflite", "int8_floatio_tflite", "int8_tflite", "float_onnx", "int8_onnx"]
)
def test_run_round_trips_outputs_equal_to_model_run(models: dict, tmp_path: Path, key: str) -> None:
    x = _x(seed=4)
    np.savez(tmp_path / "in.npz", image=x)
    out = tmp_path / "out.npz"
    assert (
        main(["run", str(models[key]), "--input", str(tmp_path / "in.npz"), "--output", str(out)])
        == 0
    )
    expected = rt.load(models[key]).run(x)
    with np.load(out) as z:
        assert list(z.files) == list(expected)
        for name in expected:
            assert z[name].dtype == expected[name].dtype
            assert np.array_equal(z[name], expected[name])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npz", "out.npz"]  # no temp files


def test_run_raw_passes_integers_through(
    models: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    q = np.random.default_rng(1).integers(-128, 128, (1, *SHAPE), dtype=np.int8)
    np.savez(tmp_path / "q.npz", image=q)
    out = tmp_path / "q_out.npz"
    argv = ["run", str(models["int8_tflite"]), "--input", str(tmp_path / "q.npz")]
    assert main([*argv, "--output", str(out), "--raw", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "edgeopt.run/1" and doc["raw"] is True
    expected = rt.load(models["int8_tflite"]).run(q, raw=True)
    name = next(iter(expected))
    assert doc["outputs"] == [{"name": name, "shape": [1, 5], "dtype": "int8"}]
    with np.load(out) as z:
        assert z[name].dtype == np.int8 and np.array_equal(z[name], expected[name])


def test_run_loops_a_batch_on_a_fixed_batch_one_model(models: dict, tmp_path: Path) -> None:
    x = _x(n=3, seed=2)
    np.savez(tmp_path / "b.npz", image=x)
    out = tmp_path / "b_out.npz"
    argv = ["run", str(models["fixed_tflite"]), "--input", str(tmp_path / "b.npz")]
    assert main([*argv, "--output", str(out)]) == 0
    m = rt.load(models["fixed_tflite"])
    expected = np.concatenate([m.run(x[i : i + 1])[0] for i in range(3)])
    with np.load(out) as z:
        assert np.array_equal(z[z.files[0]], expected)


def test_run_refuses_bad_output_paths(models: dict, tmp_path: Path) -> None:
    np.savez(tmp_path / "in.npz", image=_x())
    base = ["run", str(models["float_tflite"]), "--input", str(tmp_path / "in.npz"), "--output"]
    assert main([*base, str(tmp_path / "out.txt")]) == 2
    assert main([*base, str(tmp_path / "no" / "such" / "dir.npz")]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npz"]


def test_write_npz_atomic_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    path = tmp_path / "o.npz"
    write_npz_atomic(path, {"file": np.arange(3), "a/b": np.ones(2)})  # awkward names work
    with np.load(path) as z:
        assert np.array_equal(z["file"], np.arange(3)) and np.array_equal(z["a/b"], np.ones(2))
    with pytest.raises(ValueError):
        write_npz_atomic(path, {"ok": np.zeros(2), "bad": np.array([object()], dtype=object)})
    with np.load(path) as z:  # the previous, complete file is still there
        assert sorted(z.files) == ["a/b", "file"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.npz"]


# -- --version, profile --input-shape (issue 13) ------------------------------------------------
def test_version_names_the_runtime_and_its_engines() -> None:
    from edgeopt_runtime import __version__

    proc = _cli("--version")
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip()
    assert line.startswith(f"edgeopt-runtime {__version__} (") and "onnxruntime" in line


def _dynamic_hw_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "h", "w"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 1, 1])
    graph = helper.make_graph([helper.make_node("GlobalAveragePool", ["image"], ["y"])], "g",
                              [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_profile_input_shape_fixes_dynamic_dims(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    model = _dynamic_hw_onnx(tmp_path / "dyn.onnx")
    proc = _cli("profile", model, "--json", "--runs", "3", "--warmup", "0", "--no-op-profile",
                "--input-shape", "image=1,3,64,48")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["inputs"]["arrays"] == [{"name": "image", "shape": [1, 3, 64, 48],
                                        "dtype": "float32"}]
    bad = _cli("profile", model, "--input-shape", "image=2,3,64,48")
    assert bad.returncode == 2 and "dim 0 is fixed at 1" in bad.stderr
    bad = _cli("profile", model, "--input-shape", "image=1,3,x,48")
    assert bad.returncode == 2 and "integer dims" in bad.stderr and "Traceback" not in bad.stderr
