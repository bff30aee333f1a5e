"""``edgeopt compare REFERENCE CANDIDATE --data PATH``: how far a quantized model drifts.

Both models run through ``edgeopt_runtime`` on the same samples (interleaved, so both see the
same machine load). The report (JSON, Markdown, HTML) is always written; budget gates then decide
the exit code: 0 all passed, 1 a gate failed (one line per failed gate says by how much), 2 bad
input (an ``EdgeOptError``).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np
from edgeopt_runtime.errors import CalibrationError, EdgeOptError, InputError
from edgeopt_runtime.spec import TensorSpec

log = logging.getLogger("edgeopt.compare")

WARMUP_RUNS = 3  # untimed runs first: the first inference includes lazy allocation
DEFAULT_LAYER_SAMPLES = 32


# --------------------------------------------------------------------------- signatures


def _dims_compatible(a: TensorSpec, b: TensorSpec) -> bool:
    if len(a.shape) != len(b.shape):
        return False
    return all(x is None or y is None or x == y for x, y in zip(a.shape, b.shape, strict=True))


def match_signatures(ref: Sequence[TensorSpec], cand: Sequence[TensorSpec],
                     what: str) -> tuple[list[int], str | None]:
    """Candidate index for each reference tensor: by name, else by position.

    Returns:
        (candidate indices in reference order, a note when matched by position).

    Raises:
        InputError: counts differ or a matched pair has incompatible shapes (names both).
    """
    if len(ref) != len(cand):
        raise InputError(
            f"reference has {len(ref)} {what}s ({', '.join(s.name for s in ref)}) but candidate "
            f"has {len(cand)} ({', '.join(s.name for s in cand)})")
    names = {s.name: i for i, s in enumerate(cand)}
    note = None
    if all(s.name in names for s in ref):
        order = [names[s.name] for s in ref]
    else:
        order = list(range(len(ref)))
        note = (f"{what} names differ ({', '.join(s.name for s in ref)} vs "
                f"{', '.join(s.name for s in cand)}): matched by position")
    for r, i in zip(ref, order, strict=True):
        if not _dims_compatible(r, cand[i]):
            raise InputError(f"{what} {r.name!r}: reference shape {r.shape_str()} does not match "
                             f"candidate {cand[i].name!r} shape {cand[i].shape_str()}")
    return order, note


# --------------------------------------------------------------------------- data and labels


def _read_labels(path: Path) -> np.ndarray:
    """Labels from .npy, .npz (key ``labels`` or ``y``) or a text file of one id per line."""
    from edgeopt_runtime.npz import read_npy, read_npz_arrays

    try:
        # The runtime's readers check declared sizes before reading (no decompression bomb).
        if path.suffix == ".npz":
            arrays = read_npz_arrays(path, error=CalibrationError)
            key = next((k for k in ("labels", "y") if k in arrays), None)
            if key is None:
                raise CalibrationError(f"{path}: no 'labels' or 'y' array (has "
                                       f"{', '.join(arrays) or 'nothing'})")
            return np.asarray(arrays[key])
        if path.suffix == ".npy":
            return read_npy(path, error=CalibrationError)
        return np.loadtxt(path, dtype=np.int64, ndmin=1)
    except FileNotFoundError:
        raise CalibrationError(f"{path}: no such labels file") from None
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"{path}: cannot read labels: {exc}") from None


def _labels_for(src: Any, labels_path: Path | None) -> tuple[np.ndarray | None, str | None]:
    """Labels aligned with the selected samples, and where they came from."""
    if labels_path is None:
        return (src.labels, f"{src.source} (labels/y key)") if src.labels is not None else (
            None, None)
    labels = _read_labels(labels_path)
    # The calibration reader selects a seeded subset with --num; labels follow the same rows.
    indices = getattr(src, "indices", getattr(src, "_indices", None))
    reader = getattr(src, "_reader", None)
    total = getattr(reader, "count", src.count)
    if len(labels) != total:
        raise CalibrationError(f"{labels_path}: {len(labels)} labels but {src.source} holds "
                               f"{total} samples")
    if indices is not None and len(indices) != len(labels):
        labels = labels[np.asarray(indices)]
    return labels, str(labels_path)


def _run_all(ref: Any, cand: Any, samples: list[dict[str, np.ndarray]],
             cand_keys: dict[str, str]) -> tuple[list[list[np.ndarray]], list[list[np.ndarray]],
                                                  list[int], list[int]]:
    """Run both models on every sample; outputs per model output, and run times in ns."""
    ref_out: list[list[np.ndarray]] = [[] for _ in ref.outputs]
    cand_out: list[list[np.ndarray]] = [[] for _ in cand.outputs]
    ref_ns, cand_ns = [], []
    if samples:
        for _ in range(WARMUP_RUNS):
            ref.run(samples[0])
            cand.run({cand_keys[k]: v for k, v in samples[0].items()})
    for i, s in enumerate(samples):
        cs = {cand_keys[k]: v for k, v in s.items()}
        try:
            t0 = time.perf_counter_ns()
            r = ref.run(s)
            t1 = time.perf_counter_ns()
            c = cand.run(cs)
            t2 = time.perf_counter_ns()
        except InputError as exc:
            raise CalibrationError(f"sample {i}: data does not fit the models: {exc}") from None
        ref_ns.append(t1 - t0)
        cand_ns.append(t2 - t1)
        for j in range(len(ref.outputs)):
            ref_out[j].append(np.asarray(r[j]))
            cand_out[j].append(np.asarray(c[j]))
    return ref_out, cand_out, ref_ns, cand_ns


def _stack(parts: list[np.ndarray]) -> np.ndarray:
    """Per-sample outputs stacked on the batch axis (scalars get one)."""
    return np.concatenate([p if p.ndim else p.reshape(1) for p in parts], axis=0)


# --------------------------------------------------------------------------- per-layer


def _per_layer(ref: Any, cand: Any, source: Path | None, samples: list[dict[str, np.ndarray]],
               calib: list[dict[str, np.ndarray]] | None, notes: list[str]) -> dict[str, Any]:
    """The per-layer section: ONNX from the two files, TFLite from --source; else why not."""
    from edgeopt import layers

    try:
        if cand.format == "onnx" and ref.format == "onnx":
            return layers.onnx_layer_report(ref.path, cand.path, samples)
        if cand.format == "tflite" and source is not None:
            section = layers.tflite_layer_report(source, samples, calibration=calib)
            # The debugger re-quantizes the source: its ranges come from this data, not from
            # the candidate file, so say which data calibrated it.
            section["calibration"] = ("--calib data" if calib is not None else
                                      "the --data samples (pass --calib with the candidate's "
                                      "calibration set to reproduce its ranges)")
            return section
    except EdgeOptError:
        raise
    except Exception as exc:  # a diagnostic must not sink the comparison; say why it failed
        log.debug("per-layer analysis failed", exc_info=True)
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        notes.append(f"per-layer analysis failed: {type(exc).__name__}: {first}")
        return layers.unavailable(f"{type(exc).__name__}: {first}")
    if cand.format == "tflite":
        return layers.unavailable(
            "TFLite per-layer analysis needs the float source model and data "
            "(QuantizationDebugger): pass --source MODEL.keras or a SavedModel directory",
            layers.TFLITE_METHOD)
    return layers.unavailable(
        f"ONNX per-layer analysis needs a float .onnx reference and its QDQ candidate; got "
        f"{ref.format} reference and {cand.format} candidate", layers.ONNX_METHOD)


# --------------------------------------------------------------------------- the command


def _model_info(m: Any) -> dict[str, Any]:
    from edgeopt_runtime.manifest import sha256_file

    info = dict(m.info())
    info["sha256"] = sha256_file(m.path)
    info["inputs"] = [s.to_dict() for s in m.inputs]
    info["outputs"] = [s.to_dict() for s in m.outputs]
    return info


def _parse_gates(max_drop: str | None, has_labels: bool) -> tuple[float, bool] | None:
    from edgeopt.drift import parse_max_drop

    if max_drop is None:
        return None
    parsed = parse_max_drop(max_drop)
    if not has_labels:
        raise CalibrationError("--max-drop needs labels: pass --labels PATH or a 'labels'/'y' "
                               "array in the --data .npz")
    return parsed


def run_compare(
    reference: Path, candidate: Path, data: Path, *, labels_path: Path | None = None,
    num: int | None = None, seed: int = 0, threads: int | None = None,
    per_layer: bool = True, source: Path | None = None, calib: Path | None = None,
    layer_samples: int = DEFAULT_LAYER_SAMPLES, max_drop: str | None = None,
    drop_metric: str = "accuracy", min_sqnr: float | None = None,
    min_cosine: float | None = None, isolate: bool = True,
) -> dict[str, Any]:
    """Compare two models on the same data and return the ``edgeopt.report/1`` document.

    Raises:
        EdgeOptError: unreadable models, different signatures, data that does not fit,
            labels whose count does not match, bad gate values.
    """
    import edgeopt_runtime as rt

    from edgeopt.calibration import open_calibration
    from edgeopt.drift import compare_outputs, evaluate_gates, task_metrics
    from edgeopt.report import new_report

    # isolate: each file is probed in a child process first (a corrupt one is refused, not a crash)
    ref = rt.load(reference, threads=threads, isolate=isolate)
    cand = rt.load(candidate, threads=threads, isolate=isolate)
    notes: list[str] = []
    in_order, note_in = match_signatures(ref.inputs, cand.inputs, "input")
    out_order, note_out = match_signatures(ref.outputs, cand.outputs, "output")
    notes += [n for n in (note_in, note_out) if n]
    cand_keys = {r.name: cand.inputs[i].name for r, i in zip(ref.inputs, in_order, strict=True)}
    src = open_calibration(data, list(ref.inputs), num=num, seed=seed)
    labels, labels_source = _labels_for(src, labels_path)
    gate_drop = _parse_gates(max_drop, labels is not None)
    samples = list(src)
    log.info("running %d samples through both models", len(samples))
    ref_out, cand_out, ref_ns, cand_ns = _run_all(ref, cand, samples, cand_keys)
    refs = [_stack(p) for p in ref_out]
    cands = [_stack(cand_out[i]) for i in out_order]
    report = new_report("compare")
    report["models"] = {"reference": _model_info(ref), "candidate": _model_info(cand)}
    report["data"] = {"source": str(data), "format": src.format, "count": src.count,
                      "sha256": src.sha256, "synthetic": src.synthetic, "num": num, "seed": seed,
                      "labels": ({"source": labels_source, "count": int(len(labels))}
                                 if labels is not None else None),
                      "warnings": list(src.warnings)}
    rows = getattr(src, "indices", getattr(src, "_indices", None))
    if num is not None and rows is not None:
        # Sample indices in drift (flipped_top1) count evaluated samples; these map them to rows.
        report["data"]["rows"] = [int(i) for i in rows]
    report["drift"] = compare_outputs(refs, cands, [s.name for s in ref.outputs])
    report["task"] = task_metrics(refs, cands, labels, seed=seed) if labels is not None else None
    calib_samples = (list(open_calibration(calib, list(ref.inputs), num=200, seed=seed))
                     if per_layer and calib is not None else None)
    report["per_layer"] = (_per_layer(ref, cand, source, samples[:layer_samples], calib_samples,
                                      notes)
                           if per_layer else {"available": False, "reason": "--no-per-layer",
                                              "layers": []})
    report["latency"] = _latency(ref_ns, cand_ns)
    report["gates"] = evaluate_gates(report["drift"], report["task"], max_drop=gate_drop,
                                     drop_metric=drop_metric, min_sqnr=min_sqnr,
                                     min_cosine=min_cosine)
    report["notes"] = notes + [f"candidate: {n}" for n in cand.notes]
    return report


def _latency(ref_ns: list[int], cand_ns: list[int]) -> dict[str, Any] | None:
    from edgeopt_runtime.profile import latency_stats

    if len(ref_ns) < 2:
        return None
    ref, cand = latency_stats(ref_ns), latency_stats(cand_ns)
    return {"reference": ref, "candidate": cand,
            "speedup_p50": ref["p50_ms"] / cand["p50_ms"] if cand["p50_ms"] else None,
            "method": "per-sample Model.run on the evaluation data, models interleaved, "
                      f"after {WARMUP_RUNS} warm-up runs"}


@click.command("compare")
@click.argument("reference", type=click.Path(path_type=Path))
@click.argument("candidate", type=click.Path(path_type=Path))
@click.option("--data", "data", required=True, type=click.Path(path_type=Path),
              help="Evaluation inputs (.npz/.npy/image dir); validation data, else calibration.")
@click.option("--labels", "labels_path", type=click.Path(path_type=Path),
              help="Class ids (.npy, .npz with 'labels'/'y', or text); default: the --data "
                   ".npz's 'labels'/'y' array.")
@click.option("--num", type=click.IntRange(min=1), help="Use a seeded random subset of N samples.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the subset and of the bootstrap intervals.")
@click.option("--threads", type=click.IntRange(min=1), help="Threads for both models.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("compare-report"),
              show_default=True, help="Folder for report.json / report.md / report.html.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report on stdout.")
@click.option("--max-drop", help="Max task-metric drop: accuracy points (1.5) or percent of "
                                 "the float value (2%). Needs labels.")
@click.option("--drop-metric", default="accuracy", show_default=True,
              type=click.Choice(["accuracy", "precision_macro", "recall_macro", "f1_macro",
                                 "roc_auc"]), help="Task metric --max-drop applies to.")
@click.option("--min-sqnr", type=float, help="Minimum SQNR (dB) of every output.")
@click.option("--min-cosine", type=float, help="Minimum cosine similarity of every output.")
@click.option("--per-layer/--no-per-layer", default=True, show_default=True,
              help="Rank layers by quantization error (ONNX QDQ, or TFLite with --source).")
@click.option("--source", type=click.Path(path_type=Path),
              help="Float Keras/SavedModel source, for TFLite per-layer analysis.")
@click.option("--calib", type=click.Path(path_type=Path),
              help="Calibration data the candidate was quantized with (TFLite per-layer "
                   "re-quantizes --source with it; default: --data).")
@click.option("--layer-samples", type=click.IntRange(min=1), default=DEFAULT_LAYER_SAMPLES,
              show_default=True, help="Samples used by the per-layer analysis.")
@click.option("--isolate/--no-isolate", default=True, show_default=True,
              help="Probe both models in a child process first (skip only for trusted files).")
@click.option("-v", "--verbose", is_flag=True, help="Log progress on stderr.")
def command(reference: Path, candidate: Path, data: Path, labels_path: Path | None,
            num: int | None, seed: int, threads: int | None, out_dir: Path, as_json: bool,
            max_drop: str | None, drop_metric: str, min_sqnr: float | None,
            min_cosine: float | None, per_layer: bool, source: Path | None, calib: Path | None,
            layer_samples: int, isolate: bool, verbose: bool) -> None:
    """Compare a quantized CANDIDATE's outputs with its float REFERENCE on the same data.

    Writes report.json / report.md / report.html to --out. Exit code 1 when a gate
    (--max-drop, --min-sqnr, --min-cosine) fails, 2 on bad input.
    """
    from edgeopt.report import dumps, print_summary, write_report

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="edgeopt: %(message)s")
    report = run_compare(reference, candidate, data, labels_path=labels_path, num=num, seed=seed,
                         threads=threads, per_layer=per_layer, source=source, calib=calib,
                         layer_samples=layer_samples, max_drop=max_drop,
                         drop_metric=drop_metric, min_sqnr=min_sqnr, min_cosine=min_cosine,
                         isolate=isolate)
    paths = write_report(report, out_dir)
    if as_json:
        click.echo(dumps(report), nl=False)
    else:
        print_summary(report)
        click.echo(f"report: {paths['html']} (also {paths['json'].name}, {paths['md'].name})")
    failed = [r for r in report["gates"]["results"] if not r["passed"]]
    for r in failed:
        click.echo(f"edgeopt: gate failed: {r['message']}", err=True)
    if failed:
        sys.exit(1)
