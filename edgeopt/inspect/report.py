"""Building blocks of the per-op compatibility report shared by every target analysis.

Every analysis returns the same JSON-ready shape (see ``edgeopt.inspect`` for the full schema):
one entry per op with where it runs and, when not on the accelerator, the reasons as
``{"code": ..., "message": ...}`` plus one suggestion.
"""

from __future__ import annotations

from typing import Any

from .tflite_graph import OpInfo, TensorInfo

SCHEMA = "edgeopt.inspect/1"

# Reason codes (stable strings: tests, diffs and reports key on them).
OP_NOT_SUPPORTED = "op_not_supported"
NOT_INT8 = "not_int8"
DYNAMIC_SHAPE = "dynamic_shape"
TOO_MANY_NON_UNIT_DIMS = "too_many_non_unit_dims"
RANK_TOO_HIGH = "rank_too_high"
UNSUPPORTED_PARAM = "unsupported_param"
AFTER_UNMAPPED = "after_unmapped_op"
NOT_IN_DELEGATED_PARTITION = "not_in_delegated_partition"
UNSUPPORTED_DTYPE = "unsupported_dtype"
ANALYZER = "gpu_analyzer"


def reason(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def shape_str(t: TensorInfo) -> str:
    dims = t.shape_signature if t.is_dynamic else t.shape
    return "[" + ", ".join("?" if d < 0 else str(d) for d in dims) + "]"


def op_entry(
    op: OpInfo,
    runs_on: str,
    delegated: bool,
    reasons: list[dict[str, str]],
    suggestion: str | None,
    notes: list[str] | None = None,
) -> dict[str, Any]:
    """One op's row of the report."""
    entry = op.to_dict()
    entry.update(
        runs_on=runs_on,
        delegated=delegated,
        reasons=reasons,
        suggestion=suggestion,
        notes=notes or [],
    )
    return entry


def summary(
    entries: list[dict[str, Any]], delegate: str, first_blocking: dict[str, Any] | None
) -> dict[str, Any]:
    """Counts of delegated vs CPU ops and a one-line verdict."""
    n = len(entries)
    on = sum(1 for e in entries if e["delegated"])
    if n and on == n:
        verdict = f"all {n} ops run on {delegate}"
    elif on == 0:
        verdict = f"no op runs on {delegate}: the whole model runs on the CPU"
    else:
        verdict = f"{on} of {n} ops run on {delegate}, {n - on} on the CPU"
    if first_blocking:
        verdict += f"; first blocking op: #{first_blocking['index']} {first_blocking['op']}"
    return {
        "delegate": delegate,
        "ops": n,
        "delegated": on,
        "cpu": n - on,
        "fully_delegated": n > 0 and on == n,
        "first_blocking_op": first_blocking,
        "verdict": verdict,
    }


def blocking_info(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "index": entry["index"],
        "op": entry["op"],
        "reasons": entry["reasons"],
        "suggestion": entry["suggestion"],
    }
