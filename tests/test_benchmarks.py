"""The benchmark suite: MAC counting, timing harness, host peak, checks, and one tiny end-to-end
run (tiny CNN, arm-cpu, 1 thread, 2 short rounds) so the suite cannot rot.

The end-to-end run converts with the real ``edgeopt.convert`` in a child process (~20-30 s);
every number it asserts is recomputed from the same run's document, never a constant — except
the MAC count, which is derived by hand from the tiny CNN's layer shapes below.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import checks, host, report, suite, timing
from benchmarks.macs import op_macs

ROOT = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------- MAC counting


def test_op_macs_per_op_rule() -> None:
    # CONV_2D: out [1,16,16,16], weights [O=16, 3, 3, I=3] -> 16*16*16 * 3*3*3
    assert op_macs("CONV_2D", [(1, 32, 32, 3), (16, 3, 3, 3), (16,)], (1, 16, 16, 16), {}) == (
        16 * 16 * 16 * 27
    )
    # DEPTHWISE: weights [1, 3, 3, 16] -> out elements * 9
    assert op_macs("DEPTHWISE_CONV_2D", [(1, 16, 16, 16), (1, 3, 3, 16)], (1, 16, 16, 16),
                   {}) == 16 * 16 * 16 * 9
    # FULLY_CONNECTED with keep_num_dims: out [1,128,1024], weights [1024, 256]
    assert op_macs("FULLY_CONNECTED", [(1, 128, 256), (1024, 256)], (1, 128, 1024), {}) == (
        128 * 1024 * 256
    )
    # BATCH_MATMUL: K is the last dim of x, or the one before it with adj_x
    assert op_macs("BATCH_MATMUL", [(4, 128, 64), (4, 64, 128)], (4, 128, 128), {}) == (
        4 * 128 * 128 * 64
    )
    assert op_macs("BATCH_MATMUL", [(4, 64, 128), (4, 64, 128)], (4, 128, 128),
                   {"adj_x": True}) == 4 * 128 * 128 * 64
    # TRANSPOSE_CONV: inputs (output_shape, weights [O, kh, kw, I], x [1, h, w, I])
    assert op_macs("TRANSPOSE_CONV", [(4,), (8, 3, 3, 4), (1, 5, 5, 4)], (1, 10, 10, 8),
                   {}) == 25 * 4 * 9 * 8


def test_op_macs_non_mac_and_unknown_shapes() -> None:
    assert op_macs("ADD", [(1, 4), (1, 4)], (1, 4), {}) == 0
    assert op_macs("CONV_2D", [(1, -1, -1, 3), (16, 3, 3, 3)], (1, -1, -1, 16), {}) is None


# --------------------------------------------------------------------------- timing harness


class _FakeClock:
    """A clock that each fake model advances by its own cost: timings are exact."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def model(self, cost: float, order: list[str], name: str):  # noqa: ANN201
        def run() -> None:
            order.append(name)
            self.t += cost

        return run


def test_interleaved_rotates_order_and_ratio_is_within_round() -> None:
    clock, order = _FakeClock(), []
    fns = {"float": clock.model(0.004, order, "float"), "int8": clock.model(0.002, order, "int8")}
    plan = timing.Plan(rounds=4, block_s=0.01, warmup=1, min_calls=1, max_calls=100)
    samples = timing.interleaved(fns, plan, clock=clock)
    assert samples["float"].round_medians == pytest.approx([0.004] * 4)
    r = timing.ratio(samples["float"], samples["int8"])
    assert r["speedup"] == pytest.approx(2.0)
    assert r["per_round"] == pytest.approx([2.0] * 4)
    # Blocks after the calibration calls: round 0 starts with float, round 1 with int8.
    timed = order[4:]  # 1 warm-up + 1 sizing call per model
    float_block = plan.block_s / 0.004
    assert timed[0] == "float" and timed[int(float_block)] == "int8"
    round1 = timed[int(float_block) + int(plan.block_s / 0.002):]
    assert round1[0] == "int8"


def test_ratio_refuses_samples_from_different_rounds() -> None:
    a, b = timing.Samples("a", round_medians=[1.0, 1.0]), timing.Samples("b", round_medians=[1.0])
    with pytest.raises(ValueError, match="same rounds"):
        timing.ratio(a, b)


def test_calls_per_block_is_clamped() -> None:
    plan = timing.Plan(block_s=0.1, min_calls=3, max_calls=50)
    assert timing.calls_per_block(1.0, plan) == 3
    assert timing.calls_per_block(1e-6, plan) == 50
    assert timing.calls_per_block(0.01, plan) == 10


# --------------------------------------------------------------------------- host peak


def _info(vendor: str, family: int, flags: list[str], mhz: float = 3000.0) -> dict:
    return {"vendor": vendor, "family": family, "flags": flags, "mhz": mhz}


def test_peak_from_table_and_nominal_clock_without_probe() -> None:
    zen4 = host.peak(_info("AuthenticAMD", 0x19, ["avx512f", "avx512_vnni", "avx2", "fma"]), None)
    assert (zen4["fp32_macs_per_cycle"], zen4["int8_macs_per_cycle"]) == (16, 64)
    assert zen4["fp32_gmacs_per_core"] == pytest.approx(48.0)  # 16 x 3.0 GHz
    assert "upper bound" in zen4["clock_source"]
    intel = host.peak(_info("GenuineIntel", 6, ["avx512f", "avx512_vnni"]), None)
    assert (intel["fp32_macs_per_cycle"], intel["int8_macs_per_cycle"]) == (32, 128)


def test_peak_prefers_measured_when_the_table_is_wrong() -> None:
    # An Intel part with ONE 512-bit FMA unit measures half the table's 2-unit figure.
    probe = {"clock_ghz": 3.0, "fp32_gmacs": 48.0, "int8_gmacs": 192.0}
    p = host.peak(_info("GenuineIntel", 6, ["avx512f", "avx512_vnni"]), probe)
    assert p["fp32_macs_per_cycle"] == 16.0 and p["int8_macs_per_cycle"] == 64.0
    assert any("probe measured" in a for a in p["assumptions"])
    ok = host.peak(_info("GenuineIntel", 6, ["avx512f"]), {"clock_ghz": 3.0, "fp32_gmacs": 95.0})
    assert ok["fp32_macs_per_cycle"] == 32 and "confirmed" in ok["fp32_macs_per_cycle_source"]


def test_cpuinfo_reads_first_processor_block(tmp_path: Path) -> None:
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
                 "model name\t: AMD EPYC 9999\ncpu MHz\t\t: 2596.1\nflags\t\t: fma avx512f\n\n"
                 "processor\t: 1\nmodel name\t: other\n")
    info = host.cpuinfo(str(f))
    assert info["model"] == "AMD EPYC 9999" and info["family"] == 25
    assert info["flags"] == ["avx512f", "fma"] and info["mhz"] == pytest.approx(2596.1)


# --------------------------------------------------------------------------- checks


def _doc_with_speedup(value: float) -> dict:
    group = {"format": "tflite", "threads": 1, "reference": "tflite/float32", "results": {
        "tflite/int8@arm-cpu": {"speedup": {"speedup": value, "per_round": [value],
                                            "spread": [value, value]}, "p50_ms": 1.0}}}
    art = {"id": "tflite/int8@arm-cpu", "targets": ["arm-cpu"], "precision": "int8"}
    return {"models": [{"name": "mobilenet_v2", "artifacts": [art], "latency": [group]}],
            "startup": {"import_edgeopt_runtime": {"import_ms": 350.0,
                                                   "rss_after_import_mib": 30.0}}}


@pytest.mark.parametrize(("value", "status"), [(2.1, "pass"), (1.9, "FAIL")])
def test_speedup_check_reads_the_document(value: float, status: str) -> None:
    result = {c["id"]: c for c in checks.evaluate(_doc_with_speedup(value))}
    assert result["tflite-int8-speedup"]["status"] == status
    assert result["tflite-int8-speedup"]["measured"] == value
    assert result["onnx-int8-speedup"]["status"] == "not run"
    assert result["import-time"]["status"] == "FAIL"  # 0.35 s
    assert result["import-rss"]["status"] == "pass"


# --------------------------------------------------------------------------- end to end


def test_cli_rejects_unknown_model() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "run", "--models", "nope", "--out", "/nonexistent"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 2
    assert "unknown benchmark model 'nope'" in proc.stderr and "tiny_cnn" in proc.stderr


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    work = tmp_path_factory.mktemp("bench")
    config = suite.Config(
        models=("tiny_cnn",), targets=("arm-cpu",), threads=(1,),
        plan=timing.Plan(rounds=3, block_s=0.02, warmup=1), calib_samples=4, drift_samples=3,
        probe_host=False, overhead=False,
    )
    doc = suite.run(config, work / "work")
    return doc, work


def test_tiny_run_structure_and_mac_count(tiny_run: tuple[dict, Path]) -> None:
    doc, _ = tiny_run
    assert doc["schema"] == suite.SCHEMA
    (m,) = doc["models"]
    # Hand count: conv 3x3 s2 3->16 on 16x16 out, depthwise 3x3 x16, conv 1x1 16->32, dense 32->10
    assert m["macs"]["total"] == 16 * 16 * 16 * 27 + 16 * 16 * 16 * 9 + 16 * 16 * 32 * 16 + 320
    assert {a["format"] for a in m["artifacts"]} == {"tflite", "onnx"}
    assert m["notes"] == []  # float references are the files convert measured against
    for a in m["artifacts"]:
        assert a["precision"] == "int8" and a["targets"] == ["arm-cpu"]
        assert 0.0 < a["size_ratio"] < 2.0
        # int8 of a 4-layer net on in-range inputs: well above 20 dB SQNR (about 3 bits of
        # noise on 8), cosine close to 1
        assert a["drift"][0]["sqnr_db"] > 20.0 and a["drift"][0]["cosine"] > 0.99
    (tfl,) = [a for a in m["artifacts"] if a["format"] == "tflite"]
    # Every op of the tiny CNN has an int8 XNNPACK kernel: one partition, nothing left outside
    assert tfl["xnnpack"] == {"partitions": 1, "ops_total": tfl["xnnpack"]["ops_total"],
                              "outside": {}}
    stages = m["conversion"]["stages"]
    for stage in ("load", "data_check", "calibrate", "convert", "validate"):
        assert stages[stage]["seconds"] >= 0.0 and stages[stage]["peak_rss_mib"] > 0
    assert m["conversion"]["per_target"]["arm-cpu"]["calibrate"]["windows"] == 2  # tflite, onnx
    # ORT per-op classes: the tiny CNN's three convolutions are told apart by weight shape
    prof = m["onnx_op_profile"]
    classes = {c["class"]: c for c in prof["classes"]}
    for cls in ("dense conv 3x3", "depthwise conv 3x3", "dense conv 1x1"):
        assert classes[cls]["nodes"] == 1 and classes[cls]["int8_ms"] > 0
    assert sum(c["int8_share"] for c in prof["classes"]) == pytest.approx(1.0, abs=1e-3)


def test_tiny_run_ratios_come_from_same_run_rounds(tiny_run: tuple[dict, Path]) -> None:
    doc, _ = tiny_run
    groups = doc["models"][0]["latency"]
    assert {(g["format"], g["threads"]) for g in groups} == {("tflite", 1), ("onnx", 1)}
    for g in groups:
        ref = g["results"][g["reference"]]
        for key, r in g["results"].items():
            if key == g["reference"]:
                assert r["speedup"] is None
                continue
            per_round = [a / b for a, b in zip(ref["round_p50_ms"], r["round_p50_ms"],
                                               strict=True)]
            assert r["speedup"]["per_round"] == pytest.approx(per_round, rel=2e-3)
            assert r["speedup"]["speedup"] == pytest.approx(statistics.median(per_round),
                                                            rel=2e-3)
            assert r["cpu_speedup"] is not None  # 1 thread: CPU time recorded too
            macs = doc["models"][0]["macs"]["total"]
            assert r["roof"]["gmacs"] == pytest.approx(macs / (r["p50_ms"] * 1e-3) / 1e9,
                                                       rel=1e-2)


def test_tiny_run_writes_json_and_markdown(tiny_run: tuple[dict, Path]) -> None:
    doc, work = tiny_run
    json_path, md_path = report.write(doc, work / "results")
    assert json_path.name == f"{report.result_stem(doc)}.json"
    reread = json.loads(json_path.read_text(encoding="utf-8"))
    assert reread["models"][0]["macs"] == doc["models"][0]["macs"]
    md = md_path.read_text(encoding="utf-8")
    assert md == report.render_markdown(reread)
    assert "| tiny_cnn | tflite | 1 | int8@arm-cpu |" in md
    assert not list((work / "results").glob(".*"))  # no temp files left behind


def test_overhead_check_takes_the_worst_file_and_reports_io_quantization_apart() -> None:
    row = {"raw_us": 10.0, "wrapper_us": 12.0, "rounds": 3}
    doc = {"models": [{
        "name": "tiny_cnn",
        "artifacts": [{"id": "tflite/int8@edgetpu", "io_dtype": "uint8"},
                      {"id": "tflite/int8@arm-cpu", "io_dtype": "float32"}],
        "overhead": {"tflite/float32": {**row, "overhead_us": 2.0},
                     "tflite/int8@arm-cpu": {**row, "overhead_us": 3.0},
                     "tflite/int8@edgetpu": {**row, "overhead_us": 19.0,
                                             "io_quantization_us": 7.5}},
    }]}
    (check,) = [c for c in checks.evaluate(doc) if c["id"] == "overhead-tiny"]
    assert check["status"] == "FAIL" and check["measured"] == 19.0
    assert "tflite/int8@edgetpu (integer IO)" in check["evidence"]
    assert "up to 7.5 µs of input quantization (tflite/int8@edgetpu)" in check["evidence"]
    doc["models"][0]["overhead"]["tflite/int8@edgetpu"]["overhead_us"] = 4.0
    (check,) = [c for c in checks.evaluate(doc) if c["id"] == "overhead-tiny"]
    assert check["status"] == "pass" and check["measured"] == 4.0


def test_speedup_check_prefers_thread_cpu_time() -> None:
    doc = _doc_with_speedup(2.6)  # wall clock, inflated on a busy machine
    entry = doc["models"][0]["latency"][0]["results"]["tflite/int8@arm-cpu"]
    entry["cpu_speedup"] = {"speedup": 1.95, "per_round": [1.95], "spread": [1.9, 2.0]}
    (check,) = [c for c in checks.evaluate(doc) if c["id"] == "tflite-int8-speedup"]
    assert check["measured"] == 1.95 and check["status"] == "FAIL"
    assert "wall clock 2.6x" in check["evidence"]
