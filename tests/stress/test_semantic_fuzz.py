"""The full semantic fuzz (``tests/stress/semantic_fuzz.py``) under pytest: ``-m stress``.

2,000 mutated model files and 200 mutated artifact directories through ``load`` + ``run``:
no signal, no hang, no raw Python exception. A small version runs in the default suite
(``tests/runtime/test_semantic_fuzz_smoke.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.runtime import _fuzz_worker as fw
from tests.stress import semantic_fuzz as sf


@pytest.mark.stress
def test_semantic_fuzz_full_size(tmp_path: Path) -> None:
    bases = sf.build_bases(tmp_path, seed=0)
    report = sf.run(bases, tmp_path, n_models=2000, n_artifacts=200, seed=20261201, timeout=60)
    assert report["model_files"] >= 2000 and report["artifact_dirs"] >= 200
    assert not report["failures"], report["failures"][:20]
    assert set(report["outcomes"]) <= fw.ACCEPTABLE
