"""What of a pre-flight result goes into ``report.json`` (``compact_preflight``).

The pre-flight engine (``edgeopt.inspect``) analyses every produced model for its target's
accelerator; a convert report keeps every model-level block and slim op rows, and for big models
only the ops that block the accelerator.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from edgeopt.inspect import report as R

# Per-op lists up to this many ops go into report.json whole; above it only the ops that
# block the accelerator (at most BLOCKING_OPS_IN_REPORT) plus per-op-type counts.
OPS_IN_REPORT = 150
BLOCKING_OPS_IN_REPORT = 50
# Reason codes that say "supported, but placed on the CPU by the partition", not "blocks".
_FOLLOWERS = {R.AFTER_UNMAPPED, R.NOT_IN_DELEGATED_PARTITION}


def inspect_command(path: str, target: str) -> str:
    """The command that prints the full per-op pre-flight report of one artifact."""
    return f"edgeopt inspect {path} --target {target} --json"


def _io_text(entry: Mapping[str, Any]) -> str | None:
    """``dtype[shape] -> dtype[shape]`` of the op's first activation input and first output."""
    if "inputs" not in entry:
        return None

    def one(t: Mapping[str, Any]) -> str:
        sig = t.get("shape_signature") or t.get("shape") or []
        dims = "x".join("?" if d < 0 else str(d) for d in sig)
        return f"{t['dtype']}[{dims}]"

    ins = [t for t in entry["inputs"] if "constant_bytes" not in t]
    outs = entry.get("outputs") or []
    return f"{one(ins[0]) if ins else '-'} -> {one(outs[0]) if outs else '-'}"


def _slim_op(entry: Mapping[str, Any]) -> dict[str, Any]:
    """One op row without its tensors' full details (per-channel scales can be thousands)."""
    row = {k: v for k, v in entry.items() if k not in ("inputs", "outputs", "options")}
    io = _io_text(entry)
    if io is not None:
        row["io"] = io
    return row


def _blocks(entry: Mapping[str, Any]) -> bool:
    """True when the op is off the accelerator for a reason of its own."""
    return not entry["delegated"] and any(r["code"] not in _FOLLOWERS for r in entry["reasons"])


def _op_counts(ops: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    counts: dict[str, Counter[str]] = {}
    for e in ops:
        counts.setdefault(e["op"], Counter())["accelerator" if e["delegated"] else "cpu"] += 1
    return {op: {"accelerator": c["accelerator"], "cpu": c["cpu"]} for op, c in counts.items()}


def _slim_partition(part: Mapping[str, Any], trimmed: bool) -> dict[str, Any]:
    out = dict(part)
    out["tpu_op_count"] = len(part.get("tpu_ops") or [])
    out["cpu_op_count"] = len(part.get("cpu_ops") or [])
    if trimmed:  # index lists of a big model say little that the counts do not
        out.pop("tpu_ops", None)
        out.pop("cpu_ops", None)
    return out


def compact_preflight(result: Mapping[str, Any], path: str, target: str) -> dict[str, Any]:
    """The part of a ``preflight`` result that goes into ``report.json``.

    Every model-level block is kept (summary, Edge TPU partition, GPU analyzer, XNNPACK
    measurement, ONNX runtime); op rows lose their tensor details; models with more than
    ``OPS_IN_REPORT`` ops keep only the ops that block the accelerator.

    Args:
        result: the full ``edgeopt.inspect/1`` report (or ``{"error": ...}``).
        path: the artifact's path as the user will see it (``OUT/<target>/<file>``).
        target: the target name or profile path, for the ``edgeopt inspect`` hint.

    Returns:
        A JSON-ready dict: the result without ``model`` / full ``ops``, plus ``ops`` (slim),
        ``ops_total``, ``ops_listed`` (``"all"`` or ``"blocking"``), ``op_counts`` and
        ``full_report`` (the command printing everything).
    """
    if "error" in result and "summary" not in result:
        return dict(result)
    ops = list(result.get("ops") or [])
    trimmed = len(ops) > OPS_IN_REPORT
    out = {k: v for k, v in result.items() if k not in ("ops", "model")}
    if trimmed:
        blocking = [e for e in ops if _blocks(e)]
        listed = [_slim_op(e) for e in blocking[:BLOCKING_OPS_IN_REPORT]]
        out["ops_note"] = (
            f"{len(ops)} ops: only the {len(listed)} of {len(blocking)} ops that block the "
            f"accelerator are listed; the full per-op list: {inspect_command(path, target)}"
        )
    else:
        listed = [_slim_op(e) for e in ops]
    out["ops"] = listed
    out["ops_total"] = len(ops)
    out["ops_listed"] = "blocking" if trimmed else "all"
    out["op_counts"] = _op_counts(ops)
    out["full_report"] = inspect_command(path, target)
    if isinstance(result.get("partition"), Mapping):
        out["partition"] = _slim_partition(result["partition"], trimmed)
    return out
