"""edgeopt_runtime.profile / memory on float and int8 TFLite and ONNX models built here."""

from __future__ import annotations

import functools
import json
import os
import platform
from pathlib import Path

import edgeopt_runtime as rt
import numpy as np
import pytest
from edgeopt_runtime import memory
from edgeopt_runtime.backends.onnx import aggregate_ort_trace
from edgeopt_runtime.errors import EdgeOptError, InputError
from edgeopt_runtime.feeds import random_feeds
from edgeopt_runtime.npz import read_npz
from edgeopt_runtime.profile import SCHEMA, latency_stats
from edgeopt_runtime.spec import QuantParams, TensorSpec

from .models import SHAPE, keras_model, representative, to_onnx, to_tflite

LINUX_PROC = os.path.exists("/proc/self/statm")


def _int8_onnx(src: Path, dst: Path) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{"image": x[0]} for x in representative(8)])

        def get_next(self) -> dict | None:
            return next(self._it, None)

    quantize_static(
        str(src),
        str(dst),
        Reader(),
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
    )
    return dst


@functools.cache
def build_models(base: Path) -> dict[str, Path]:
    """Tiny seeded models, built once per test session (shared by the runtime CLI tests)."""
    d = base / "profile-models"
    d.mkdir(exist_ok=True)
    dyn = keras_model(seed=0, dynamic_batch=True)
    fixed = keras_model(seed=0, dynamic_batch=False)
    float_onnx = to_onnx(dyn, d / "float.onnx")
    return {
        "float_tflite": to_tflite(dyn, d / "float.tflite", int8=False),
        "int8_tflite": to_tflite(dyn, d / "int8.tflite", int8=True, io_dtype="int8"),
        "int8_floatio_tflite": to_tflite(dyn, d / "int8_fio.tflite", int8=True),
        "fixed_tflite": to_tflite(fixed, d / "fixed_b1.tflite", int8=False),
        "float_onnx": float_onnx,
        "int8_onnx": _int8_onnx(float_onnx, d / "int8.onnx"),
    }


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_models(tmp_path_factory.getbasetemp())


# -- the JSON document -------------------------------------------------------------------------
TOP_KEYS = {
    "schema",
    "created",
    "model",
    "runtime",
    "host",
    "inputs",
    "timing",
    "latency",
    "memory",
    "op_profile",
    "notes",
}
MODEL_KEYS = {
    "path",
    "file",
    "format",
    "precision",
    "size_bytes",
    "artifact_dir",
    "target",
    "inputs",
    "outputs",
}
RUNTIME_KEYS = {
    "backend",
    "backend_version",
    "format",
    "delegate",
    "providers",
    "threads",
    "threads_effective",
    "edgeopt_runtime",
}
HOST_KEYS = {
    "cpu",
    "machine",
    "os",
    "python",
    "python_implementation",
    "numpy",
    "cpu_count",
    "cpus_usable",
    "platform",  # the converter's report names (one host_info for both)
    "processor",
}
TIMING_KEYS = {
    "backend_import_ms",
    "backend_imported",
    "load_ms",
    "load_method",
    "probe_ms",
    "probe_method",
    "first_inference_ms",
    "warmup_runs",
}
LATENCY_KEYS = {
    "runs",
    "wall_s",
    "mean_ms",
    "std_ms",
    "min_ms",
    "max_ms",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "throughput_ips",
    "clock",
    "samples_ms",
    "mode",
}
MEMORY_KEYS = {
    "model_file",
    "rss_before_load",
    "rss_after_load",
    "peak_during_load",
    "peak_during_runs",
    "peak_during_runs_sampled",
    "peak_during_runs_kernel",
    "model_delta_after_load",
    "model_delta_peak",
}
OP_KEYS = {
    "available",
    "source",
    "reason",
    "runs",
    "by_op_type",
    "by_node",
    "node_total_ms_per_run",
    "model_run_ms_per_run",
    "ops",
}


@pytest.mark.parametrize(
    "key", ["float_tflite", "int8_tflite", "int8_floatio_tflite", "float_onnx", "int8_onnx"]
)
def test_profile_json_has_every_field(models: dict, key: str) -> None:
    doc = rt.profile(models[key], runs=15, warmup=2, seed=3).to_dict()
    assert json.loads(json.dumps(doc)) == doc  # plain JSON, no numpy scalars
    assert set(doc) == TOP_KEYS and doc["schema"] == SCHEMA == "edgeopt.profile/1"
    assert set(doc["model"]) == MODEL_KEYS
    assert set(doc["runtime"]) == RUNTIME_KEYS
    assert set(doc["host"]) == HOST_KEYS
    assert set(doc["timing"]) == TIMING_KEYS
    assert set(doc["latency"]) == LATENCY_KEYS
    assert set(doc["memory"]) == MEMORY_KEYS
    assert OP_KEYS <= set(doc["op_profile"])
    for name, value in doc["memory"].items():
        assert set(value) == {"bytes", "mib", "method"}, name
        assert value["method"], name  # every number says how it was measured
    assert doc["model"]["format"] == doc["runtime"]["format"] == models[key].suffix[1:]
    assert doc["memory"]["model_file"]["bytes"] == models[key].stat().st_size
    assert doc["timing"]["warmup_runs"] == 2 and doc["timing"]["load_ms"] > 0
    assert doc["timing"]["first_inference_ms"] > 0
    assert doc["host"]["machine"] == platform.machine() and doc["host"]["cpu"]
    assert doc["runtime"]["backend"] in ("ai_edge_litert", "tflite_runtime", "onnxruntime")
    assert doc["runtime"]["backend_version"]
    assert doc["inputs"]["source"] == "random" and doc["inputs"]["seed"] == 3


def test_latency_statistics_are_consistent(models: dict) -> None:
    lat = rt.profile(models["float_tflite"], runs=40, warmup=1, op_profile=False).latency
    samples = np.asarray(lat["samples_ms"])
    assert lat["runs"] == len(samples) == 40 and lat["mode"] == "runs"
    order = [lat[k] for k in ("min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")]
    assert order == sorted(order)
    assert lat["min_ms"] <= lat["mean_ms"] <= lat["max_ms"]
    assert lat["mean_ms"] == pytest.approx(samples.mean(), rel=1e-4)
    assert lat["std_ms"] == pytest.approx(samples.std(ddof=1), rel=1e-3, abs=1e-6)
    assert lat["throughput_ips"] == pytest.approx(1000.0 / lat["mean_ms"], rel=1e-4)
    assert lat["wall_s"] * 1e3 >= samples.sum() * 0.999  # the loop holds every timed call


def test_latency_stats_on_known_samples() -> None:
    lat = latency_stats([1_000_000, 2_000_000, 3_000_000, 4_000_000, 10_000_000])
    assert lat["mean_ms"] == 4.0 and lat["min_ms"] == 1.0 and lat["max_ms"] == 10.0
    assert lat["p50_ms"] == 3.0 and lat["p90_ms"] == pytest.approx(7.6)
    assert lat["std_ms"] == pytest.approx(np.std([1, 2, 3, 4, 10], ddof=1))
    assert lat["throughput_ips"] == 250.0


def test_duration_budget_runs_until_the_budget_is_spent(models: dict) -> None:
    lat = rt.profile(models["float_onnx"], duration=0.2, warmup=0, op_profile=False).latency
    assert lat["mode"] == "duration" and lat["runs"] >= 1
    assert lat["wall_s"] >= 0.2
    assert lat["runs"] == len(lat["samples_ms"])


# -- per-op time -------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["float_onnx", "int8_onnx"])
def test_onnx_op_profile_aggregates_by_type_and_node(models: dict, key: str) -> None:
    ops = rt.profile(models[key], runs=5, warmup=1).op_profile
    assert ops["available"] and ops["reason"] is None and ops["runs"] >= 1
    assert ops["by_op_type"] and ops["by_node"]
    node_total = ops["node_total_ms_per_run"]
    assert sum(g["mean_ms_per_run"] for g in ops["by_op_type"]) == pytest.approx(node_total)
    assert sum(n["mean_ms_per_run"] for n in ops["by_node"]) == pytest.approx(node_total)
    assert sum(g["nodes"] for g in ops["by_op_type"]) == len(ops["by_node"])
    assert sum(g["share"] for g in ops["by_op_type"]) == pytest.approx(1.0)
    # nodes run inside model_run: their sum cannot exceed the run's own span
    assert 0 < node_total <= ops["model_run_ms_per_run"]
    types = {g["op_type"] for g in ops["by_op_type"]}
    assert types & {"Conv", "QLinearConv", "ConvInteger"}, types
    shares = [g["share"] for g in ops["by_op_type"]]
    assert shares == sorted(shares, reverse=True)


def _ev(cat: str, name: str, ts: int, dur: int, op: str | None = None) -> dict:
    e = {"cat": cat, "name": name, "ts": ts, "dur": dur, "ph": "X"}
    if op:
        e["args"] = {"op_name": op, "provider": "CPUExecutionProvider"}
    return e


def test_aggregate_ort_trace_skips_warmup_runs_and_sums_exactly() -> None:
    events = [
        _ev("Session", "session_initialization", 0, 50),
        # warm-up run (skipped): huge times that must not leak into the result
        _ev("Node", "conv_kernel_time", 101, 900, "Conv"),
        _ev("Session", "model_run", 100, 1000),
        # two measured runs
        _ev("Node", "conv_kernel_time", 2001, 30, "Conv"),
        _ev("Node", "fc_kernel_time", 2040, 10, "MatMul"),
        _ev("Node", "fc_fence_before", 2039, 1, "MatMul"),  # not a kernel-time event
        _ev("Session", "model_run", 2000, 60),
        _ev("Node", "conv_kernel_time", 3001, 50, "Conv"),
        _ev("Node", "fc_kernel_time", 3060, 10, "MatMul"),
        _ev("Session", "model_run", 3000, 80),
    ]
    out = aggregate_ort_trace(events, skip_runs=1)
    assert out["available"] and out["runs"] == 2
    assert [n["name"] for n in out["by_node"]] == ["conv", "fc"]
    assert out["by_node"][0]["mean_ms_per_run"] == pytest.approx(0.040)  # (30 + 50) / 2 µs
    assert out["by_node"][1]["mean_ms_per_run"] == pytest.approx(0.010)
    assert out["node_total_ms_per_run"] == pytest.approx(0.050)
    assert out["model_run_ms_per_run"] == pytest.approx(0.070)
    assert [g["op_type"] for g in out["by_op_type"]] == ["Conv", "MatMul"]
    assert out["by_op_type"][0]["share"] == pytest.approx(0.8)
    assert aggregate_ort_trace(events, skip_runs=3)["available"] is False


@pytest.mark.parametrize("key", ["float_tflite", "int8_tflite"])
def test_tflite_says_per_op_time_is_not_exposed_and_lists_ops(models: dict, key: str) -> None:
    ops = rt.profile(models[key], runs=3, warmup=0).op_profile
    assert ops["available"] is False
    assert "per-op time not exposed by the LiteRT Python API" in ops["reason"]
    names = {o["op_name"] for o in ops["ops"]}
    assert {"CONV_2D", "FULLY_CONNECTED"} <= names
    assert sum(ops["op_counts"].values()) == len(ops["ops"])


def test_op_profile_can_be_disabled(models: dict) -> None:
    ops = rt.profile(models["float_onnx"], runs=2, warmup=0, op_profile=False).op_profile
    assert ops["available"] is False and "disabled" in ops["reason"] and ops["by_node"] == []


# -- memory ------------------------------------------------------------------------------------
@pytest.mark.skipif(not LINUX_PROC, reason="needs /proc (Linux)")
def test_memory_section_is_consistent(models: dict) -> None:
    mem = rt.profile(models["float_onnx"], runs=5, warmup=1, op_profile=False).memory
    before, after = mem["rss_before_load"]["bytes"], mem["rss_after_load"]["bytes"]
    assert before > 0 and after > 0
    assert mem["model_delta_after_load"]["bytes"] == after - before
    peak = max(mem["peak_during_load"]["bytes"], mem["peak_during_runs"]["bytes"])
    assert mem["model_delta_peak"]["bytes"] == peak - before
    assert mem["peak_during_runs"]["bytes"] >= mem["peak_during_runs_sampled"]["bytes"]
    assert "VmRSS" in mem["rss_before_load"]["method"]
    assert "statm" in mem["peak_during_runs_sampled"]["method"]


@pytest.mark.skipif(not LINUX_PROC, reason="needs /proc (Linux)")
def test_peak_sampler_sees_a_transient_allocation() -> None:
    import time

    size = 64 * 2**20
    before = memory.rss().bytes
    with memory.PeakSampler(interval_s=0.001) as sampler:
        block = np.ones(size, dtype=np.uint8)  # touched pages: resident
        time.sleep(0.05)
        del block
    assert sampler.samples >= 3
    assert sampler.sampled().bytes - before >= 0.9 * size
    assert memory.rss().bytes - before < 0.5 * size  # freed again: a peak, not a level
    if sampler.hwm_reset:
        assert sampler.kernel_peak().bytes - before >= 0.9 * size
        assert "clear_refs" in sampler.best().method
    assert sampler.best().bytes >= sampler.sampled().bytes


def test_memvalue_to_dict_states_the_method() -> None:
    assert memory.MemValue(3 * 2**20, "m").to_dict() == {
        "bytes": 3 * 2**20,
        "mib": 3.0,
        "method": "m",
    }
    assert memory.MemValue(None, "why").to_dict() == {"bytes": None, "mib": None, "method": "why"}


# -- a loaded Model, artifact notes --------------------------------------------------------------
def test_a_loaded_model_has_no_load_time_and_says_so(models: dict) -> None:
    m = rt.load(models["int8_floatio_tflite"])
    r = rt.profile(m, runs=3, warmup=0)
    assert r.timing["load_ms"] is None and "loaded Model" in r.timing["load_method"]
    assert r.memory["rss_before_load"]["bytes"] is None
    assert r.memory["model_delta_after_load"]["bytes"] is None
    assert any("loaded Model" in n for n in r.notes)
    with pytest.raises(EdgeOptError, match="pass them to load"):
        rt.profile(m, threads=2)


def test_model_notes_reach_the_profile(models: dict, tmp_path: Path) -> None:
    if rt.model.edgetpu_available():
        pytest.skip("libedgetpu.so.1 is installed here: no CPU fallback note")
    from edgeopt_runtime.manifest import sha256_file, write_manifest

    src = models["int8_floatio_tflite"]
    entries = []
    for name in ("model_int8_edgetpu.tflite", "model_int8.tflite"):
        (tmp_path / name).write_bytes(src.read_bytes())
        entries.append(
            {
                "file": name,
                "format": "tflite",
                "precision": "int8",
                "sha256": sha256_file(tmp_path / name),
                "size_bytes": src.stat().st_size,
            }
        )
    runtime = {"tflite_delegate": "edgetpu", "delegate_library": "libedgetpu.so.1"}
    write_manifest(tmp_path, {"target": {"name": "edgetpu"}, "runtime": runtime, "models": entries})
    doc = rt.profile(tmp_path, runs=3, warmup=0).to_dict()
    assert doc["model"]["artifact_dir"] == str(tmp_path) and doc["model"]["target"] == "edgetpu"
    assert any("not Edge TPU" in n for n in doc["notes"])
    assert doc["model"]["file"] == "model_int8.tflite"


@pytest.mark.parametrize(
    "kwargs,match",
    [({"runs": 0}, "runs"), ({"duration": -1.0}, "duration"), ({"warmup": -1}, "warmup")],
)
def test_bad_arguments_are_edgeopt_errors(models: dict, kwargs: dict, match: str) -> None:
    with pytest.raises(EdgeOptError, match=match):
        rt.profile(models["float_tflite"], **kwargs)


# -- inputs ------------------------------------------------------------------------------------
def test_random_feeds_match_the_spec_and_are_seeded() -> None:
    specs = [
        TensorSpec("img", (None, 4, 4, 3), "float32"),
        TensorSpec("q", (1, 64), "int8", QuantParams((0.1,), (3,))),
        TensorSpec("ids", (1, 7), "int64"),
    ]
    a, b, c = random_feeds(specs, 5), random_feeds(specs, 5), random_feeds(specs, 6)
    assert a["img"].shape == (1, 4, 4, 3) and a["img"].dtype == np.float32
    assert 0.0 <= a["img"].min() and a["img"].max() < 1.0
    assert a["q"].dtype == np.int8 and a["q"].min() < -64 and a["q"].max() > 64  # full range
    assert a["ids"].dtype == np.int64 and 0 <= a["ids"].min() and a["ids"].max() < 10
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["img"], c["img"])


def test_profile_reads_inputs_from_npz(models: dict, tmp_path: Path) -> None:
    x = np.random.default_rng(0).uniform(0, 1, (1, *SHAPE)).astype(np.float32)
    path = tmp_path / "in.npz"
    np.savez(path, x)  # single-input model: any key ("arr_0") is accepted
    r = rt.profile(models["int8_floatio_tflite"], inputs=path, runs=2, warmup=0)
    assert r.inputs["source"] == "npz" and r.inputs["path"] == str(path)
    assert r.inputs["arrays"] == [{"name": "image", "shape": [1, *SHAPE], "dtype": "float32"}]


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def test_npz_errors_name_the_file_and_what_was_expected(tmp_path: Path) -> None:
    specs = [
        TensorSpec("a", (None, 3), "float32"),
        TensorSpec("b", (1, 2), "int8", QuantParams((0.1,), (0,))),
    ]
    good = {"a": np.zeros((4, 3), np.float32), "b": np.zeros((1, 2), np.float32)}
    assert set(read_npz(_npz(tmp_path / "ok.npz", **good), specs)) == {"a", "b"}
    cases = [
        (tmp_path / "missing.npz", "not found"),
        (tmp_path / "in.npy", "expected a .npz"),
        (_npz(tmp_path / "names.npz", a=good["a"], c=good["b"]), r"missing \['b'\]"),
        (_npz(tmp_path / "shape.npz", a=np.zeros((1, 4), np.float32), b=good["b"]), r"\[\?, 3\]"),
    ]
    (tmp_path / "in.npy").write_bytes(b"x")
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 this is not a zip")
    cases.append((corrupt, "not a readable .npz"))
    for path, match in cases:
        with pytest.raises(InputError, match=match) as info:
            read_npz(path, specs)
        assert str(path) in str(info.value) and "\n" not in str(info.value)
    # any_batch lets a fixed batch-1 input take N samples (for run_batch)
    batch = _npz(tmp_path / "batch.npz", a=good["a"], b=np.zeros((5, 2), np.float32))
    assert read_npz(batch, specs, any_batch=True)["b"].shape == (5, 2)


def test_npz_with_the_wrong_dtype_fails_with_the_file_name(models: dict, tmp_path: Path) -> None:
    path = _npz(tmp_path / "bad.npz", image=np.zeros((1, *SHAPE), np.complex64))
    with pytest.raises(InputError, match="bad.npz.*expected dtype"):
        rt.profile(models["float_tflite"], inputs=path, runs=1, warmup=0)
