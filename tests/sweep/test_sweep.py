"""``edgeopt sweep`` end to end: 2 models x 3 targets x 2 recipes on serial, process and a real
local Ray cluster give the same results; reruns come from the cache; changed inputs rerun only
their jobs; failures are values; a killed worker is retried; a killed sweep resumes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeopt.executors import make_executor
from edgeopt.sweep import load_sweep, run_sweep
from edgeopt.sweep.results import pareto

from . import _models
from .conftest import ROOT, TEST_BOARD

SETTINGS = "[settings]\nlatency_runs = 3\n"
EDGEOPT = [sys.executable, "-m", "edgeopt.cli"]


def deterministic(doc: dict[str, Any]) -> list[tuple]:
    """What must not depend on the executor: everything but timings and workers."""
    rows = []
    for j in doc["jobs"]:
        arts = tuple((a["file"], a["sha256"], a["size_bytes"], a["sqnr_db"], a["cosine"],
                      a["accuracy"], a["accuracy_drop"], a["top1_agreement"], a["samples"])
                     for a in j["artifacts"])
        rows.append((j["job"], j["model"], j["target"], j["recipe"], j["status"], arts))
    return rows


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory, ray_cluster: object) -> dict[str, Any]:
    """The 12-job sweep run once on each executor (serial, process -j 2, Ray)."""
    root = tmp_path_factory.mktemp("sweep-matrix")
    models = _models.write_models(root / "in")
    sweep = _models.write_sweep(root, models, extra=SETTINGS)
    spec = load_sweep(sweep)
    docs, seconds = {}, {}
    for name in ("serial", "process", "ray"):
        t0 = time.monotonic()
        with make_executor(name, 2) as ex:
            docs[name] = run_sweep(spec, root / f"out-{name}", ex)
        seconds[name] = time.monotonic() - t0
    return {"root": root, "models": models, "sweep": sweep, "docs": docs, "seconds": seconds}


def test_same_results_on_every_executor(matrix: dict[str, Any]) -> None:
    docs = matrix["docs"]
    assert len(docs["serial"]["jobs"]) == 12
    errors = {f"{n}: {j['model']}/{j['target']}/{j['recipe']}": j["error"]
              for n, d in docs.items() for j in d["jobs"] if j["status"] != "ok"}
    assert not errors
    assert docs["serial"]["counts"] == {"ok": 12, "failed": 0, "pending": 0, "cached": 0}
    assert {(j["model"], j["target"], j["recipe"]) for j in docs["serial"]["jobs"]} == {
        (m, t, r) for m in ("conv", "mlp") for t in ("arm-cpu", "cpu-s8", "cpu-qop")
        for r in ("default", "dynamic")}
    assert deterministic(docs["process"]) == deterministic(docs["serial"])
    assert deterministic(docs["ray"]) == deterministic(docs["serial"])
    # the dynamic recipe really changed the profile: other files, other precision
    by = {(j["model"], j["target"], j["recipe"]): j for j in docs["serial"]["jobs"]}
    assert by[("conv", "cpu-s8", "dynamic")]["artifacts"][0]["precision"] == "dynamic"
    assert by[("conv", "cpu-s8", "default")]["artifacts"][0]["precision"] == "int8"
    assert all(j["peak_rss_bytes"] and j["attempts"] == 1 for j in docs["ray"]["jobs"])


def test_results_files_link_artifacts_and_reports(matrix: dict[str, Any]) -> None:
    out = matrix["root"] / "out-process"
    doc = json.loads((out / "results.json").read_text())
    assert doc["schema"] == "edgeopt.sweep/1" and doc["executor"] == "process"
    for job in doc["jobs"]:
        assert (out / job["report"]).is_file()
        for art in job["artifacts"]:
            assert (out / art["path"]).is_file()
            assert 0.9 < art["cosine"] <= 1.0 and art["accuracy"] is not None
    lines = (out / "results.csv").read_text().splitlines()
    assert lines[0].startswith("model,target,recipe,status") and len(lines) == 13
    page = (out / "results.html").read_text()
    assert page.count("<svg") == 3 and "<script" not in page
    assert page.count('class="front"') >= 3  # at least one Pareto point per target
    for job in doc["jobs"]:
        assert f'href="{job["report"]}"' in page


def test_rerun_is_served_from_the_cache(matrix: dict[str, Any]) -> None:
    out = matrix["root"] / "out-serial"
    before = {p: p.stat().st_mtime_ns for p in out.glob("jobs/*/job.json")}
    t0 = time.monotonic()
    proc = _cli(matrix["sweep"], out, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["counts"]["cached"] == 12 and doc["counts"]["ok"] == 12
    assert {p: p.stat().st_mtime_ns for p in out.glob("jobs/*/job.json")} == before
    assert deterministic(doc) == deterministic(matrix["docs"]["serial"])
    assert time.monotonic() - t0 < 0.5 * matrix["seconds"]["serial"]
    assert "12 jobs: 12 cached, 0 to run" in proc.stderr


def test_changed_input_reruns_only_what_it_affects(matrix: dict[str, Any],
                                                   tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(matrix["root"] / "out-serial", out)
    changed = tmp_path / "cpu-qop.toml"  # the same target with per-channel weights
    changed.write_text((_models.SWEEP_TARGETS / "cpu-qop.toml").read_text().replace(
        "per_channel = false", "per_channel = true"))
    sweep = _models.write_sweep(
        tmp_path, {"conv": matrix["models"]["conv"]}, extra=SETTINGS,
        targets=["arm-cpu", str(_models.SWEEP_TARGETS / "cpu-s8.toml"), str(changed)],
        recipes='[[recipe]]\nname = "baseline"\n')  # renamed recipe: same content, same key
    with make_executor("serial") as ex:
        doc = run_sweep(load_sweep(sweep), out, ex)
    cached = {j["target"]: j["cached"] for j in doc["jobs"]}
    assert cached == {"arm-cpu": True, "cpu-s8": True, "cpu-qop": False}
    assert all(j["status"] == "ok" and j["recipe"] == "baseline" for j in doc["jobs"])


def test_failures_are_values_refusals_cached_tune_runs(matrix: dict[str, Any],
                                                      tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(matrix["root"] / "out-serial", out)
    recipes = ('[[recipe]]\nname = "default"\n\n[[recipe]]\nname = "keep-fc"\n'
               'keep_float = ["fc"]\n\n[[recipe]]\nname = "tuned"\n'
               'tune = { max_drop = 0.5, budget = 2 }\n')
    sweep = _models.write_sweep(tmp_path, {"conv": matrix["models"]["conv"]}, extra=SETTINGS,
                                targets=[str(_models.SWEEP_TARGETS / "cpu-s8.toml"),
                                         str(_models.SWEEP_TARGETS / "strict-s8.toml")],
                                recipes=recipes)
    proc = _cli(sweep, out, "--json")
    assert proc.returncode == 1, proc.stderr  # some jobs failed; results still written
    by = {(j["target"], j["recipe"]): j for j in json.loads(proc.stdout)["jobs"]}
    assert by[("cpu-s8", "default")]["status"] == "ok" and by[("cpu-s8", "default")]["cached"]
    assert by[("cpu-s8", "keep-fc")]["status"] == "ok"
    assert by[("strict-s8", "default")]["status"] == "ok"
    refused = by[("strict-s8", "keep-fc")]
    assert refused["status"] == "failed" and refused["error"]["type"] == "TargetError"
    assert "allows no float ops" in refused["error"]["message"]
    for t in ("cpu-s8", "strict-s8"):  # tune = {...}: edgeopt.tune ran with that budget
        tuned = by[(t, "tuned")]
        assert tuned["status"] == "ok" and tuned["artifacts"], tuned
        (search,) = tuned["tune"]
        assert search["budget"] == "max-drop <= 0.5" and search["evaluations"] <= 2
        assert search["chosen"] and search["status"] in ("met", "limit", "not-met")
    again = json.loads(_cli(sweep, out, "--json").stdout)
    by2 = {(j["target"], j["recipe"]): j for j in again["jobs"]}
    assert by2[("strict-s8", "keep-fc")]["cached"]  # the refusal is the job's result
    assert by2[("cpu-s8", "tuned")]["cached"]  # a tune result is cached like a convert
    assert by2[("strict-s8", "keep-fc")]["error"] == refused["error"]


def test_killed_worker_job_is_retried(matrix: dict[str, Any], tmp_path: Path) -> None:
    sweep = _models.write_sweep(tmp_path, {"mlp": matrix["models"]["mlp"]}, extra=SETTINGS,
                                targets=[str(_models.SWEEP_TARGETS / "cpu-s8.toml")],
                                recipes='[[recipe]]\nname = "default"\n')
    out = tmp_path / "out"
    proc = _start(sweep, out, "--executor", "process", "-j", "1", "--json")
    running = _wait_for(lambda: next(out.glob(".scratch/*/running.json"), None), proc)
    pid = json.loads(running.read_text())["pid"]
    assert pid != proc.pid
    os.kill(pid, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr
    [job] = json.loads(stdout)["jobs"]
    assert job["status"] == "ok" and job["attempts"] == 2
    assert int(job["worker"].split("@")[0]) != pid
    assert "its worker was lost" in stderr


def test_killed_sweep_resumes_without_redoing_jobs(matrix: dict[str, Any],
                                                   tmp_path: Path) -> None:
    sweep = _models.write_sweep(tmp_path, {"conv": matrix["models"]["conv"]}, extra=SETTINGS,
                                recipes='[[recipe]]\nname = "default"\n')
    out = tmp_path / "out"
    # 1: Ctrl-C after the first job: exit 130, results written as they stand
    proc = _start(sweep, out)
    _wait_for(lambda: _done_jobs(out) >= 1 or None, proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "run the same command again to resume" in stderr and "Traceback" not in stderr
    partial = json.loads((out / "results.json").read_text())
    assert partial["interrupted"] and partial["counts"]["pending"] >= 1
    first = _job_files(out)
    # 2: SIGKILL (driver and its process group) once another job finished
    proc = _start(sweep, out)
    _wait_for(lambda: _done_jobs(out) > len(first) or None, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    second = _job_files(out)
    assert {k: v for k, v in second.items() if k in first} == first
    # 3: finish; nothing finished before is redone
    proc = _cli(sweep, out, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["counts"]["ok"] == 3 and not doc["interrupted"]
    assert {k: v for k, v in _job_files(out).items() if k in second} == second
    assert doc["counts"]["cached"] == len(second)
    assert not (out / ".scratch").exists()


def test_sharded_validation_is_exact_on_a_pool(tmp_path: Path) -> None:
    models = _models.write_models(tmp_path / "in", n_val=700)
    sweep = _models.write_sweep(tmp_path, {"conv": models["conv"]},
                                extra=SETTINGS + "[validation]\nshard_size = 300\n",
                                targets=[str(_models.SWEEP_TARGETS / "cpu-s8.toml")],
                                recipes='[[recipe]]\nname = "default"\n')
    with make_executor("process", 2) as ex:
        [job] = run_sweep(load_sweep(sweep), tmp_path / "out", ex)["jobs"]
    assert job["status"] == "ok" and job["validation"]["shards"] == 3
    [art] = job["artifacts"]
    assert art["samples"] == 700 and art["convert_samples"] == 256
    per = np.load(tmp_path / "out" / job["dir"] / "validation.npz", allow_pickle=False)
    ref, cand, labels = per["a0.o0.reference"], per["a0.o0.candidate"], per["labels"]
    assert ref.shape == (700, 5) and labels.shape == (700,)
    # the merged numbers are the numbers of all 700 samples, computed once
    acc_q = float(np.mean(np.argmax(cand, 1) == labels))
    acc_f = float(np.mean(np.argmax(ref, 1) == labels))
    assert art["accuracy"] == pytest.approx(acc_q, abs=1e-12)
    assert art["accuracy_drop"] == pytest.approx(acc_f - acc_q, abs=1e-12)
    assert art["top1_agreement"] == pytest.approx(
        float(np.mean(np.argmax(ref, 1) == np.argmax(cand, 1))), abs=1e-12)
    assert np.array_equal(per["a0.top1_agree"], np.argmax(ref, 1) == np.argmax(cand, 1))


def test_device_profile_runs_on_the_node_with_the_board(matrix: dict[str, Any],
                                                       tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(matrix["root"] / "out-ray", out)
    sweep = _models.write_sweep(tmp_path, {"mlp": matrix["models"]["mlp"]}, extra=SETTINGS +
                                '[devices]\ncpu-s8 = "testboard"\n',
                                targets=[str(_models.SWEEP_TARGETS / "cpu-s8.toml")],
                                recipes='[[recipe]]\nname = "default"\n')
    with make_executor("ray") as ex:  # the session's cluster offers device:testboard
        [job] = run_sweep(load_sweep(sweep), out, ex)["jobs"]
    assert job["cached"] and job["device_profile"]["device"] == "testboard"
    prof = json.loads((out / job["dir"] / "profile.json").read_text())
    assert prof["where"]["resources"].get(TEST_BOARD) == 1.0
    assert prof["latency"]["p50_ms"] > 0
    with make_executor("process", 1) as ex:  # no board here: the job says why, others stand
        doc = run_sweep(load_sweep(sweep), tmp_path / "out2", ex)
    [job] = doc["jobs"]
    assert job["status"] == "ok" and job["device_profile"]["pending"]
    assert "device:testboard" in job["device_profile"]["error"]["message"]


def test_diff_of_two_sweeps(matrix: dict[str, Any]) -> None:
    a, b = matrix["root"] / "out-serial", matrix["root"] / "out-ray"
    proc = subprocess.run([*EDGEOPT, "diff", str(a), str(b / "results.json"), "--json"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert len(d["entries"]) == 12 and {e["status"] for e in d["entries"]} <= {"same", "changed"}
    changed = {c["what"] for e in d["entries"] for c in e["changes"]}
    assert not any("SQNR" in w or "accuracy" in w or "size" in w for w in changed), changed


def test_pareto_front() -> None:
    pts = [(1.0, 5.0, 100.0), (2.0, 2.0, 100.0), (2.0, 6.0, 200.0), (0.5, 9.0, 50.0)]
    assert pareto(pts) == [True, True, False, True]


@pytest.mark.parametrize(("text", "message"), [
    ("targets = []\n", "targets must be a non-empty list"),
    ('targets = ["arm-cpu"]\n[[model]]\npath = "missing.onnx"\ncalib = "c.npz"\n',
     "no such file or directory"),
    ('targets = ["arm-cpu"]\nmodels = 1\n', "unknown top-level key(s) models"),
    ('targets = ["arm-cpu"]\n[[model]]\npath = "{model}"\ncalib = "{calib}"\n[[recipe]]\n'
     'name = "t"\ntune = {{ max_drop = -1 }}\n', "tune.max_drop must be a number >= 0"),
    ('targets = ["arm-cpu"]\n[[model]]\npath = "{model}"\ncalib = "{calib}"\n[[recipe]]\n'
     'name = "p"\nprofile = {{ onnx = {{ scheme = "fast" }} }}\n', "scheme = 'fast' is not valid"),
])
def test_bad_sweep_files_exit_2(matrix: dict[str, Any], tmp_path: Path, text: str,
                                message: str) -> None:
    m = matrix["models"]["conv"]
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(text.format(model=m["model"], calib=m["calib"]))
    proc = _cli(sweep, tmp_path / "out")
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------ helpers


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _cli(sweep: Path, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EDGEOPT, "sweep", str(sweep), "--out", str(out), *args],
                          capture_output=True, text=True, timeout=600, cwd=ROOT, env=_env())


def _start(sweep: Path, out: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*EDGEOPT, "sweep", str(sweep), "--out", str(out), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env=_env(), start_new_session=True)


def _wait_for(check: Any, proc: subprocess.Popen[str], timeout: float = 240) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        if proc.poll() is not None:
            raise AssertionError(f"sweep ended early ({proc.returncode}): "
                                 f"{proc.stderr.read()}")
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("timed out waiting for the sweep")


def _done_jobs(out: Path) -> int:
    return len(list(out.glob("jobs/*/job.json")))


def _job_files(out: Path) -> dict[str, bytes]:
    return {p.parent.name: p.read_bytes() for p in out.glob("jobs/*/job.json")}
