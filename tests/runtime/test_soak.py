"""Bounded soak in CI: repeated Model.run must not leak (full run: tests/stress/soak.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.stress.soak import build_model

ROOT = Path(__file__).resolve().parents[2]


def test_repeated_runs_do_not_grow_rss(tmp_path: Path) -> None:
    model = build_model(tmp_path)
    # A fresh interpreter process without TensorFlow loaded, as on a device.
    code = (
        "import json, sys; from tests.stress.soak import soak; "
        f"r = soak(__import__('pathlib').Path({str(model)!r}), 20000); print(json.dumps(r))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    r = json.loads(proc.stdout.strip().splitlines()[-1])
    # 20k runs; a leak of even 64 bytes per call would add ~1.2 MiB. Allow 1 MiB of noise.
    assert r["growth_kib"] < 1024, r
