"""Measured gains: the uncompressed and the compressed model through the same pipeline.

Both float models go through ``edgeopt.convert`` for the same targets with the same calibration
data; then, per artifact present in both: file size raw, gzip -9 and zstd -19 (the
over-the-air size; zstd when the ``zstandard`` package is installed), int8 latency as the ratio
of the two models timed interleaved on this thread's CPU time (``time.thread_time_ns``, 1
thread: other processes on a shared host do not count against either), and accuracy / drift on
the validation data for the float models and their int8 artifacts, all against the float
original.
"""

from __future__ import annotations

import gzip
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .data import Dataset

LATENCY_RUNS = 100
WARMUP = 10
CONVERT_LATENCY_RUNS = 5  # convert's own float-vs-int8 timing; ours is the interleaved pair
NUM_CALIB = 200


def compressed_sizes(path: Path) -> dict[str, int | None]:
    """Raw, gzip -9 and zstd -19 sizes of one file (zstd None when not installed)."""
    data = path.read_bytes()
    out: dict[str, int | None] = {"raw": len(data), "gzip": len(gzip.compress(data, 9, mtime=0))}
    try:
        import zstandard
    except ImportError:
        out["zstd"] = None
    else:
        out["zstd"] = len(zstandard.ZstdCompressor(level=19).compress(data))
    return out


def size_gain(before: dict[str, int | None], after: dict[str, int | None]) -> dict[str, Any]:
    """Per encoding: both sizes and the reduction (1 - after/before)."""
    out = {}
    for key in ("raw", "gzip", "zstd"):
        b, a = before.get(key), after.get(key)
        out[key] = {"before": b, "after": a,
                    "reduction": round(1 - a / b, 4) if a is not None and b else None}
    return out


def interleaved_latency(first: Any, second: Any, feeds: dict[str, np.ndarray],
                        runs: int = LATENCY_RUNS) -> dict[str, Any]:
    """Medians of thread CPU time and wall time of two runtime models, timed alternately.

    Returns:
        ``{"before": {...}, "after": {...}, "speedup_cpu": before/after, "speedup_wall": ...}``.
    """
    for _ in range(WARMUP):
        first.run(feeds)
        second.run(feeds)
    samples: dict[str, dict[str, list[int]]] = {k: {"cpu": [], "wall": []}
                                                for k in ("before", "after")}
    for i in range(runs):
        order = (("before", first), ("after", second)) if i % 2 == 0 else (
            ("after", second), ("before", first))
        for key, model in order:
            c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
            model.run(feeds)
            samples[key]["wall"].append(time.perf_counter_ns() - w0)
            samples[key]["cpu"].append(time.thread_time_ns() - c0)
    stats = {k: {"cpu_p50_ms": statistics.median(v["cpu"]) / 1e6,
                 "wall_p50_ms": statistics.median(v["wall"]) / 1e6, "runs": runs}
             for k, v in samples.items()}
    b, a = stats["before"], stats["after"]
    return {**stats,
            "speedup_cpu": round(b["cpu_p50_ms"] / a["cpu_p50_ms"], 3) if a["cpu_p50_ms"] else None,
            "speedup_wall": round(b["wall_p50_ms"] / a["wall_p50_ms"], 3)
            if a["wall_p50_ms"] else None,
            "threads": 1, "clock": "thread CPU time (time.thread_time_ns), interleaved",
            "where": "this host's CPU (not the target device)"}


def run_outputs(model: Any, data: Dataset) -> list[np.ndarray]:
    """Outputs of a runtime model on every validation sample, one array per output."""
    feeds = dict(zip(data.names, data.inputs, strict=True))
    outs = model.run_batch(feeds)
    return [np.asarray(outs[i]) for i in range(len(model.outputs))]


def accuracy(outputs: Sequence[np.ndarray], labels: np.ndarray | None) -> float | None:
    """Top-1 accuracy of the first classifier-shaped output, or None (no labels / no classes)."""
    if labels is None:
        return None
    for out in outputs:
        if out.ndim == 2 and out.shape[0] == labels.shape[0] and out.shape[1] > 1:
            return float(np.mean(out.argmax(axis=1) == labels))
    return None


def drift(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> dict[str, Any]:
    """SQNR / cosine / top-1 agreement of the first output against the float original."""
    from ..drift import compare_outputs

    names = [f"output_{i}" for i in range(len(reference))]
    result = compare_outputs(list(reference), list(candidate), names)
    m = result[0].get("metrics", {}) if result else {}
    keep = ("sqnr_db", "cosine", "top1_agreement", "max_abs_error", "mean_abs_error")
    return {k: m.get(k) for k in keep if k in m}


def convert_for(model: Path, targets: Sequence[str], data: Dataset, val: Dataset | None,
                out: Path, say: Callable[[str], None], trust_model: bool = False,
                formats: str = "all") -> Any:
    """``edgeopt.convert`` of one float model (the public API, as a user would run it)."""
    from ..convert import convert

    return convert(
        model, list(targets), data.path, val=val.path if val is not None else None,
        num_calib=min(NUM_CALIB, data.count), out=out, force=True, formats=formats,
        latency_runs=CONVERT_LATENCY_RUNS, progress=say, trust_model=trust_model,
    )


def artifact_pairs(before: Any, after: Any) -> list[tuple[dict[str, Any], Path, Path]]:
    """(artifact entry of the compressed run, original file, compressed file) per artifact
    that both conversions produced (same target, format and precision)."""
    index = {(a["target"], a["format"], a["precision"]): a for a in before.artifacts}
    pairs = []
    for a in after.artifacts:
        b = index.get((a["target"], a["format"], a["precision"]))
        if b is not None:
            pairs.append((a, before.out / b["path"], after.out / a["path"]))
    return pairs
