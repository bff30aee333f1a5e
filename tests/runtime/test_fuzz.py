"""Seeded fuzz: corrupt .tflite / .onnx files never kill the process that loads them.

Every mutated file goes through the public path (``edgeopt_runtime.load`` + ``Model.run`` on
random inputs) in worker processes; a worker killed by a signal is restarted and the file that
killed it reported. Each file must be rejected with an EdgeOptError naming it, or run. A sample
also goes through ``python -m edgeopt_runtime profile FILE --runs 2``. The full-size version is
``python tests/stress/fuzz_models.py --count 1000``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from . import _fuzz_worker as fw
from . import conftest_verify
from .test_verify import _edit, _op

base_models = conftest_verify.base_models  # session fixtures, shared with test_verify
valid_zoo = conftest_verify.valid_zoo

SEED = 20261124
# Kernels the base models lack: float16-weight DEQUANTIZE, hybrid, 16x8, SPLIT, TRANSPOSE_CONV,
# RESIZE_BILINEAR, attention.
ZOO_BASES = ("misc_fp16", "misc_dynamic", "misc_16x8", "transformer_int8")
PER_BASE_AND_KIND = 12  # 11 base models x 8 mutation kinds x 12 = 1056 files
CLI_SAMPLE = 30


@pytest.fixture(scope="module")
def bases(base_models: dict[str, Path], valid_zoo: dict[str, Path]) -> dict[str, Path]:
    return base_models | {f"{k}.tflite": valid_zoo[k] for k in ZOO_BASES}


@pytest.fixture(scope="module")
def corpus(bases: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> list:
    count = len(bases) * len(fw.MUTATIONS) * PER_BASE_AND_KIND
    return fw.make_corpus(bases, tmp_path_factory.mktemp("fuzz"), count, SEED)


@pytest.fixture(scope="module")
def results(corpus: list) -> list:
    return fw.run_cases(corpus, "load", timeout=60)


def _failures(results: list) -> str:
    bad = [r for r in results if r.outcome not in fw.ACCEPTABLE]
    return "\n".join(f"{r.outcome} {Path(r.case.path).name}: {r.detail}" for r in bad[:20])


def test_corpus_is_deterministic_and_covers_every_kind(bases: dict, corpus: list) -> None:
    assert len(corpus) >= 300
    assert {c.kind for c in corpus} == set(fw.MUTATIONS)
    assert {c.base for c in corpus} == set(bases)
    again = fw.make_corpus(bases, Path(corpus[0].path).parent.with_name("again"), 24, SEED)
    assert [Path(c.path).read_bytes() for c in again] == [
        Path(c.path).read_bytes() for c in corpus[:24]
    ]
    # Every file differs from its base; truncations are shorter.
    for c in corpus:
        data, base = Path(c.path).read_bytes(), bases[c.base].read_bytes()
        assert data != base
        if c.kind == "truncate":
            assert len(data) < len(base)


def test_no_file_crashes_or_escapes_the_error_contract(results: list) -> None:
    counts = Counter(r.outcome for r in results)
    assert counts["crash"] == counts["timeout"] == counts["error"] == 0, _failures(results)
    # The fuzz exercises both sides: files rejected by the checks and files that still run.
    for fmt in (".tflite", ".onnx"):
        mine = Counter(r.outcome for r in results if r.case.path.endswith(fmt))
        total = sum(mine.values())
        assert mine["rejected"] >= 0.3 * total, (fmt, mine)
        assert mine["ran"] >= 0.05 * total, (fmt, mine)


def test_rejections_name_the_file(results: list) -> None:
    for r in results:
        if r.outcome in ("rejected", "run_rejected"):
            assert Path(r.case.path).name in r.detail, r.detail


def test_harness_sees_a_crash_that_the_checks_prevent(
    base_models: dict[str, Path], tmp_path: Path
) -> None:
    """Without the checks LiteRT segfaults on this file; through ``load`` it is refused."""

    def drop_bias(m: object) -> None:
        op = _op(m, "DEPTHWISE_CONV_2D")
        op.inputs = op.inputs[:2]

    path = tmp_path / "dwconv_no_bias.tflite"
    path.write_bytes(_edit(base_models["float_conv.tflite"].read_bytes(), drop_bias))
    valid = base_models["float_conv.tflite"]
    cases = [fw.Case(str(p), "float_conv.tflite", "hand") for p in (valid, path, valid)]
    raw = fw.run_cases(cases, "raw", timeout=60)
    assert [r.outcome for r in raw] == ["ran", "crash", "ran"], raw  # restarted after the crash
    assert "SIGSEGV" in raw[1].detail
    checked = fw.run_cases(cases, "load", timeout=60)
    assert [r.outcome for r in checked] == ["ran", "rejected", "ran"], checked
    assert "has 2 inputs, expected 3" in checked[1].detail


def test_cli_profile_on_a_sample(corpus: list, results: list) -> None:
    """``python -m edgeopt_runtime profile FILE --runs 2``: exit 0 or a one-line error (exit 2)."""
    rng = np.random.default_rng(SEED)
    ran = [r.case for r in results if r.outcome == "ran"]
    rejected = [r.case for r in results if r.outcome != "ran"]
    # Half files that load (they reach the profiler), half that are refused.
    sample = [*rng.choice(ran, CLI_SAMPLE // 2, replace=False)]
    sample += [*rng.choice(rejected, CLI_SAMPLE - len(sample), replace=False)]
    cli = fw.run_cases(sample, "cli", timeout=120)
    assert not [r for r in cli if r.outcome not in fw.ACCEPTABLE], _failures(cli)
    by_path = {r.case.path: r.outcome for r in results}
    for r in cli:  # files the library refuses, the CLI refuses too, naming them
        if by_path[r.case.path] == "rejected":
            assert r.outcome == "rejected" and Path(r.case.path).name in r.detail, r
    # Most loadable files profile (the CLI feeds its own random inputs, which may be refused).
    assert sum(r.outcome == "ran" for r in cli) >= CLI_SAMPLE // 3, Counter(r.outcome for r in cli)
