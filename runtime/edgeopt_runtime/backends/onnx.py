"""ONNX Runtime runner.

``InferenceSession.run`` is thread-safe (ORT documents it; ``benchmarks/threads.py`` measures
it), so one session serves every caller.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DelegateError, MissingDependencyError, ModelLoadError
from ..spec import TensorSpec
from . import LoadOptions, Progress, first_line

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(uint16)": "uint16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise MissingDependencyError("onnxruntime", "onnxruntime", "to run .onnx models") from None
    return onnxruntime


def import_engine() -> str:
    """Import ONNX Runtime; return ``"onnxruntime version"``."""
    return f"onnxruntime {_ort().__version__}"


def check(data: bytes, source: str) -> None:
    """Structural checks before ONNX Runtime sees the bytes (``edgeopt_runtime.verify``)."""
    from ..verify import check_onnx

    check_onnx(data, source)


def create(data: bytes, source: str, options: LoadOptions) -> OnnxRunner:
    providers = list(options.providers) if options.providers else None
    return OnnxRunner(data, source, threads=options.threads, providers=providers)


def _spec(arg: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in (arg.shape or ()))
    return TensorSpec(arg.name, shape, _ORT_TYPES.get(arg.type, arg.type), None)


class OnnxRunner:
    """Runs an ``.onnx`` model with ONNX Runtime on the given execution providers."""

    format = "onnx"
    ties = "even"  # ONNX QuantizeLinear rounds half to even

    def __init__(
        self,
        model_bytes: bytes,
        source: str,
        *,
        threads: int | None = None,
        providers: list[str] | None = None,
        profile_prefix: str | None = None,
    ) -> None:
        ort = _ort()
        self.backend = f"onnxruntime {ort.__version__}"
        self._source = source
        self.threads = threads
        available = ort.get_available_providers()
        providers = list(providers or ["CPUExecutionProvider"])
        missing = [p for p in providers if p not in available]
        if missing:
            raise DelegateError(
                f"execution provider(s) {', '.join(missing)} not available in this onnxruntime "
                f"build (available: {', '.join(available)})"
            )
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        if profile_prefix:
            opts.enable_profiling = True
            opts.profile_file_prefix = profile_prefix
        self._bytes = model_bytes
        try:
            self._sess = ort.InferenceSession(model_bytes, sess_options=opts, providers=providers)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... classes
            raise ModelLoadError(
                f"{source}: ONNX Runtime refused the model: {first_line(exc)}"
            ) from None
        self.delegate = self._sess.get_providers()[0]
        self.providers = self._sess.get_providers()
        self.inputs = [_spec(a) for a in self._sess.get_inputs()]
        self.outputs = [_spec(a) for a in self._sess.get_outputs()]
        self._in_names = [s.name for s in self.inputs]
        self._out_names = [s.name for s in self.outputs]

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        try:
            return self._sess.run(self._out_names, dict(zip(self._in_names, arrays, strict=True)))
        except Exception as exc:  # ORT raises its own Fail/InvalidArgument/... classes
            raise ModelLoadError(
                f"{self._source}: ONNX Runtime failed to run the model: {first_line(exc)}"
            ) from None

    @property
    def session(self) -> Any:
        """The underlying ``InferenceSession`` (for benchmarks and profiling)."""
        return self._sess

    def end_profiling(self) -> str | None:
        """Stop ORT profiling and return the JSON trace path (when profiling was enabled)."""
        try:
            return self._sess.end_profiling() or None
        except Exception:
            return None

    def threads_effective(self) -> str:
        return str(self.threads) if self.threads else "ONNX Runtime default (one per physical core)"

    def op_profile(
        self, arrays: list[np.ndarray], runs: int, warmup: int, progress: Progress | None
    ) -> dict[str, Any]:
        """Trace ``warmup + runs`` runs in a separate profiling session and aggregate the trace
        (a separate session, so profiling never slows the timed runs)."""
        feeds = dict(zip(self._in_names, arrays, strict=True))
        with tempfile.TemporaryDirectory(prefix="edgeopt-ortprof-") as tmp:
            traced = OnnxRunner(
                self._bytes,
                self._source,
                threads=self.threads,
                providers=self.providers,
                profile_prefix=os.path.join(tmp, "ort"),
            )
            total = warmup + runs
            for i in range(total):
                traced.run(list(feeds.values()))
                if progress is not None:
                    progress("op-profile", i + 1, total)
            trace = traced.end_profiling()
            if not trace or not Path(trace).is_file():
                return {"available": False, "reason": "ONNX Runtime wrote no profiling trace"}
            events = json.loads(Path(trace).read_text(encoding="utf-8"))
        out = aggregate_ort_trace(events, skip_runs=warmup)
        out["source"] = "onnxruntime profiling trace (separate session with enable_profiling)"
        return out

    def info(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "delegate": self.delegate,
            "providers": self.providers,
            "threads": self.threads,
        }


def aggregate_ort_trace(events: list[dict[str, Any]], *, skip_runs: int = 0) -> dict[str, Any]:
    """Aggregate an ONNX Runtime profiling trace by op type and by node.

    Args:
        events: the trace's JSON list (Chrome trace events).
        skip_runs: leading ``model_run`` calls to ignore (warm-up).

    Returns:
        ``available``, ``runs``, ``by_op_type`` / ``by_node`` (mean ms per run and share of the
        node total, largest first), ``node_total_ms_per_run`` and ``model_run_ms_per_run``.
    """
    windows = sorted(
        (e["ts"], e["ts"] + e["dur"])
        for e in events
        if e.get("cat") == "Session" and e.get("name") == "model_run"
    )[skip_runs:]
    if not windows:
        return {"available": False, "reason": "no model_run events in the ONNX Runtime trace"}
    nodes: dict[str, dict[str, Any]] = {}
    for e in events:
        name = e.get("name", "")
        if e.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        if not any(a <= e["ts"] <= b for a, b in windows):
            continue
        args = e.get("args") or {}
        node = nodes.setdefault(
            name[: -len("_kernel_time")],
            {"op_type": args.get("op_name", "?"), "provider": args.get("provider"), "us": 0},
        )
        node["us"] += e["dur"]
    n = len(windows)
    node_total_us = sum(v["us"] for v in nodes.values())
    by_node = [
        {
            "name": k,
            "op_type": v["op_type"],
            "provider": v["provider"],
            "mean_ms_per_run": v["us"] / n / 1e3,
            "share": v["us"] / node_total_us if node_total_us else 0.0,
        }
        for k, v in sorted(nodes.items(), key=lambda kv: -kv[1]["us"])
    ]
    return {
        "available": bool(by_node),
        "reason": None if by_node else "no node events in the ONNX Runtime trace",
        "runs": n,
        "by_op_type": _by_op_type(by_node),
        "by_node": by_node,
        "node_total_ms_per_run": node_total_us / n / 1e3,
        "model_run_ms_per_run": sum(b - a for a, b in windows) / n / 1e3,
    }


def _by_op_type(by_node: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {}
    for node in by_node:
        g = groups.setdefault(
            node["op_type"], {"op_type": node["op_type"], "nodes": 0, "mean_ms_per_run": 0.0}
        )
        g["nodes"] += 1
        g["mean_ms_per_run"] += node["mean_ms_per_run"]
    total = sum(g["mean_ms_per_run"] for g in groups.values())
    for g in groups.values():
        g["share"] = g["mean_ms_per_run"] / total if total else 0.0
    return sorted(groups.values(), key=lambda g: -g["mean_ms_per_run"])
