"""``edgeopt diff`` separates artifact changes from timing noise (``edgeopt.diffnoise``)."""

from __future__ import annotations

import numpy as np

from edgeopt.commands.diff import diff_reports, render_diff
from edgeopt.diffnoise import median_interval
from edgeopt.results import SCHEMA


def _samples(median_ms: float, spread: float, seed: int, n: int = 50) -> list[float]:
    rng = np.random.default_rng(seed)
    return [float(x) for x in median_ms * (1 + spread * rng.standard_normal(n)).clip(0.2)]


def _report(cand_sha: str, ref_ms: list[float], cand_ms: list[float], *, ref_sha: str = "f" * 64,
            accuracy: float = 0.95) -> dict:
    def stats(s: list[float]) -> dict:
        return {"runs": len(s), "p50_ms": float(np.median(s)), "samples_ms": s}

    return {
        "schema": SCHEMA, "kind": "compare", "created": "now",
        "models": {"reference": {"path": "f.tflite", "sha256": ref_sha, "size_bytes": 4000},
                   "candidate": {"path": "q.tflite", "sha256": cand_sha, "size_bytes": 1500}},
        "data": {"sha256": "d" * 64},
        "drift": [{"name": "y", "metrics": {"sqnr_db": 30.0, "cosine": 0.999}}],
        "task": {"metrics": {"accuracy": {"quantized": accuracy, "drop": 0.95 - accuracy}}},
        "latency": {"reference": stats(ref_ms), "candidate": stats(cand_ms),
                    "speedup_p50": float(np.median(ref_ms) / np.median(cand_ms))},
        "per_layer": None, "gates": None,
    }


def _changes(d: dict) -> dict[str, dict]:
    return {c["what"]: c for c in d["entries"][0]["changes"]}


def test_byte_identical_artifacts_never_regress() -> None:
    old = _report("a" * 64, _samples(2.0, 0.02, 1), _samples(1.0, 0.02, 2))
    # the host got much slower for the quantized runs only, and accuracy moved on other data:
    # still the same bytes
    new = _report("a" * 64, _samples(2.0, 0.02, 3), _samples(1.7, 0.02, 4), accuracy=0.90)
    new["data"]["sha256"] = "e" * 64
    d = diff_reports(old, new)
    assert d["regressions"] == 0 and d["entries"][0]["artifact_changed"] is False
    ch = _changes(d)
    assert ch["speedup p50"]["kind"] == "timing noise" and not ch["speedup p50"]["worse"]
    assert ch["accuracy: quantized"]["kind"] == "data changed"
    assert "same artifact, sha256" in render_diff(d)
    # the same bytes and data giving another accuracy: the engine changed, and that is flagged
    new["data"]["sha256"] = "d" * 64
    ch = _changes(diff_reports(old, new))
    assert ch["accuracy: quantized"]["kind"] == "environment"
    assert ch["accuracy: quantized"]["worse"] and not ch["speedup p50"]["worse"]


def test_a_slower_changed_artifact_is_a_regression() -> None:
    old = _report("a" * 64, _samples(2.0, 0.02, 1), _samples(1.0, 0.02, 2))
    new = _report("b" * 64, _samples(2.0, 0.02, 3), _samples(1.5, 0.02, 4))
    d = diff_reports(old, new)
    ch = _changes(d)
    assert d["entries"][0]["artifact_changed"] is True
    assert ch["speedup p50"]["worse"] and ch["speedup p50"]["kind"] == "artifact"
    assert ch["latency p50 quantized ms"]["worse"]
    assert "latency p50 float ms" not in ch or not ch["latency p50 float ms"]["worse"]
    assert d["regressions"] == 2


def test_host_slowdown_is_not_blamed_on_a_changed_artifact() -> None:
    old = _report("a" * 64, _samples(2.0, 0.02, 1), _samples(1.0, 0.02, 2))
    # both models 50 % slower (a busy host): the interleaved speedup did not move
    new = _report("b" * 64, _samples(3.0, 0.02, 1), _samples(1.5, 0.02, 2))
    d = diff_reports(old, new)
    ch = _changes(d)
    assert d["regressions"] == 0, render_diff(d)
    assert ch["latency p50 quantized ms"]["kind"] == "timing noise"
    assert ch["latency p50 float ms"]["kind"] == "timing noise"  # same float model


def test_overlapping_noise_is_not_a_regression_but_a_clear_shift_is() -> None:
    base = _samples(2.0, 0.02, 1)
    old = _report("a" * 64, base, _samples(1.0, 0.4, 2), ref_sha="e" * 64)
    new = _report("b" * 64, base, _samples(1.15, 0.4, 5), ref_sha="c" * 64)  # very noisy
    ch = _changes(diff_reports(old, new))
    assert ch["latency p50 quantized ms"]["kind"] == "timing noise"
    assert not ch["latency p50 quantized ms"]["worse"]
    # without samples there is only the tolerance to go by: +15 % > 10 % is worse
    for r, p50 in ((old, 1.0), (new, 1.15)):
        for side in ("reference", "candidate"):
            r["latency"][side]["samples_ms"] = []
        r["latency"]["candidate"]["p50_ms"] = p50
    ch = _changes(diff_reports(old, new))
    assert ch["latency p50 quantized ms"]["worse"]
    assert not _changes(diff_reports(old, new, latency_tolerance=0.2))[
        "latency p50 quantized ms"]["worse"]


def test_median_interval_is_seeded_and_holds_the_median() -> None:
    s = np.asarray(_samples(1.0, 0.1, 7))
    lo, hi = median_interval(s)
    assert lo <= float(np.median(s)) <= hi and (lo, hi) == median_interval(s)
