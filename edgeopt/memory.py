"""The memory headline of an artifact: its peak working set, measured through the runtime.

The runtime's profile reports nine memory rows; the one a device owner needs is how much the
process grows to hold and run the model. That figure cannot be taken inside the converter
(TensorFlow's heap is gigabytes and reuses freed pages), so each artifact is profiled in a
fresh child process running only ``python -m edgeopt_runtime profile`` — what a device would
run — and its ``model_delta_peak`` (peak RSS during load and runs, minus RSS before load; the
kernel's ``VmHWM``, reset before the load) is the headline. ``model_delta_after_load`` (RSS the
loaded model keeps) is reported beside it. Neither LiteRT nor ONNX Runtime exposes its arena
size, so the working set is the measurable stand-in; it includes the interpreter, the
delegate's packed weights and the arena.

The children of one target run concurrently (separate processes: their numbers do not mix).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RUNS = 10
WARMUP = 2
TIMEOUT_S = 300.0
METHOD = ("peak RSS over the process's RSS before load (VmHWM reset before load) while "
          "edgeopt_runtime loads the model and runs it {runs} times in a fresh child process "
          "on this host's CPU, 1 thread")


@dataclass(frozen=True)
class MemoryHeadline:
    """One artifact's memory figures (bytes; None when the measurement failed, with why)."""

    peak_working_set_bytes: int | None
    after_load_bytes: int | None
    model_file_bytes: int | None
    method: str
    where: str = "this host's CPU (a fresh process: only edgeopt_runtime and its engine)"
    error: str | None = None

    @property
    def peak_mib(self) -> float | None:
        b = self.peak_working_set_bytes
        return None if b is None else b / 2**20

    def to_dict(self) -> dict[str, Any]:
        mib = self.peak_working_set_bytes
        return {"peak_working_set_bytes": self.peak_working_set_bytes,
                "peak_working_set_mib": None if mib is None else round(mib / 2**20, 3),
                "after_load_bytes": self.after_load_bytes,
                "model_file_bytes": self.model_file_bytes, "method": self.method,
                "where": self.where, "error": self.error}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MemoryHeadline:
        return cls(d.get("peak_working_set_bytes"), d.get("after_load_bytes"),
                   d.get("model_file_bytes"), str(d.get("method", "")),
                   str(d.get("where", "")), d.get("error"))


def _command(path: Path, fmt: str, shapes: Mapping[str, Sequence[int]]) -> list[str]:
    cmd = [sys.executable, "-m", "edgeopt_runtime", "profile", str(path), "--json",
           "--threads", "1", "--runs", str(RUNS), "--warmup", str(WARMUP), "--no-op-profile",
           "--no-isolate"]  # our own, just-verified output; the child is the isolation
    if fmt == "tflite":
        cmd += ["--delegate", "xnnpack"]
    for name, dims in shapes.items():
        cmd += ["--input-shape", f"{name}={','.join(str(int(d)) for d in dims)}"]
    return cmd


def measure(models: Sequence[tuple[Path, str, Mapping[str, Sequence[int]]]],
            done: Callable[[], None] | None = None) -> list[MemoryHeadline]:
    """Profile each ``(model file, format, input shapes for dynamic dims)`` in its own child.

    ``done()`` is called as each child's result is collected (progress). Never raises for a
    model the child cannot profile: that headline carries the error.
    """
    procs = []
    for path, fmt, shapes in models:
        try:
            procs.append(subprocess.Popen(_command(path, fmt, shapes), stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True,
                                          stdin=subprocess.DEVNULL))
        except OSError as exc:
            procs.append(exc)
    heads = []
    for p, (path, _f, _s) in zip(procs, models, strict=True):
        heads.append(_collect(p, path))
        if done is not None:
            done()
    return heads


def _collect(proc: subprocess.Popen[str] | OSError, path: Path) -> MemoryHeadline:
    method = METHOD.format(runs=RUNS)
    if isinstance(proc, OSError):
        return MemoryHeadline(None, None, None, method, error=f"cannot start the profiler: {proc}")
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return MemoryHeadline(None, None, None, method,
                              error=f"the profiler did not finish within {TIMEOUT_S:g} s")
    if proc.returncode != 0:
        why = (err.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return MemoryHeadline(None, None, None, method,
                              error=why.replace(str(path.parent), path.parent.name))
    try:
        mem = json.loads(out)["memory"]
    except (ValueError, KeyError, TypeError):
        return MemoryHeadline(None, None, None, method, error="unreadable profiler output")
    peak = (mem.get("model_delta_peak") or {}).get("bytes")
    after = (mem.get("model_delta_after_load") or {}).get("bytes")
    size = (mem.get("model_file") or {}).get("bytes")
    return MemoryHeadline(peak, after, size, method)


def budget_gate(headline: MemoryHeadline, budget_mb: float, target: str,
                artifact: str) -> dict[str, Any]:
    """The ``memory_budget`` gate of one artifact (``budget_mb`` in MiB, 2^20 bytes, like the
    runtime's profile; a failed measurement fails it: a budget the run cannot check must not
    pass silently)."""
    value = headline.peak_mib
    passed = value is not None and value <= budget_mb
    if value is None:
        message = (f"{target}/{artifact}: memory budget {budget_mb:g} MiB not checked: "
                   f"{headline.error}")
    else:
        verdict = "within" if passed else "OVER"
        message = (f"{target}/{artifact}: peak working set {value:.1f} MiB {verdict} the "
                   f"target's memory budget of {budget_mb:g} MiB (memory_budget_mb)")
    return {"gate": "memory_budget", "target": target, "artifact": artifact,
            "threshold_mib": budget_mb, "value_mib": None if value is None else round(value, 3),
            "binding": True, "passed": passed, "message": message}
