"""Shared-``Model`` throughput from 1, 2, 4, 8 threads (TFLite and ONNX), and 0 errors.

    python -m benchmarks.threads [--model tiny_cnn|mobilenet_v2] [--calls N] [--rounds R] [--json]

One ``edgeopt_runtime.Model`` per file is shared by T threads, each engine at 1 intra-op thread
(the concurrency comes from the callers). Every call's output is compared with the one a lone
call gives for the same input: ``errors`` counts exceptions, ``wrong`` differing results; both
must be 0. Modes:

* ``tflite-pool``: the runtime's default, a pool of interpreters that grows to the number of
  concurrent callers (at most ``min(cpu_count, 8)``);
* ``tflite-lock``: ``load(..., max_instances=1)``, one interpreter behind a lock;
* ``onnx``: one ``InferenceSession`` (ORT's ``run`` is thread-safe).

Rounds interleave the modes (every mode sees the same machine load); the table gives the median
over rounds of inferences per second and of the speed-up over 1 thread in the same mode.
Results of a run on this host are in ``docs/architecture.md`` (runtime, thread safety) and the
issue-10 note.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

THREADS = (1, 2, 4, 8)
MODES = ("tflite-pool", "tflite-lock", "onnx")


def build(model_name: str, workdir: Path) -> dict[str, Path]:
    """Convert one seeded benchmark model to int8 TFLite and float ONNX (TensorFlow here)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    import tf2onnx

    from benchmarks.models import MODELS

    spec = MODELS[model_name]
    with contextlib.redirect_stdout(sys.stderr):
        model = spec.build(0)
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        samples = spec.inputs(16, seed=1)
        conv.representative_dataset = lambda: ([x] for x in samples)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        tfl = workdir / f"{model_name}_int8.tflite"
        tfl.write_bytes(conv.convert())
        sig = [tf.TensorSpec((1, *spec.input_shape), tf.float32, name=spec.input_name)]

        @tf.function(input_signature=sig)
        def fn(x: Any) -> Any:
            return {"out": model(x, training=False)}

        onnx = workdir / f"{model_name}.onnx"
        tf2onnx.convert.from_function(fn, input_signature=sig, opset=17, output_path=str(onnx))
    return {"tflite": tfl, "onnx": onnx, "input_shape": spec.input_shape}  # type: ignore[dict-item]


def _load(paths: dict[str, Any], mode: str) -> Any:
    import edgeopt_runtime as rt

    if mode == "onnx":
        return rt.load(paths["onnx"], threads=1)
    return rt.load(paths["tflite"], threads=1, max_instances=1 if mode == "tflite-lock" else None)


def measure(model: Any, xs: list[np.ndarray], want: list[np.ndarray], threads: int,
            calls: int) -> dict[str, Any]:  # fmt: skip
    """``calls`` calls spread over ``threads`` threads sharing ``model``: throughput and errors."""
    errors, wrong = [0], [0]
    lock = threading.Lock()
    barrier = threading.Barrier(threads + 1)
    per = [calls // threads + (1 if k < calls % threads else 0) for k in range(threads)]

    def work(k: int) -> None:
        bad = mismatched = 0
        barrier.wait()
        for i in range(per[k]):
            j = (k * 7 + i) % len(xs)
            try:
                if not np.array_equal(model.run(xs[j])[0], want[j]):
                    mismatched += 1
            except Exception:  # noqa: BLE001 - counted: the benchmark's point is zero of these
                bad += 1
        with lock:
            errors[0] += bad
            wrong[0] += mismatched

    pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in pool:
        t.join()
    wall = time.perf_counter() - t0
    return {"threads": threads, "calls": calls, "wall_s": wall, "ips": calls / wall,
            "errors": errors[0], "wrong": wrong[0]}  # fmt: skip


def run(paths: dict[str, Any], calls: int, rounds: int, threads: tuple[int, ...] = THREADS,
        modes: tuple[str, ...] = MODES, log: Any = None) -> dict[str, Any]:  # fmt: skip
    """Interleaved rounds of every (mode, threads); medians per cell."""
    rng = np.random.default_rng(7)
    xs = [rng.uniform(0, 1, (1, *paths["input_shape"])).astype(np.float32) for _ in range(16)]
    models = {m: _load(paths, m) for m in modes}
    want = {m: [models[m].run(x)[0] for x in xs] for m in modes}
    cells: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in range(rounds):
        for t in threads:
            for m in modes:
                cells.setdefault((m, t), []).append(measure(models[m], xs, want[m], t, calls))
        if log:
            print(f"round {r + 1}/{rounds} done", file=log, flush=True)
    rows = []
    for m in modes:
        base = [c["ips"] for c in cells[(m, 1)]]
        for t in threads:
            got = cells[(m, t)]
            rows.append({
                "mode": m, "threads": t,
                "ips_median": statistics.median(c["ips"] for c in got),
                "speedup_vs_1_thread": statistics.median(
                    c["ips"] / b for c, b in zip(got, base, strict=True)),
                "errors": sum(c["errors"] for c in got), "wrong": sum(c["wrong"] for c in got),
                "calls": sum(c["calls"] for c in got),
                "interpreters": getattr(models[m].runner, "instances", None),
            })  # fmt: skip
    return {"schema": "edgeopt.bench.threads/1", "rows": rows, "rounds": rounds,
            "calls_per_cell": calls, "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}  # fmt: skip


def table(doc: dict[str, Any]) -> str:
    lines = ["| mode | threads | inferences/s (median) | vs 1 thread | errors | wrong |",
             "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in doc["rows"]:
        lines.append(
            f"| {r['mode']} | {r['threads']} | {r['ips_median']:,.0f} | "
            f"{r['speedup_vs_1_thread']:.2f}x | {r['errors']} | {r['wrong']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny_cnn", help="a benchmarks.models name")
    ap.add_argument("--calls", type=int, default=800, help="calls per (mode, threads) cell")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgeopt-threads-") as tmp:
        print(f"building {args.model} ...", file=sys.stderr, flush=True)
        paths = build(args.model, Path(tmp))
        doc = run(paths, args.calls, args.rounds, log=sys.stderr)
    doc["model"] = args.model
    print(json.dumps(doc, indent=1) if args.json else table(doc))
    bad = sum(r["errors"] + r["wrong"] for r in doc["rows"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
