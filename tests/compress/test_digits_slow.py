"""The done-when numbers on the real digits classifier (slow: minutes of fine-tuning and four
conversions). ``benchmarks/compression.py`` runs the same cases with more epochs and writes the
results table."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("sklearn", reason="needs the digits scikit-learn ships (.[example])")

pytestmark = pytest.mark.slow


def test_prune_cluster_distill_and_qat_on_digits(tmp_path: Path) -> None:
    from benchmarks import compression as bench

    train = bench.training_npz(tmp_path)
    d = bench._compress(bench.EXAMPLE, train, tmp_path / "c1", prune=0.5, cluster=16,
                        distill=True, epochs=8)
    row = bench._row("c1", d)
    assert row["float_accuracy"][0] - row["int8_accuracy"][1] <= 0.01 + 1e-9
    assert row["gzip"]["reduction"] >= 0.30
    q = bench._row("qat", bench._compress(bench.outlier_model(tmp_path), train, tmp_path / "q",
                                          qat=True, epochs=15))
    assert q["int8_accuracy"][1] > q["int8_accuracy"][0]
