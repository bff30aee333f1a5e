"""Soak: many ``Model.run`` calls on a small model with RSS sampled; RSS must not grow.

    python -m tests.stress.soak --runs 100000

The CI test (tests/runtime/test_soak.py) runs a bounded version of the same function.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np


def rss_kib() -> int:
    """Current resident set size in KiB from /proc/self/status (Linux)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("VmRSS not found in /proc/self/status")


def soak(model_path: Path, runs: int, samples: int = 20) -> dict:
    """Run ``runs`` inferences (int8 model, float IO quantized by the runtime), sampling RSS.

    Returns the RSS samples and the growth between the end of the first 10 % (after warm-up:
    allocator pools and interpreter arenas are filled) and the end.
    """
    import edgeopt_runtime as rt

    model = rt.load(model_path)
    spec = model.inputs[0]
    shape = tuple(1 if d is None else d for d in spec.shape)
    rng = np.random.default_rng(0)
    xs = [rng.uniform(0, 1, shape).astype(np.float32) for _ in range(8)]
    every = max(1, runs // samples)
    trace = []
    for i in range(runs):
        out = model.run(xs[i % len(xs)])
        if i % every == 0 or i == runs - 1:
            trace.append((i, rss_kib()))
    assert np.isfinite(out[0]).all()
    base = next(r for i, r in trace if i >= runs // 10)
    return {
        "runs": runs,
        "rss_kib": trace,
        "rss_after_warmup_kib": base,
        "rss_end_kib": trace[-1][1],
        "growth_kib": trace[-1][1] - base,
    }


def build_model(directory: Path) -> Path:
    """A small int8 conv model with int8 IO (float feeds are quantized by the runtime)."""
    from tests.runtime.models import keras_model, to_tflite

    return to_tflite(
        keras_model(dynamic_batch=False), directory / "soak.tflite", int8=True, io_dtype="int8"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100_000)
    ap.add_argument("--model", type=Path, default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.model or build_model(Path(tmp))
        result = soak(path, args.runs)
    json.dump({k: v for k, v in result.items() if k != "rss_kib"}, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
