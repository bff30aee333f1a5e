"""``--strict``: does each artifact run its whole graph on its accelerator?

Only gated accelerators are checked (the Edge TPU, the mobile GPU, ONNX execution providers
other than the CPU): on a CPU target ops XNNPACK does not take still run on the same CPU, so
their placement is reported but never fails ``--strict``. The verdict comes from the
accelerator's post-build step when it ran (the real Edge TPU compiler), else from the pre-flight
prediction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from edgeopt_runtime.errors import EdgeOptError

from edgeopt.inspect import report as R
from edgeopt.results import GateResult, Gates

from .registry import Accelerator


class StrictError(EdgeOptError):
    """``strict=True`` and a target would not run its whole graph on its accelerator.

    Raised after the report and every artifact were written; ``report`` holds the result.
    Exit code 1 (a failed check, like a failed gate of ``edgeopt compare``), not 2.
    """

    exit_code = 1

    def __init__(self, message: str, report: Any) -> None:
        super().__init__(message)
        self.report = report


def _first_blocking_text(first: Mapping[str, Any] | None) -> str:
    if not first:
        return ""
    why = "; ".join(r["message"] for r in first.get("reasons") or [])
    return f"; first blocking op #{first['index']} {first['op']}" + (f" ({why})" if why else "")


def _prediction_gate(label: str, pf: Mapping[str, Any], where: str) -> dict[str, Any]:
    summary = pf["summary"]
    first = summary.get("first_blocking_op")
    if first is None and not summary["fully_delegated"]:
        first = next((o for o in pf["ops"] if not o["delegated"]), None)
        first = R.blocking_info(first) if first else None
    if summary["fully_delegated"]:
        return {"passed": True, "source": "pre-flight", "first_blocking_op": None,
                "message": f"{label}: {summary['verdict']}"}
    msg = (f"{label} is not fully on {where}: {summary['cpu']} of {summary['ops']} ops "
           f"predicted on the CPU{_first_blocking_text(first)}")
    return {"passed": False, "source": "pre-flight", "first_blocking_op": first, "message": msg}


def artifact_gate(art: Mapping[str, Any], accelerator: Accelerator) -> GateResult:
    """Whether one artifact (a convert report artifact: ``path``, ``target``, ``preflight``,
    the post-build block) runs its whole graph on ``accelerator``."""
    label = str(art["path"])
    pf = art["preflight"]
    step = accelerator.post_build
    body = step.gate(label, art[step.key]) if step is not None and step.key in art else None
    if body is None and "summary" not in pf:
        body = {"passed": False, "source": "pre-flight", "first_blocking_op": None,
                "message": f"{label}: pre-flight could not analyse the model: {pf['error']}"}
    if body is None:
        body = _prediction_gate(label, pf, accelerator.device)
    facts = {"target": art["target"], "artifact": label, "source": body["source"],
             "first_blocking_op": body["first_blocking_op"]}
    return GateResult("accelerator", body["passed"], body["message"], facts)


def accelerator_gates(artifacts: Sequence[tuple[Mapping[str, Any], Accelerator]],
                      strict: bool) -> Gates:
    """The report's ``gates`` block: one accelerator gate per artifact of a gated accelerator.

    Args:
        artifacts: (report artifact, the accelerator it is meant for) pairs.
        strict: whether a failed gate fails the command (recorded as ``strict``).
    """
    results, not_gated = [], []
    for art, accelerator in artifacts:
        if not accelerator.gated:
            not_gated.append(f"{art['path']}: runs on the CPU; op placement is reported, "
                             "not gated")
            continue
        results.append(artifact_gate(art, accelerator))
    return Gates(tuple(results), strict, tuple(not_gated))


def strict_message(gates: Gates) -> str:
    """One line naming the first failed gate (and how many more failed)."""
    failed = gates.failed
    more = ""
    if len(failed) > 1:
        more = f" (and {len(failed) - 1} more failed check(s), see the report)"
    return f"--strict: {failed[0].message}{more}"
