"""Per-artifact accelerator checks of ``edgeopt convert``: pre-flight, Edge TPU compile, strict.

The pre-flight engine (``edgeopt.inspect``) analyses every produced model for its target; this
module decides what of that goes into ``report.json`` (``compact_preflight``), runs the real
``edgetpu_compiler`` when it is installed (``compile_edgetpu``), and turns both into the
``gates`` block that ``--strict`` enforces (``accelerator_gates``).

Only TFLite delegates that are accelerators (the Edge TPU, the mobile GPU) and ONNX execution
providers other than the CPU are gated: on a CPU target (arm-cpu) ops XNNPACK does not take
still run on the same CPU, so their placement is reported but never fails ``--strict``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edgeopt_runtime.errors import EdgeOptError
from edgeopt_runtime.manifest import ModelEntry, sha256_file

from .inspect import report as R

# Per-op lists up to this many ops go into report.json whole; above it only the ops that
# block the accelerator (at most BLOCKING_OPS_IN_REPORT) plus per-op-type counts.
OPS_IN_REPORT = 150
BLOCKING_OPS_IN_REPORT = 50
# Reason codes that say "supported, but placed on the CPU by the partition", not "blocks".
_FOLLOWERS = {R.AFTER_UNMAPPED, R.NOT_IN_DELEGATED_PARTITION}
_ACCELERATORS = {"edgetpu": "the Edge TPU", "gpu": "the mobile GPU"}
_CPU_PROVIDER = "CPUExecutionProvider"
COMPILER_NAME = "edgetpu_compiler"
COMPILER_MISSING = "edgetpu_compiler not found on PATH: showing the pre-flight prediction only"
_COMPILER_KEYS = (
    "version", "returncode", "error", "subgraphs", "total_ops", "ops_tpu", "ops_cpu",
    "on_chip_bytes", "on_chip_remaining_bytes", "off_chip_bytes", "operators", "differences",
)


class StrictError(EdgeOptError):
    """``strict=True`` and a target would not run its whole graph on its accelerator.

    Raised after the report and every artifact were written; ``report`` holds the result.
    Exit code 1 (a failed check, like a failed gate of ``edgeopt compare``), not 2.
    """

    exit_code = 1

    def __init__(self, message: str, report: Any) -> None:
        super().__init__(message)
        self.report = report


def inspect_command(path: str, target: str) -> str:
    """The command that prints the full per-op pre-flight report of one artifact."""
    return f"edgeopt inspect {path} --target {target} --json"


# ------------------------------------------------------------------------------ pre-flight


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


# ------------------------------------------------------------------------------ Edge TPU


def wants_edgetpu_compile(delegate: str, fmt: str, precision: str) -> bool:
    """Only the full-integer int8 TFLite model of an Edge TPU target is compiled."""
    return delegate == "edgetpu" and fmt == "tflite" and precision == "int8"


def compile_edgetpu(
    model: Path, tdir: Path, prediction: Mapping[str, Any], *, shown_dir: str,
    timeout: float = 600.0,
) -> tuple[dict[str, Any], Path | None]:
    """Run ``edgetpu_compiler`` on ``model`` (when installed) and describe the result.

    Args:
        model: the int8 ``.tflite`` in the target folder.
        tdir: the target folder (the compiled model and its log land here on success).
        prediction: the full pre-flight result of ``model`` (for ``differences``).
        shown_dir: the target folder as the report names it (``edgetpu``), instead of the
            staging path the compiler saw.
        timeout: seconds before the compiler is killed.

    Returns:
        (the report block, the compiled model's path or None). The block's ``status`` is
        ``"compiled"``, ``"failed"`` or ``"not_available"``; a failure is reported, never raised.
    """
    from .inspect.edgetpu import compile_if_available

    raw = compile_if_available(model, tdir, timeout=timeout, prediction=dict(prediction))
    if not raw.get("available"):
        return {"available": False, "status": "not_available", "message": COMPILER_MISSING,
                "detail": raw.get("reason")}, None
    block: dict[str, Any] = {"available": True, "ok": bool(raw.get("ok"))}
    block.update({k: raw.get(k) for k in _COMPILER_KEYS})
    block["command"] = f"edgetpu_compiler -s -o {shown_dir} {shown_dir}/{model.name}"
    compiled = Path(raw["edgetpu_model"]) if raw.get("ok") and raw.get("edgetpu_model") else None
    if compiled is None:
        block["status"] = "failed"
        block["output_tail"] = str(raw.get("stdout_tail") or "").replace(str(tdir), shown_dir)
        return block, None
    block["status"] = "compiled"
    block["model"] = {"file": compiled.name, "path": f"{shown_dir}/{compiled.name}",
                      "sha256": sha256_file(compiled), "size_bytes": compiled.stat().st_size}
    log = Path(raw["log_file"]) if raw.get("log_file") else None
    block["log"] = f"{shown_dir}/{log.name}" if log else None
    block["cpu_ops_in_output"] = raw.get("cpu_ops_in_output")
    block["agrees_with_prediction"] = not raw.get("differences")
    return block, compiled


def compiled_entry(compiled: Path, plain: ModelEntry) -> tuple[ModelEntry | None, str | None]:
    """A manifest entry for the compiled model, with the plain model's IO specs.

    The compiler keeps the model's input and output tensors (it replaces the ops between them
    by ``edgetpu-custom-op``); the runtime cannot run the compiled file without the Edge TPU,
    so its IO is checked against the plain model through the flatbuffer instead.

    Returns:
        (entry, None), or (None, why) when the compiled file's IO differs or cannot be read.
    """
    from .inspect.tflite_graph import read_tflite

    try:
        graph = read_tflite(compiled)
    except EdgeOptError as exc:
        return None, f"{compiled.name} cannot be read ({exc}); not listed in the manifest"
    got = [(t.dtype, list(t.shape)) for t in (*graph.inputs, *graph.outputs)]
    want = [(s["dtype"], [1 if d is None else d for d in s["shape"]])
            for s in (*plain.inputs, *plain.outputs)]
    if got != want:
        return None, (f"{compiled.name}: inputs/outputs {got} differ from {plain.file}'s {want}; "
                      "not listed in the manifest")
    entry = ModelEntry(file=compiled.name, format="tflite", precision="int8",
                       sha256=sha256_file(compiled), size_bytes=compiled.stat().st_size,
                       inputs=plain.inputs, outputs=plain.outputs)
    return entry, None


# ------------------------------------------------------------------------------ strict gates


def _first_blocking_text(first: Mapping[str, Any] | None) -> str:
    if not first:
        return ""
    why = "; ".join(r["message"] for r in first.get("reasons") or [])
    return f"; first blocking op #{first['index']} {first['op']}" + (f" ({why})" if why else "")


def _compiler_gate(label: str, comp: Mapping[str, Any]) -> dict[str, Any]:
    """The gate of an Edge TPU artifact the real compiler processed (it outranks the
    prediction)."""
    if not comp.get("ok"):
        return {"passed": False, "source": "edgetpu_compiler", "first_blocking_op": None,
                "message": f"{label}: edgetpu_compiler failed: {comp.get('error')}"}
    rows = [r for r in comp.get("operators") or [] if not r.get("mapped")]
    cpu = comp.get("ops_cpu") or 0
    first = ({"op": rows[0]["op"], "status": rows[0]["status"]} if rows else None)
    if cpu == 0 and not rows:
        msg = f"{label}: edgetpu_compiler mapped all {comp.get('ops_tpu')} ops to the Edge TPU"
        return {"passed": True, "source": "edgetpu_compiler", "first_blocking_op": None,
                "message": msg}
    msg = (f"{label} is not fully on the Edge TPU: edgetpu_compiler left {cpu} op(s) on the CPU"
           + (f"; first: {first['op']} ({first['status']})" if first else ""))
    return {"passed": False, "source": "edgetpu_compiler", "first_blocking_op": first,
            "message": msg}


def _prediction_gate(label: str, pf: Mapping[str, Any], where: str) -> dict[str, Any]:
    summary = pf.get("summary") or {}
    first = summary.get("first_blocking_op")
    if first is None and not summary.get("fully_delegated"):
        first = next((o for o in pf.get("ops") or [] if not o.get("delegated")), None)
        first = R.blocking_info(first) if first else None
    if summary.get("fully_delegated"):
        return {"passed": True, "source": "pre-flight", "first_blocking_op": None,
                "message": f"{label}: {summary.get('verdict')}"}
    msg = (f"{label} is not fully on {where}: {summary.get('cpu')} of {summary.get('ops')} ops "
           f"predicted on the CPU{_first_blocking_text(first)}")
    return {"passed": False, "source": "pre-flight", "first_blocking_op": first, "message": msg}


def _accelerator(art: Mapping[str, Any]) -> str | None:
    """The accelerator an artifact is meant for (None: a CPU target, not gated)."""
    delegate = str((art.get("preflight") or {}).get("delegate") or "")
    if art.get("format") == "onnx":
        return delegate if delegate and delegate != _CPU_PROVIDER else None
    return _ACCELERATORS.get(delegate)


def artifact_gate(art: Mapping[str, Any], accelerator: str | None = None) -> dict[str, Any]:
    """Whether one artifact runs its whole graph on its accelerator.

    Args:
        art: a convert report artifact (``preflight``, optional ``edgetpu_compiler``).
        accelerator: the device named in messages (default: from the pre-flight delegate).

    Returns:
        ``{"gate": "accelerator", "target", "artifact", "passed", "source", "message",
        "first_blocking_op"}``.
    """
    label = str(art.get("path") or art.get("file"))
    where = accelerator or _accelerator(art) or "its accelerator"
    pf = art.get("preflight") or {}
    comp = art.get("edgetpu_compiler") or {}
    if comp.get("available"):
        body = _compiler_gate(label, comp)
    elif "error" in pf and "summary" not in pf:
        body = {"passed": False, "source": "pre-flight", "first_blocking_op": None,
                "message": f"{label}: pre-flight could not analyse the model: {pf['error']}"}
    else:
        body = _prediction_gate(label, pf, where)
    return {"gate": "accelerator", "target": art.get("target"), "artifact": label, **body}


def accelerator_gates(targets: Sequence[Mapping[str, Any]], strict: bool) -> dict[str, Any]:
    """The report's ``gates`` block: one accelerator gate per artifact of an accelerator.

    Args:
        targets: the report's ``targets`` list.
        strict: whether a failed gate fails the command (recorded as ``strict``).

    Returns:
        ``{"strict", "passed", "results": [gate...], "not_gated": [artifact notes]}``.
    """
    results, not_gated = [], []
    for t in targets:
        for art in t.get("artifacts") or []:
            where = _accelerator(art)
            if where is None:
                not_gated.append(f"{art.get('path')}: runs on the CPU; op placement is reported, "
                                 "not gated")
                continue
            results.append(artifact_gate(art, where))
    return {"strict": strict, "passed": all(r["passed"] for r in results), "results": results,
            "not_gated": not_gated}


def strict_message(gates: Mapping[str, Any]) -> str:
    """One line naming the first failed gate (and how many more failed)."""
    failed = [r for r in gates["results"] if not r["passed"]]
    more = ""
    if len(failed) > 1:
        more = f" (and {len(failed) - 1} more failed check(s), see the report)"
    return f"--strict: {failed[0]['message']}{more}"
