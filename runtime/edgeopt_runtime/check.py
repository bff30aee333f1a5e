"""The golden-output check: ``edgeopt-runtime check BUNDLE [--json]``.

Does this device give the same outputs as the build machine? On a bundle folder
(``bundle.py``) it

1. verifies every file against ``bundle.json`` (sha256) — a changed or damaged file fails the
   check before any model is loaded;
2. reads the golden inputs (bounded, numeric arrays only) and, per model group of the manifest
   (one ``(format, precision)`` pair, e.g. int8 TFLite and int8 ONNX), loads the model the way a
   device app would (``load(bundle, format=, precision=)``: a compiled ``*_edgetpu.tflite`` when
   the Edge TPU library is here, else the plain model — TFLite models are probed in a child
   process first, so a model that crashes the interpreter cannot take this command down);
3. runs each golden sample and compares the outputs with the build machine's: quantized outputs
   in quantization steps (``|device - host| / scale <= quantized_steps``), float outputs with
   ``|device - host| <= atol + rtol * |host|``.

``golden`` section of ``bundle.json``::

    {"inputs": {"file": "golden_inputs.npz", "names": ["input"], "samples": 8,
                "source": "calibration_data/digits/val.npz (first 8 samples)"},
     "models": [{"format": "tflite", "precision": "int8", "outputs": "golden_outputs_0.npz",
                 "names": ["probs"],
                 "host": {"file": "model_int8.tflite", "backend": "ai_edge_litert 2.3.0",
                          "delegate": "xnnpack", "notes": []},
                 "tolerance": {"quantized_steps": 2, "atol": 1e-4, "rtol": 1e-3}}]}

Golden arrays are stored per sample: input ``i<k>`` and output ``o<k>`` are shaped
``[samples, *shape fed / returned by one run]``, so batch-1 and dynamic-batch models are fed
exactly what the build machine fed them.

The result is an ``edgeopt.check/1`` document; ``status`` is ``passed``, ``mismatch`` (outputs
differ beyond the tolerance), ``corrupt`` (files do not match the index) or ``error`` (a model
could not be loaded or run). Exit code 0 only for ``passed``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from .bundle import (
    DEFAULT_MAX_GOLDEN_BYTES,
    BundleError,
    BundleIndex,
    check_name,
    read_index,
    read_npz_bounded,
    verify_files,
)
from .errors import EdgeOptError

CHECK_SCHEMA = "edgeopt.check/1"
DEFAULT_TOLERANCE = {"quantized_steps": 2.0, "atol": 1e-4, "rtol": 1e-3}
MAX_SAMPLES = 10_000
_STEP_SLACK = 1e-3  # dequantized values are (q - zp) * scale in float32: steps are near-integers


def check_bundle(
    directory: str | Path,
    *,
    threads: int | None = None,
    delegate: str | None = None,
    providers: list[str] | None = None,
    isolate: bool = True,
    max_golden_bytes: int = DEFAULT_MAX_GOLDEN_BYTES,
) -> dict[str, Any]:
    """Verify a bundle's files and compare its models' outputs with the golden outputs.

    Args:
        directory: the bundle folder (holds ``bundle.json``).
        threads / delegate / providers: passed to ``load`` (default: the manifest's).
        isolate: probe TFLite models in a child process before loading them here.
        max_golden_bytes: limit for each golden ``.npz`` (file size and array bytes).

    Returns:
        The ``edgeopt.check/1`` document.

    Raises:
        BundleError: not a bundle, or a malformed index / golden section.
    """
    t0 = time.perf_counter()
    index = read_index(directory)
    problems = verify_files(index)
    doc: dict[str, Any] = {
        "schema": CHECK_SCHEMA,
        "bundle": str(index.directory),
        "name": index.name,
        "target": index.target,
        "files": {"checked": len(index.files), "problems": problems},
        "models": [],
    }
    if problems:
        names = ", ".join(p["file"] for p in problems)
        return _finish(
            doc, "corrupt", f"{len(problems)} file(s) do not match bundle.json: {names}", t0
        )
    golden = _golden_spec(index)
    inputs = _golden_inputs(index, golden["inputs"], max_golden_bytes)
    for group in golden["models"]:
        doc["models"].append(
            _check_group(
                index, group, inputs, threads, delegate, providers, isolate, max_golden_bytes
            )
        )
    statuses = {m["status"] for m in doc["models"]}
    status = "error" if "error" in statuses else "mismatch" if "mismatch" in statuses else "passed"
    bad = [m["file"] or m["format"] for m in doc["models"] if m["status"] != "passed"]
    summary = (
        f"{len(doc['models'])} model(s) match the build machine's outputs"
        if status == "passed"
        else f"{status}: {', '.join(bad)}"
    )
    return _finish(doc, status, summary, t0)


def _finish(doc: dict[str, Any], status: str, summary: str, t0: float) -> dict[str, Any]:
    doc["status"] = status
    doc["passed"] = status == "passed"
    doc["summary"] = summary
    doc["seconds"] = round(time.perf_counter() - t0, 3)
    return doc


def _golden_spec(index: BundleIndex) -> dict[str, Any]:
    """Validate the ``golden`` section's shape (names, files listed in the index)."""
    where = f"{index.directory / 'bundle.json'}: golden"
    g = index.golden
    listed = {f.name for f in index.files}
    inputs, models = g.get("inputs"), g.get("models")
    if not isinstance(inputs, dict) or not isinstance(models, list) or not models:
        raise BundleError(f"{where}: expected 'inputs' (object) and 'models' (non-empty list)")
    for what, entry in [("inputs", inputs), *((f"models[{i}]", m) for i, m in enumerate(models))]:
        if not isinstance(entry, dict):
            raise BundleError(f"{where}.{what} must be an object")
        key = "file" if what == "inputs" else "outputs"
        name = check_name(entry.get(key), f"{where}.{what}.{key}")
        if name not in listed:
            raise BundleError(f"{where}.{what}.{key}: {name!r} is not listed in 'files'")
        names = entry.get("names")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise BundleError(f"{where}.{what}.names must be a list of strings")
    samples = inputs.get("samples")
    if not isinstance(samples, int) or not 1 <= samples <= MAX_SAMPLES:
        raise BundleError(f"{where}.inputs.samples must be an integer in [1, {MAX_SAMPLES}]")
    return g


def _ordered(arrays: dict[str, np.ndarray], prefix: str, count: int, path: Path) -> list:
    want = [f"{prefix}{k}" for k in range(count)]
    if sorted(arrays) != sorted(want):
        raise BundleError(f"{path}: expected arrays {want}, found {sorted(arrays)}")
    return [arrays[k] for k in want]


def _golden_inputs(index: BundleIndex, spec: dict[str, Any], limit: int) -> list[np.ndarray]:
    path = index.directory / spec["file"]
    arrays = _ordered(read_npz_bounded(path, max_bytes=limit), "i", len(spec["names"]), path)
    for a in arrays:
        if a.ndim < 1 or a.shape[0] != spec["samples"]:
            raise BundleError(
                f"{path}: every array must hold {spec['samples']} samples along axis 0, got "
                f"shape {list(a.shape)}"
            )
    return arrays


def _check_group(
    index: BundleIndex,
    group: dict[str, Any],
    inputs: list[np.ndarray],
    threads: int | None,
    delegate: str | None,
    providers: list[str] | None,
    isolate: bool,
    limit: int,
) -> dict[str, Any]:
    """Load one model group the way an app would, run the golden samples, compare."""
    from .model import load

    fmt, precision = str(group.get("format")), str(group.get("precision"))
    out: dict[str, Any] = {
        "format": fmt,
        "precision": precision,
        "file": None,
        "host": group.get("host"),
        "tolerance": {**DEFAULT_TOLERANCE, **(group.get("tolerance") or {})},
        "outputs": [],
        "notes": [],
    }
    try:
        path = index.directory / group["outputs"]
        expected = _ordered(read_npz_bounded(path, max_bytes=limit), "o", len(group["names"]), path)
        model = load(
            index.directory,
            format=fmt,
            precision=precision,
            threads=threads,
            delegate=delegate,
            providers=providers,
            isolate=isolate and fmt == "tflite",
        )
        out.update(file=model.path.name, backend=model.backend, delegate=model.delegate)
        out["notes"] = list(model.notes)
        got = _run_samples(model, inputs)
    except EdgeOptError as exc:
        out.update(status="error", error=str(exc))
        return out
    if [s.name for s in model.outputs] != list(group["names"]):
        out.update(
            status="error",
            error=f"model outputs {[s.name for s in model.outputs]} do "
            f"not match the golden outputs {group['names']}",
        )
        return out
    tol = out["tolerance"]
    out["outputs"] = [
        compare_output(
            spec.name,
            e,
            g,
            spec.quantization.scale if spec.is_quantized else None,
            spec.quantization.axis if spec.is_quantized else None,
            tol,
        )
        for spec, e, g in zip(model.outputs, expected, got, strict=True)
    ]
    out["status"] = "passed" if all(o["passed"] for o in out["outputs"]) else "mismatch"
    return out


def _run_samples(model: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Run sample by sample (as the build machine did) and stack each output."""
    n = inputs[0].shape[0]
    if len(inputs) != len(model.inputs):
        raise BundleError(
            f"golden inputs hold {len(inputs)} arrays, the model takes {len(model.inputs)}"
        )
    results: list[list[np.ndarray]] = [[] for _ in model.outputs]
    for i in range(n):
        outs = model.run([a[i] for a in inputs])
        for k, value in enumerate(outs.values()):
            results[k].append(np.asarray(value))
    return [np.stack(r) for r in results]


def compare_output(
    name: str,
    expected: np.ndarray,
    got: np.ndarray,
    scale: tuple[float, ...] | None,
    axis: int | None,
    tolerance: dict[str, float],
) -> dict[str, Any]:
    """Compare one output (``[samples, ...]``) with its golden value.

    Args:
        name: output name (for the report).
        expected / got: golden and device values, both ``[samples, *shape]``.
        scale / axis: the output's quantization scale(s) when it is quantized (errors are then
            counted in quantization steps), else None.
        tolerance: ``quantized_steps``, ``atol``, ``rtol``.

    Returns:
        ``name``, ``shape``, ``passed``, ``max_abs_error``, ``mean_abs_error``, ``max_steps``
        (quantized only), ``elements_over`` / ``elements``, ``cosine``, ``top1_agreement``
        (classifier-shaped outputs only) and ``reason`` when it failed for a structural reason.
    """
    res: dict[str, Any] = {"name": name, "shape": list(got.shape), "quantized": scale is not None}
    if expected.shape != got.shape:
        return {
            **res,
            "passed": False,
            "reason": f"shape {list(got.shape)} differs from golden {list(expected.shape)}",
        }
    e, g = expected.astype(np.float64), got.astype(np.float64)
    both_nan = np.isnan(e) & np.isnan(g)
    diff = np.where(both_nan, 0.0, np.abs(g - e))
    diff = np.where(np.isnan(diff), np.inf, diff)
    if scale is not None:
        steps = diff / _scale_array(scale, axis, g.shape)
        over = steps > float(tolerance["quantized_steps"]) + _STEP_SLACK
        res["max_steps"] = _f(np.round(steps.max(), 3)) if steps.size else 0.0
    else:
        over = diff > float(tolerance["atol"]) + float(tolerance["rtol"]) * np.abs(e)
    res.update(
        passed=not bool(over.any()),
        max_abs_error=_f(diff.max()) if diff.size else 0.0,
        mean_abs_error=_f(diff.mean()) if diff.size else 0.0,
        elements_over=int(over.sum()),
        elements=int(over.size),
        cosine=_cosine(e, g),
    )
    top1 = _top1(e, g)
    if top1 is not None:
        res["top1_agreement"] = top1
    return res


def _scale_array(scale: tuple[float, ...], axis: int | None, shape: tuple) -> np.ndarray:
    """Scales shaped to divide a stacked ``[samples, *shape]`` output (per-axis or not)."""
    s = np.asarray(scale, dtype=np.float64)
    if s.size == 1:
        return s.reshape(())
    ndim = len(shape)
    where = None if axis is None else axis + 1 if axis >= 0 else ndim + axis
    if where is None or not 1 <= where < ndim or shape[where] != s.size:
        return s.min()  # axis unknown: the finest scale, so no difference is undercounted
    dims = [1] * ndim
    dims[where] = s.size  # +1 above: the stacked samples axis comes first
    return s.reshape(dims)


def _f(x: Any) -> float | str:
    v = float(x)
    return v if np.isfinite(v) else str(v)  # strict JSON: inf / nan as strings


def _cosine(e: np.ndarray, g: np.ndarray) -> float | None:
    a, b = e.ravel(), g.ravel()
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return None
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return round(float(a @ b) / (na * nb), 9)


def _top1(e: np.ndarray, g: np.ndarray) -> float | None:
    """Share of samples whose arg-max class agrees, for outputs with one class axis (C >= 2)."""
    per_sample = [d for d in e.shape[1:] if d != 1]
    if len(per_sample) != 1 or per_sample[0] < 2:
        return None
    a, b = e.reshape(e.shape[0], -1), g.reshape(g.shape[0], -1)
    # a tie counts as agreement when some class is maximal in both rows (int8 outputs tie often)
    top_a = a == a.max(axis=1, keepdims=True)
    top_b = b == b.max(axis=1, keepdims=True)
    return round(float((top_a & top_b).any(axis=1).mean()), 6)


# -- command line ------------------------------------------------------------------------------
def _positive_mib(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer (MiB), got {text!r}"
        ) from None
    if not 1 <= value <= 4096:
        raise argparse.ArgumentTypeError(f"expected MiB in [1, 4096], got {text!r}")
    return value


def add_parser(sub: Any) -> None:
    """Register ``check`` on the runtime CLI's subparsers."""
    p = sub.add_parser(
        "check", help="verify a bundle's files and compare its outputs with the golden outputs"
    )
    p.add_argument("bundle", help="bundle folder (holds bundle.json)")
    p.add_argument("--threads", type=int, help="interpreter / intra-op threads")
    p.add_argument("--delegate", metavar="NAME|PATH", help="TFLite delegate (default: manifest's)")
    p.add_argument(
        "--providers",
        metavar="P1,P2",
        type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
        help="ONNX Runtime execution providers (default: manifest's)",
    )
    p.add_argument(
        "--max-golden-mib",
        type=_positive_mib,
        default=DEFAULT_MAX_GOLDEN_BYTES >> 20,
        help=f"size limit of each golden .npz ({DEFAULT_MAX_GOLDEN_BYTES >> 20})",
    )
    p.add_argument("--no-isolate", action="store_true", help="do not probe TFLite in a child")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.set_defaults(handler=_main)


def _main(args: argparse.Namespace) -> int:
    if args.threads is not None and args.threads < 1:
        raise EdgeOptError(f"--threads must be a positive integer, got {args.threads}")
    doc = check_bundle(
        args.bundle,
        threads=args.threads,
        delegate=args.delegate,
        providers=args.providers,
        isolate=not args.no_isolate,
        max_golden_bytes=args.max_golden_mib << 20,
    )
    print(json.dumps(doc) if args.json else format_check(doc))
    return 0 if doc["passed"] else 1


def format_check(doc: dict[str, Any]) -> str:
    """Readable lines from an ``edgeopt.check/1`` document."""
    lines = [f"bundle {doc['name']} (target {doc['target']}): {doc['files']['checked']} files"]
    for p in doc["files"]["problems"]:
        lines.append(f"  {p['file']}: {p['problem']}")
    for m in doc["models"]:
        head = f"{m['file'] or '?'}  {m['format']} {m['precision']}"
        if m["status"] == "error":
            lines.append(f"{head}: error: {m['error']}")
            continue
        lines.append(f"{head}  {m['backend']} [{m['delegate']}]: {m['status']}")
        for o in m["outputs"]:
            err = (
                f"max {o['max_steps']} steps (tolerance {m['tolerance']['quantized_steps']})"
                if o["quantized"]
                else f"max abs error {o.get('max_abs_error')}"
            )
            extra = f", top-1 agreement {o['top1_agreement']:.1%}" if "top1_agreement" in o else ""
            lines.append(f"  {o['name']}: {o.get('reason') or err}{extra}")
        lines += [f"  note: {n}" for n in m["notes"]]
    lines.append(f"{doc['status']}: {doc['summary']}")
    return "\n".join(lines)


__all__ = [
    "CHECK_SCHEMA",
    "DEFAULT_TOLERANCE",
    "add_parser",
    "check_bundle",
    "compare_output",
    "format_check",
]
