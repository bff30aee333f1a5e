"""Report JSON (strict, round trip, schema checks), Markdown / HTML renderers, gates and diff."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from edgeopt_runtime.errors import EdgeOptError

from edgeopt.commands.diff import diff_reports, render_diff
from edgeopt.drift import compare_outputs, evaluate_gates, parse_max_drop, task_metrics
from edgeopt.report import (
    SCHEMA,
    ReportError,
    dumps,
    load_report,
    nice_ticks,
    render_html,
    render_markdown,
    write_report,
)
from edgeopt.results import (
    ArtifactResult,
    CompareResult,
    ConvertResult,
    DataInfo,
    Evaluation,
    Gates,
    LabelsInfo,
    LatencyPair,
    LatencyStats,
    ModelInfo,
    OutputDrift,
    ReportHeader,
    Status,
    TargetResult,
    TaskMetrics,
)


def _latency(ref_ms: list[float], cand_ms: list[float]) -> LatencyPair:
    return LatencyPair(LatencyStats.from_ns([int(v * 1e6) for v in ref_ms]),
                       LatencyStats.from_ns([int(v * 1e6) for v in cand_ms]), threads=1,
                       backend="test", delegate="xnnpack", warmup=5, where="this host",
                       method="interleaved")


def _evaluation(noise: float = 0.1, seed: int = 0,
                latency: LatencyPair | None = None) -> Evaluation:
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=(60, 10))
    cand = ref + rng.normal(scale=noise, size=ref.shape)
    labels = np.argmax(ref + rng.normal(scale=0.5, size=ref.shape), axis=1)
    drift = compare_outputs([ref, ref[:, 0]], [ref, cand[:, 0]], ["same", "vec"])
    task = task_metrics([cand], [ref], labels, n_boot=50)
    data = DataInfo(source="val.npz", format="npz", count=60, sha256="0" * 64, synthetic=False,
                    num=None, seed=0, max_samples=256, role="evaluation",
                    labels=LabelsInfo("val.npz", 60))
    if latency is None:
        latency = _latency(list(rng.normal(2, .1, 50)), list(rng.normal(1, .1, 50)))
    return Evaluation(data, tuple(OutputDrift.from_dict(d) for d in drift),
                      TaskMetrics.from_dict(task), latency)


def _model(path: str, precision: str, size: int) -> ModelInfo:
    return ModelInfo(path=path, format="tflite", precision=precision, size_bytes=size,
                     sha256="0" * 64, backend="test")


def _compare_report(noise: float = 0.1, seed: int = 0) -> dict:
    """A compare report as the records write it."""
    ev = _evaluation(noise, seed)
    per_layer = {"available": True, "method": "test", "num_samples": 60,
                 "layers": [{"rank": 1, "layer": "<script>x</script>", "tensor": "t1",
                             "op": "CONV_2D", "sqnr_db": 3.5},
                            {"rank": 2, "layer": "head", "tensor": "t2", "op": "FC",
                             "sqnr_db": math.inf}]}
    gates = evaluate_gates([o.to_dict() for o in ev.drift], ev.task.to_dict(), min_sqnr=25.0)
    return CompareResult(ReportHeader.now("compare"), _model("f.tflite", "float32", 4000),
                         _model("q.tflite", "int8", 1500), ev, per_layer,
                         Gates.from_dict(gates)).to_dict()


def test_json_is_strict_and_round_trips_non_finite(tmp_path: Path) -> None:
    rep = _compare_report()
    assert rep["drift"][0]["metrics"]["sqnr_db"] == math.inf  # identical output
    text = dumps(rep)
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert data["drift"][0]["metrics"]["sqnr_db"] == "inf"
    assert data["schema"] == SCHEMA and data["kind"] == "compare"
    paths = write_report(rep, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.json",
                                                          "report.md"]
    back = load_report(tmp_path)  # a folder finds its report.json
    assert back["drift"][0]["metrics"]["sqnr_db"] == math.inf
    assert back["per_layer"]["layers"][1]["sqnr_db"] == math.inf
    assert back["drift"][1]["metrics"] == pytest.approx(rep["drift"][1]["metrics"])
    assert paths["json"].read_text() == text


def test_load_report_refuses_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="no such report file"):
        load_report(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ReportError, match="not JSON"):
        load_report(bad)
    bad.write_text(json.dumps({"schema": "edgeopt.manifest/1"}))
    with pytest.raises(ReportError, match="expected an edgeopt report"):
        load_report(bad)
    bad.write_text(json.dumps({"schema": "edgeopt.report/2", "kind": "compare"}))
    with pytest.raises(ReportError, match="not supported"):
        load_report(bad)
    assert issubclass(ReportError, EdgeOptError)


def test_markdown_has_tables_and_gate_verdict() -> None:
    md = render_markdown(_compare_report())
    assert "**Gates: FAILED**" in md  # output "same" passes, "vec" has SQNR ~ 20 dB < 25
    assert "| accuracy |" in md and "95% CI of drop" in md
    assert "| same | classifier | 60x10 | ∞ |" in md
    assert "vec: regression (inferred: one value per sample)" in md
    assert "top-1 agree" in md  # "same" is a classifier: its class columns are shown
    assert "| 1 | <script>x</script> | t1 | CONV_2D | 3.5 |" in md


def _svg_count(page: str, cls: str) -> int:
    return len(re.findall(rf'class="{cls}"', page))


def test_html_is_self_contained_with_plots() -> None:
    rep = _compare_report()
    page = render_html(rep)
    assert page.startswith("<!DOCTYPE html>")
    lowered = page.lower()
    for forbidden in ("<script", "src=", "href=", "@import", "url(", "https://"):
        assert forbidden not in lowered, forbidden
    # The only URL is the SVG namespace identifier (not fetched).
    assert set(re.findall(r"http://[^\"']+", page)) == {"http://www.w3.org/2000/svg"}
    assert "&lt;script&gt;x&lt;/script&gt;" in page  # names are escaped
    assert _svg_count(page, "bar") == 2  # per-layer bars: finite and inf
    points = [len(o["scatter"]["reference"]) for o in rep["drift"]]
    assert points[0] <= 400 and points[1] == 60  # the big output is subsampled
    assert _svg_count(page, "pt") == sum(points)  # one circle per scatter point
    assert _svg_count(page, "hist") > 2  # latency histogram bars
    assert "Gates: FAILED" in page


def _convert_report() -> dict:
    """A convert report as the records write it: one artifact, one failed target."""
    ev = _evaluation(latency=_latency([3.0] * 5, [1.5] * 5))
    art = ArtifactResult(
        target="arm-cpu", file="model_int8.tflite", path="arm-cpu/model_int8.tflite",
        format="tflite", precision="int8", sha256="0" * 64, size_bytes=2048,
        float_size_bytes=4096, float_sha256="1" * 64, io={"inputs": [], "outputs": []},
        evaluation=ev, details={}, preflight={"error": "not analysed here"},
        calibration_method="minmax", conversion_seconds=0.5, notes=("a note",))
    ok = TargetResult("arm-cpu", Status.OK, "ARM", None, "arm-cpu", (art,))
    failed = TargetResult.failed("edgetpu", "Coral", None, "op XYZ not mapped",
                                 error_type="UnsupportedOpError")
    return ConvertResult(
        header=ReportHeader.now("convert"), source={"path": "m.keras"},
        source_model=_model("m.keras", "float32", 9000), calibration={}, data=ev.data,
        settings={}, targets=(ok, failed), gates=Gates(strict=False), notes=("run note",),
        synthetic_calibration=False, wall_seconds=1.0).to_dict()


def test_one_block_list_draws_convert_reports_with_a_failed_target() -> None:
    convert = _convert_report()
    md = render_markdown(convert)
    assert ("| arm-cpu · model_int8.tflite | ok | tflite | int8 | 2.00 KiB | — | 3 | 1.5 | 2.00x |"
            in md)
    assert "| edgetpu | failed: UnsupportedOpError |" in md
    assert "**failed (UnsupportedOpError)**" in md and "- ❌ op XYZ not mapped" in md
    assert "## arm-cpu · model_int8.tflite" in md and "### Output drift" in md
    assert "Pre-flight could not analyse the model: not analysed here" in md
    page = render_html(convert)
    assert "<h2>arm-cpu · model_int8.tflite</h2>" in page
    assert "<h3>Output drift (per sample: mean, p5, worst)</h3>" in page
    assert '<div class="gates fail">failed (UnsupportedOpError)' in page
    assert "op XYZ not mapped" in page and "run note" in page and "a note" in page
    # the same blocks in both: every Markdown heading is an HTML heading
    import re as _re

    md_heads = _re.findall(r"^#+ (.+)$", md, flags=_re.M)
    html_heads = [_re.sub("<[^>]+>", "", h)
                  for h in _re.findall(r"<h\d>(.*?)</h\d>", page)]
    assert md_heads == [h.replace("&amp;", "&") for h in html_heads]


def test_per_layer_unavailable_is_said() -> None:
    rep = _compare_report()
    rep["per_layer"] = {"available": False, "reason": "pass --source MODEL", "layers": []}
    assert "Not available: pass --source MODEL" in render_markdown(rep)
    assert "Not available: pass --source MODEL" in render_html(rep)


def test_nice_ticks() -> None:
    assert nice_ticks(0, 10, 6) == [0, 2, 4, 6, 8, 10]
    assert nice_ticks(-3, 47, 6) == [0, 10, 20, 30, 40]
    assert nice_ticks(0.013, 0.019, 4) == [0.014, 0.016, 0.018]
    assert nice_ticks(5, 5) == [5]


def test_parse_max_drop() -> None:
    assert parse_max_drop("1.5") == (1.5, False)
    assert parse_max_drop(" 2% ") == (2.0, True)
    for bad in ("abc", "-1", "nan", "%"):
        with pytest.raises(EdgeOptError, match="--max-drop"):
            parse_max_drop(bad)


def _task(float_acc: float, quant_acc: float) -> dict:
    return {"metrics": {"accuracy": {"float": float_acc, "quantized": quant_acc,
                                     "drop": float_acc - quant_acc}}}


def test_gates_pass_fail_and_say_by_how_much() -> None:
    drift = [{"name": "y", "metrics": {"sqnr_db": 18.0, "cosine": 0.999}, "skipped": {}}]
    g = evaluate_gates(drift, _task(0.90, 0.87), max_drop=(1.0, False), min_sqnr=20.0,
                       min_cosine=0.99)
    assert not g["passed"]
    msgs = {r["gate"]: r for r in g["results"]}
    assert msgs["max-drop"]["value"] == pytest.approx(3.0)
    assert "over by 2.00 points" in msgs["max-drop"]["message"]
    assert "short by 2 dB" in msgs["min-sqnr"]["message"]
    assert msgs["min-cosine"]["passed"]
    g = evaluate_gates(drift, _task(0.90, 0.87), max_drop=(4.0, True))  # 3.33% of 0.90
    assert g["passed"] and g["results"][0]["value"] == pytest.approx(100 * 0.03 / 0.90)
    g = evaluate_gates(drift, _task(0.90, 0.87), max_drop=(3.0, True))
    assert not g["passed"]


def test_gate_that_cannot_be_evaluated_fails() -> None:
    drift = [{"name": "y", "metrics": {}, "skipped": {"sqnr_db": "reference output is all "
                                                                 "zeros"}}]
    g = evaluate_gates(drift, None, max_drop=(1.0, False), min_sqnr=10.0)
    assert not g["passed"]
    assert all("could not be evaluated" in r["message"] for r in g["results"])
    assert "all zeros" in g["results"][1]["message"]
    assert evaluate_gates(drift, None) == {"passed": True, "results": []}


def test_diff_flags_regressions_beyond_tolerance() -> None:
    old = _compare_report(noise=0.01)
    new = _compare_report(noise=0.3)
    new["latency"]["candidate"]["p50_ms"] = 1.05  # +5%: inside the 10% latency tolerance
    new["models"]["candidate"]["size_bytes"] = 3000
    d = diff_reports(old, new)
    changes = {c["what"]: c for c in d["entries"][0]["changes"]}
    assert changes["vec: SQNR dB"]["worse"]
    assert changes["size bytes"]["worse"] and changes["size bytes"]["delta"] == 1500
    assert not changes["latency p50 quantized ms"]["worse"]
    assert "same: SQNR dB" not in changes  # inf -> inf is no change
    assert d["regressions"] == sum(c["worse"] for c in changes.values())
    text = render_diff(d)
    assert "vec: SQNR dB" in text and "WORSE" in text
    d = diff_reports(old, old)
    assert d["regressions"] == 0 and d["entries"][0]["status"] == "same"


def test_diff_pairs_a_compare_with_a_one_artifact_convert_report() -> None:
    cmp = _compare_report(noise=0.01)
    conv = {"schema": SCHEMA, "kind": "convert", "created": "now",
            "targets": [{"name": "arm-cpu", "status": "ok", "artifacts": [
                {"file": "m.tflite", "size_bytes": 1500, "drift": _compare_report(0.3)["drift"]}]}]}
    d = diff_reports(cmp, conv)
    assert [e["key"] for e in d["entries"]] == ["candidate -> arm-cpu · m.tflite"]
    changes = {c["what"]: c for c in d["entries"][0]["changes"]}
    assert changes["vec: SQNR dB"]["worse"] and "size bytes" not in changes  # same size
