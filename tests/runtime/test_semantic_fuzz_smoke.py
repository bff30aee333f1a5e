"""A small seeded run of the semantic fuzz (full size: ``tests/stress/semantic_fuzz.py``):
mutated models and artifact directories never crash, hang or raise a raw exception."""

from __future__ import annotations

from pathlib import Path

from tests.runtime import _fuzz_worker as fw
from tests.stress import semantic_fuzz as sf

from . import conftest_verify

base_models = conftest_verify.base_models  # the session fixture, shared with test_verify


def test_semantic_mutations_are_refused_or_run(
    base_models: dict[str, Path], tmp_path: Path
) -> None:
    report = sf.run(base_models, tmp_path, n_models=140, n_artifacts=84, seed=11, timeout=60)
    assert not report["failures"], report["failures"][:10]
    outcomes = report["outcomes"]
    assert outcomes.get("rejected", 0) > 40 and outcomes.get("ran", 0) > 10, outcomes
    kinds = set(report["by_kind"])
    assert {f"artifact_{k}" for k in sf.MANIFEST_MUTATIONS} <= kinds
    assert set(sf.TFLITE_MUTATIONS) | set(sf.ONNX_MUTATIONS) <= kinds
    assert set(outcomes) <= fw.ACCEPTABLE
