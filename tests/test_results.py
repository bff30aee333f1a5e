"""Result records (``edgeopt.results``): one JSON writer, and a failed target end to end."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from edgeopt.results import (
    GateResult,
    Gates,
    LatencyPair,
    LatencyStats,
    ReportHeader,
    Status,
    TargetResult,
)


def test_records_round_trip_through_json_and_pickle() -> None:
    pair = LatencyPair(LatencyStats.from_ns([2_000_000, 2_100_000, 1_900_000]),
                       LatencyStats.from_ns([1_000_000, 1_050_000, 950_000]), threads=1,
                       backend="b", delegate="xnnpack", warmup=5, where="here", method="m")
    d = pair.to_dict()
    assert d["speedup_p50"] == 2.0 and d["reference"]["runs"] == 3
    assert set(d) == {"reference", "candidate", "speedup_p50", "threads", "backend", "delegate",
                      "warmup", "where", "method", "host_notes"}
    assert pickle.loads(pickle.dumps(pair)) == pair
    gates = Gates((GateResult("min-sqnr", False, "short", {"output": "y", "value": 1.0}),))
    assert not gates.passed and gates.failed[0].message == "short"
    assert Gates.from_dict(gates.to_dict()) == gates
    assert gates.to_dict()["results"][0] == {"gate": "min-sqnr", "output": "y", "value": 1.0,
                                             "passed": False, "message": "short"}
    header = ReportHeader.now("compare").to_dict()
    assert header["schema"] == "edgeopt.report/1" and header["host"]["cpu_count"]
    with pytest.raises(ValueError, match="report kind"):
        ReportHeader.now("bogus")


def test_a_failed_target_is_a_record() -> None:
    t = TargetResult.failed("edgetpu", "Coral", None, "COS has no int8 kernel",
                            error_type="UnsupportedOpError", skipped=["onnx: no"])
    d = t.to_dict()
    assert t.status is Status.FAILED and d["status"] == "failed" and d["artifacts"] == []
    assert d["error"] == "COS has no int8 kernel" and d["error_type"] == "UnsupportedOpError"
    assert d["directory"] is None and d["skipped"] == ["onnx: no"]


def test_failed_target_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that goes on past a failing target (the switch issue 13 builds on): the failure is
    in the JSON, the Markdown and the HTML, the target that worked is complete."""
    pytest.importorskip("tensorflow")
    import edgeopt.convert as conv
    from tests.converter import _models as M

    monkeypatch.setattr(conv, "FAIL_FAST", False)
    calib = tmp_path / "x.npz"
    np.savez(calib, x=M.images((4,), 8, seed=5))
    out = tmp_path / "out"
    report = conv.convert(M.cos_savedmodel_dir(), ["arm-cpu", "edgetpu"], calib, out=out,
                          formats="tflite", latency_runs=2)
    ok, failed = report.result.targets
    assert ok.status is Status.OK and failed.status is Status.FAILED
    assert report.result.failed_targets == (failed,)
    assert "COS" in failed.error and failed.error_type == "UnsupportedOpError"
    saved = json.loads((out / "report.json").read_text())
    assert saved["targets"][1]["status"] == "failed" and "COS" in saved["targets"][1]["error"]
    assert (out / "arm-cpu" / "manifest.json").is_file() and not (out / "edgetpu").exists()
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    for page in (md, html):
        assert "edgetpu" in page and "failed" in page and "COS" in page
