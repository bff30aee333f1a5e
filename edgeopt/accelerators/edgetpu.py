"""The Edge TPU's post-build step: ``edgetpu_compiler`` on the int8 TFLite model.

Runs the real compiler when it is on PATH (``edgeopt.inspect.edgetpu.compile_if_available``
parses its log), adds the compiled ``*_edgetpu.tflite`` to the manifest after the plain model,
and owns everything said about its result: the artifact's ``edgetpu_compiler`` block, the
``--strict`` gate (the compiler's verdict outranks the pre-flight prediction), the report blocks
and the terminal summary lines.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeopt_runtime.errors import EdgeOptError
from edgeopt_runtime.manifest import ModelEntry, sha256_file

from edgeopt.report.blocks import Block, Bullets, Para, table
from edgeopt.report.format import fmt, fmt_bytes

from .postbuild import PostBuildOutcome

COMPILER_NAME = "edgetpu_compiler"
COMPILER_MISSING = "edgetpu_compiler not found on PATH: showing the pre-flight prediction only"
_COMPILER_KEYS = (
    "version", "returncode", "error", "subgraphs", "total_ops", "ops_tpu", "ops_cpu",
    "on_chip_bytes", "on_chip_remaining_bytes", "off_chip_bytes", "operators", "differences",
)


class EdgeTpuCompiler:
    """``edgetpu_compiler`` as the Edge TPU accelerator's post-build step."""

    key = COMPILER_NAME

    def __init__(self, timeout: float = 600.0) -> None:
        self.timeout = timeout

    def applies(self, fmt: str, precision: str) -> bool:
        """Only the full-integer int8 TFLite model is compiled."""
        return fmt == "tflite" and precision == "int8"

    def progress(self, model: Path) -> str:
        return f"compiling {model.name} with edgetpu_compiler (if installed)"

    def run(self, model: Path, tdir: Path, plain: ModelEntry,
            prediction: dict[str, Any] | None) -> PostBuildOutcome:
        """Compile ``model``; the compiled file is listed in the manifest only when its IO
        matches the plain model's."""
        if prediction is None:  # pre-flight failed: nothing to compare with, still compile
            prediction = {"ops": [], "summary": {"verdict": "no prediction"}}
        block, compiled = compile_edgetpu(model, tdir, prediction, shown_dir=tdir.name,
                                          timeout=self.timeout)
        if block["status"] == "not_available":
            return PostBuildOutcome(block, note=COMPILER_MISSING)
        if compiled is None:
            return PostBuildOutcome(block, note=f"edgetpu_compiler failed: {block['error']}")
        entry, why = compiled_entry(compiled, plain)
        return PostBuildOutcome(block, entry=entry, note=why)

    # -- what is said about the block --------------------------------------------------------

    def gate(self, label: str, comp: Mapping[str, Any]) -> dict[str, Any] | None:
        """The ``--strict`` gate from the compiler's result (None: it did not run)."""
        if not comp["available"]:
            return None
        if not comp["ok"]:
            return {"passed": False, "source": COMPILER_NAME, "first_blocking_op": None,
                    "message": f"{label}: edgetpu_compiler failed: {comp['error']}"}
        rows = [r for r in comp["operators"] or [] if not r.get("mapped")]
        cpu = comp["ops_cpu"] or 0
        first = {"op": rows[0]["op"], "status": rows[0]["status"]} if rows else None
        if cpu == 0 and not rows:
            return {"passed": True, "source": COMPILER_NAME, "first_blocking_op": None,
                    "message": f"{label}: edgetpu_compiler mapped all {comp['ops_tpu']} ops to "
                               "the Edge TPU"}
        msg = (f"{label} is not fully on the Edge TPU: edgetpu_compiler left {cpu} op(s) on the "
               "CPU" + (f"; first: {first['op']} ({first['status']})" if first else ""))
        return {"passed": False, "source": COMPILER_NAME, "first_blocking_op": first,
                "message": msg}

    def blocks(self, comp: Mapping[str, Any]) -> list[Block]:
        """The report's description of the compiler's result."""
        if comp["status"] == "not_available":
            return [Para(comp["message"])]
        version = comp["version"] or ""
        if comp["status"] != "compiled":
            return [Para(f"edgetpu_compiler {version} failed: {comp['error']} "
                         "(its output is in report.json)")]
        out: list[Block] = [Para(
            f"edgetpu_compiler {version}: {fmt(comp['ops_tpu'])} of {fmt(comp['total_ops'])} "
            f"ops mapped to the Edge TPU, {fmt(comp['ops_cpu'])} on the CPU, "
            f"{fmt(comp['subgraphs'])} subgraph(s); on-chip parameter memory "
            f"{fmt_bytes(comp['on_chip_bytes'])} used, "
            f"{fmt_bytes(comp['on_chip_remaining_bytes'])} free; off-chip "
            f"{fmt_bytes(comp['off_chip_bytes'])}. Compiled model {comp['model']['path']}, log "
            f"{comp['log'] or '—'}.")]
        rows = [[r.get("op"), fmt(r.get("count")), r.get("status")]
                for r in comp["operators"] or []]
        if rows:
            out.append(table(["op", "count", "compiler status"], rows))
        diffs = comp["differences"] or []
        if diffs:
            out += [Para("Differences from the pre-flight prediction:"), Bullets(tuple(diffs))]
        else:
            out.append(Para("The compiler's result agrees with the pre-flight prediction."))
        return out

    def summary_lines(self, comp: Mapping[str, Any]) -> list[str]:
        """One line for the terminal."""
        if comp["status"] == "not_available":
            return [comp["message"]]
        if comp["status"] == "failed":
            return [f"edgetpu_compiler failed: {comp['error']}"]
        diffs = comp["differences"] or []
        return [f"edgetpu_compiler: {comp['ops_tpu']} ops on the Edge TPU, {comp['ops_cpu']} on "
                f"the CPU -> {comp['model']['path']}"
                + (f"; {len(diffs)} difference(s) from the prediction" if diffs else "")]


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
    from edgeopt.inspect.edgetpu import compile_if_available

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
    from edgeopt.inspect.tflite_graph import read_tflite

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
