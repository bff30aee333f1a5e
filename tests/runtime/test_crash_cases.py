"""Issue #10's runtime findings, one case each (files from ``scripts/make_crash_cases.py``).

Every case must now be refused in one line that names the file and says what is wrong; the
model cases must still crash the bare engine (so the case is real); no manifest may make the
runtime load native code (a real ``.so`` whose constructor writes a file, built with gcc).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import make_crash_cases  # noqa: E402

HAVE_GCC = shutil.which("gcc") is not None


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("crash") / "cases"
    return {c["name"]: c for c in make_crash_cases.make_cases(out, compile_evil=HAVE_GCC)}


_LOAD_ALL = r"""
import json, sys
import edgeopt_runtime as rt
from edgeopt_runtime.npz import read_npz
from edgeopt_runtime.spec import TensorSpec
out = {}
for c in json.loads(sys.argv[1]):
    try:
        if c["kind"] == "run-input":
            read_npz(c["path"], [TensorSpec("x", (None,), "float32")], any_batch=True)
        else:
            rt.load(c["path"])
        out[c["name"]] = ["accepted", ""]
    except rt.EdgeOptError as exc:
        out[c["name"]] = ["refused", str(exc)]
    except Exception as exc:
        out[c["name"]] = ["raw " + type(exc).__name__, str(exc)]
print(json.dumps(out))
"""


def test_the_generator_writes_every_finding(cases: dict) -> None:
    kinds = {n.split("_")[0] for n in cases}
    assert {"tflite", "onnx", "delegate", "manifest", "model", "artifact", "npz"} <= kinds
    assert len(cases) >= 30
    for c in cases.values():
        p = Path(c["path"])
        assert os.path.lexists(p), c["name"]
        if p.is_file() and not p.is_symlink():
            assert p.stat().st_size < 64 << 20, c["name"]  # small files (the bomb is 37 MB)


def test_every_case_is_refused_in_one_line(cases: dict) -> None:
    """All cases in one child (a FIFO that still blocked would hang it: the timeout catches it)."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _LOAD_ALL, json.dumps(list(cases.values()))],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, c in cases.items():
        outcome, message = results[name]
        assert outcome == "refused", (name, outcome, message)
        assert re.search(c["expect"], message), (name, message)
        assert "\n" not in message and "Traceback" not in message, name
        assert Path(c["path"]).name in message or Path(c["path"]).parent.name in message, name
    assert time.perf_counter() - t0 < 60  # the bomb is refused from its headers, in seconds


_RAW = {
    "tflite": "from ai_edge_litert.interpreter import Interpreter\n"
    "import numpy as np, gc, sys\n"
    "it = Interpreter(model_path=sys.argv[1], num_threads=1); it.allocate_tensors()\n"
    "d = it.get_input_details()[0]\n"
    "it.set_tensor(d['index'], np.random.rand(*d['shape']).astype(np.float32)); it.invoke()\n"
    "del it; gc.collect()\n",
    "onnx": "import onnxruntime as ort, numpy as np, sys\n"
    "o = ort.SessionOptions(); o.log_severity_level = 4\n"
    "s = ort.InferenceSession(sys.argv[1], o, providers=['CPUExecutionProvider'])\n"
    "s.run(None, {'x': np.random.rand(1, 10).astype(np.float32)})\n",
}


@pytest.mark.parametrize("name", ["tflite_quantize_as_softmax", "onnx_empty_scale"])
def test_crash_cases_still_crash_the_bare_engine(cases: dict, name: str) -> None:
    c = cases[name]
    proc = subprocess.run([sys.executable, "-c", _RAW[c["crashes_raw"]], c["path"]],
                          capture_output=True, timeout=120, check=False)  # fmt: skip
    assert proc.returncode < 0, (name, proc.returncode, proc.stderr[-500:])


@pytest.mark.parametrize("name", ["tflite_quantize_as_softmax", "onnx_empty_scale"])
def test_the_probe_alone_refuses_the_crash(cases: dict, name: str) -> None:
    """Without the structural checks, the isolated probe still keeps the crash out of this
    process, for ONNX as for TFLite."""
    from edgeopt_runtime.errors import ModelLoadError
    from edgeopt_runtime.verify import probe_model

    c = cases[name]
    data = Path(c["path"]).read_bytes()
    with pytest.raises(ModelLoadError, match=r"crashed .* \(signal \d+, SIG\w+\) in an isolated"):
        probe_model(data, c["crashes_raw"], c["path"])


_EVIL_CALLER = r"""
import sys
import edgeopt_runtime as rt
try:
    rt.load(sys.argv[1], delegate=sys.argv[2])
except rt.EdgeOptError as exc:
    print("refused:", exc)
"""


@pytest.mark.skipif(not HAVE_GCC, reason="gcc is not installed: cannot build the test .so")
def test_no_manifest_makes_the_runtime_load_native_code(cases: dict) -> None:
    import edgeopt_runtime as rt

    out = Path(cases["tflite_quantize_as_softmax"]["path"]).parent
    marker, lib = out / "EVIL_RAN", out / "libevil.so"
    assert lib.is_file() and (out / "delegate_relative_library" / "libevil.so").is_file()
    for name in [n for n in cases if n.startswith("delegate_")]:
        with pytest.raises(rt.EdgeOptError):
            rt.load(cases[name]["path"])
        assert not marker.exists(), f"{name}: the library's constructor ran"
    # The caller may choose a library: then it is loaded (constructor runs), in a child.
    proc = subprocess.run([sys.executable, "-c", _EVIL_CALLER, str(out / "good.tflite"), str(lib)],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert marker.exists(), proc.stderr[-1000:]
    assert "refused:" in proc.stdout and "is not a TFLite delegate" in proc.stdout, proc.stderr
    assert "Traceback" not in proc.stderr  # no half-built Delegate left behind
    marker.unlink()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgeopt_runtime", *args], capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--threads", "100000"], r"--threads: expected an integer in 1\.\.256, got '100000'"),
        (["--duration", "inf"], r"--duration: expected seconds in \(0, 604800\]"),
        (["--duration", "nan"], r"--duration: expected seconds"),
        (["--seed", "-1"], r"--seed: expected an integer in 0\.\."),
        (["--runs", str(10**12)], r"--runs: expected an integer in 1\.\.10,000,000"),
        (["--warmup", "-3"], r"--warmup: expected an integer in 0\.\."),
    ],
)
def test_cli_numbers_are_bounded(cases: dict, args: list[str], expect: str) -> None:
    proc = _cli("profile", str(Path(cases["tflite_quantize_as_softmax"]["path"]).parent /
                               "good.tflite"), *args)  # fmt: skip
    assert proc.returncode == 2 and re.search(expect, proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_run_refuses_an_npz_bomb_in_seconds(cases: dict, tmp_path: Path) -> None:
    good = str(Path(cases["npz_bomb"]["path"]).parent / "good.tflite")
    t0 = time.perf_counter()
    proc = _cli("run", good, "--input", cases["npz_bomb"]["path"], "--output",
                str(tmp_path / "o.npz"), "--no-isolate")  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert re.search(cases["npz_bomb"]["expect"], proc.stderr), proc.stderr
    ours = [ln for ln in proc.stderr.splitlines() if not ln.startswith("INFO: ")]  # LiteRT's log
    assert len(ours) == 1 and ours[0].startswith("edgeopt-runtime: error: "), proc.stderr
    assert not (tmp_path / "o.npz").exists()
    assert time.perf_counter() - t0 < 30


def test_cli_probes_by_default_and_refuses_a_crashing_model(cases: dict, tmp_path: Path) -> None:
    """The structural checks stop this file first; ``--no-isolate`` changes nothing about that.
    With the checks and the probe, the CLI exits 2 with one line on both formats."""
    for name in ("tflite_quantize_as_softmax", "onnx_empty_scale"):
        proc = _cli("profile", cases[name]["path"], "--runs", "2")
        assert proc.returncode == 2 and re.search(cases[name]["expect"], proc.stderr), proc.stderr
    x = tmp_path / "x.npz"
    np.savez(x, x=np.zeros((1, 8), np.float32))
    good = str(Path(cases["npz_bomb"]["path"]).parent / "good.tflite")
    ok = _cli("run", good, "--input", str(x), "--output", str(tmp_path / "o.npz"), "--json")
    assert ok.returncode == 0, ok.stderr
