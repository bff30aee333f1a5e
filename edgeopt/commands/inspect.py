"""``edgeopt inspect MODEL --target NAME_OR_TOML [--json]``: the pre-flight compatibility report.

MODEL is a ``.tflite`` / ``.onnx`` file or an edgeopt artifact directory (every model its
manifest lists is inspected, except a model compiled for an accelerator, e.g.
``*_edgetpu.tflite``), or the source model (``.keras``, ``.h5``, a SavedModel folder; an
``.onnx`` is inspected as it is): it is built as ``convert`` would build it for the target, on
synthetic calibration data (``edgeopt.inspect.source``), and that model is inspected. The
default output is a
readable table per model; ``--json`` prints one JSON document
``{"schema": "edgeopt.inspect/1", "target": ..., "reports": [...]}``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click


def _models(path: Path, isolate: bool) -> list[Path]:
    """The model files to inspect: the file itself, or every model of an artifact directory.

    Each is checked the way the runtime loads it (regular file, size cap, sha256 from the
    manifest, structural checks) and, with ``isolate``, probed in a child process first.
    """
    from edgeopt_runtime.model import vet_model_file

    if path.is_dir():
        from edgeopt_runtime.manifest import read_manifest

        from edgeopt.accelerators import is_compiled_model

        manifest = read_manifest(path)
        # A compiled model (e.g. *_edgetpu.tflite: one custom op wrapping the TPU program): the
        # pre-flight rules are about the model the compiler is given, so inspect that one.
        entries = [e for e in manifest.models if not is_compiled_model(e.file)]
        for e in entries:
            vet_model_file(manifest.model_path(e), fmt=e.format, sha256=e.sha256, inside=path,
                           isolate=isolate)  # fmt: skip
        return [manifest.model_path(e) for e in entries]
    if path.suffix.lower() in (".tflite", ".onnx"):  # preflight names other files itself
        vet_model_file(path, isolate=isolate)
    return [path]


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _shape(t: dict[str, Any]) -> str:
    dims = t["shape_signature"] if -1 in t.get("shape_signature", []) else t["shape"]
    return "x".join("?" if d < 0 else str(d) for d in dims) or "scalar"


def _io(entry: dict[str, Any]) -> str:
    """dtype and shape of the op's first activation input -> first output."""
    ins = [t for t in entry.get("inputs", []) if "constant_bytes" not in t]
    outs = entry.get("outputs", [])
    left = f"{ins[0]['dtype']}[{_shape(ins[0])}]" if ins else "-"
    right = f"{outs[0]['dtype']}[{_shape(outs[0])}]" if outs else "-"
    return f"{left} -> {right}"


def render(report: dict[str, Any]) -> str:
    """The human-readable table of one report.

    Args:
        report: a ``preflight`` result.

    Returns:
        Multi-line text.
    """
    lines = [f"{report['model']}  ({report['format']}, target {report['target']})"]
    onnx = report["format"] == "onnx"
    head = f"{'#':>4}  {'op':<24} {'runs on':<10} "
    head += f"{'form':<12} {'kernel':<16}" if onnx else f"{'v':>2}  {'tensors':<38}"
    lines.append(head + "  why not / suggestion")
    for e in report["ops"]:
        why = "; ".join(r["message"] for r in e["reasons"])
        if e.get("suggestion"):
            why += (" -> " if why else "") + e["suggestion"]
        runs = (
            "cpu"
            if e["runs_on"] == "cpu"
            else _short(e["runs_on"].replace("ExecutionProvider", ""), 10)
        )
        row = f"{e['index']:>4}  {_short(e['op'], 24):<24} {runs:<10} "
        if onnx:
            row += f"{e['form']:<12} {_short(e.get('kernel') or '-', 16):<16}"
        else:
            row += f"{e['version']:>2}  {_short(_io(e), 38):<38}"
        lines.append(row + "  " + why)
    lines.append("")
    lines.append(f"summary: {report['summary']['verdict']}")
    part = report.get("partition")
    if part:
        first = part["first_unmapped_op"]
        lines.append(
            f"edge tpu: {len(part['tpu_ops'])} ops on the TPU, {len(part['cpu_ops'])} on the CPU, "
            f"{part['subgraphs']} subgraph(s)"
            + (f", graph breaks at #{first['index']} {first['op']}" if first else "")
        )
        lines.append(f"parameters: {part['parameter_estimate']}")
    for note in report.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


@click.command("inspect")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--target", "-t", required=True, help="Built-in target name or a profile .toml.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@click.option("--isolate/--no-isolate", default=True, show_default=True,
              help="Probe each model in a child process first (skip only for trusted files).")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=D0,D1,...",
              help="A source model's input shape for its dynamic dims (repeatable).")
@click.option("--trust-model", is_flag=True,
              help="Let Keras run code stored in a source model (Lambda layers).")
def command(model: Path, target: str, as_json: bool, isolate: bool,
            input_shapes: tuple[str, ...], trust_model: bool) -> None:
    """Pre-flight check: which ops TARGET runs on its accelerator, and why not.

    MODEL is a .tflite / .onnx file, an edgeopt artifact directory, or the source model
    (.keras, .h5, SavedModel dir: built as convert would build it, on synthetic calibration
    data, then inspected).
    """
    from edgeopt import progress
    from edgeopt.inspect import SCHEMA, preflight
    from edgeopt.inspect.source import is_source, source_reports
    from edgeopt.targets import load_target

    profile = load_target(target)
    if is_source(model):
        with progress.use(progress.Console()):
            reports = source_reports(model, profile, input_shapes, trust_model)
    else:
        reports = [preflight(path, profile) for path in _models(model, isolate)]
    if as_json:
        doc = {"schema": SCHEMA, "target": profile.name, "reports": reports}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return
    click.echo("\n\n".join(render(r) for r in reports))
