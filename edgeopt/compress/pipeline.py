"""``edgeopt.compress.compress(model, data, options, out=...)``: the whole job.

Order, cheapest refusals first: options (validated when built), binarisation (refused with its
measured reason), the output directory, the source model (``load_source``: Lambda layers and
other code refused as everywhere), the data. Then inside a staging folder next to ``OUT``: the
steps (``keras_steps`` / ``onnx_steps``), ``OUT/model.<source suffix>``, which is loaded back
through ``load_source`` in safe mode (what ``edgeopt convert`` will do), the measurements
(``measure``: the original and the compressed model through ``edgeopt.convert`` for the same
targets), and ``OUT/report.{json,md,html}``; one rename puts it all in place.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from edgeopt_runtime.errors import ModelLoadError

from . import binarize as _binarize
from . import graph, measure
from .data import Dataset, load_dataset
from .options import DEFAULT_EPOCHS, CompressOptionError, CompressOptions

Progress = Callable[[str], None]
SCHEMA = "edgeopt.compress/1"
WORK = "_work"
KERAS_SUFFIXES = {".keras", ".h5", ".hdf5"}


@dataclass
class CompressReport:
    """The ``edgeopt.compress/1`` document and where the output was written."""

    data: dict[str, Any]
    out: Path

    @property
    def model_path(self) -> Path:
        return self.out / self.data["output"]["model"]

    def to_dict(self) -> dict[str, Any]:
        return self.data


def compress(
    model: str | Path,
    data: str | Path | None,
    options: CompressOptions,
    *,
    val: str | Path | None = None,
    out: str | Path = "compressed",
    targets: Sequence[str] = ("arm-cpu",),
    formats: str = "all",
    measure_gains: bool = True,
    ablation: bool = True,
    skip: Iterable[str] = (),
    binarize: bool = False,
    force: bool = False,
    trust_model: bool = False,
    progress: Progress | None = None,
) -> CompressReport:
    """Compress a float model and measure what it gained.

    Args:
        model: ``.keras`` / ``.h5`` (all steps) or ``.onnx`` (post-training prune / cluster).
        data: training data (calibration formats; labels optional with distillation).
        options: the steps and fine-tuning settings.
        val: held-out data for accuracy / drift (default: the training data, with a note).
        out: output folder: ``model.<suffix>`` plus ``report.json`` / ``.md`` / ``.html``.
        targets: target profiles the gains are measured for (through ``edgeopt.convert``).
        formats: ``all`` (every format each target allows), ``tflite`` or ``onnx``.
        measure_gains: convert both models and measure size / latency / accuracy per target.
        ablation: with distillation and labels, also run the same steps without distillation.
        skip: regexes of layer names (Keras) / node or weight names (ONNX) to leave alone.
        binarize: refused: ``BinarizeUnavailable`` with the measured reason.
        force: replace an ``out`` holding earlier edgeopt output.
        trust_model: let Keras deserialize Python code (Lambda) from the model file.
        progress: called with one line per step.

    Raises:
        EdgeOptError: (subclasses) bad options, model, data or output folder; nothing is
            written under ``out`` then.
    """
    from ..artifact import Staging, check_output
    from ..sources import load_source

    say = progress or (lambda _m: None)
    if binarize:
        raise _binarize.BinarizeUnavailable(_binarize.REASON)
    patterns = _patterns(skip)
    out = Path(out)
    check_output(out, force)
    say(f"loading {model}")
    source = load_source(model, trust_model=trust_model)
    if source.format == "savedmodel":
        raise ModelLoadError(
            f"{source.path}: compress rewrites Keras (.keras / .h5) or ONNX models; a SavedModel "
            "has no layer graph to rewrite: pass the Keras model it was exported from"
        )
    if source.format == "onnx":
        from .onnx_steps import refuse_unsupported

        refuse_unsupported(options, source.path)
    train = load_dataset(data, source.inputs, "training", seed=options.seed)
    held = load_dataset(val, source.inputs, "validation", seed=options.seed) if val else None
    started = time.perf_counter()
    with Staging(out) as stage:
        work = stage.path(WORK)
        work.mkdir()
        suffix = source.path.suffix.lower() if source.format != "onnx" else ".onnx"
        model_path = stage.path(f"model{suffix}")
        if source.format == "onnx":
            body = _onnx(source, train, held, options, patterns, model_path, say)
        else:
            body = _keras(source, train, held, options, patterns, model_path, ablation, work,
                          say)
        say(f"checking that {model_path.name} loads as edgeopt convert will load it")
        load_source(model_path)
        if measure_gains:
            body["measured"] = _measure(source, model_path, body.pop("_ablation", None),
                                        targets, train, held, work, say, trust_model,
                                        formats)
        body.pop("_ablation", None)
        report = _document(source, train, held, options, patterns, targets, formats, body,
                           model_path, out, started)
        from .report import write

        say("writing report")
        write(report, stage.path())
        stage.commit(drop=(WORK,))
    return CompressReport(report, out)


def _patterns(skip: Iterable[str]) -> tuple[re.Pattern[str], ...]:
    out = []
    for text in skip:
        try:
            out.append(re.compile(text))
        except re.error as exc:
            raise CompressOptionError(f"--skip {text!r} is not a valid regular expression: "
                                      f"{exc}") from None
    return tuple(out)


# ------------------------------------------------------------------------------ Keras


def _keras(source: Any, train: Dataset, held: Dataset | None, opts: CompressOptions,
           patterns: tuple[re.Pattern[str], ...], model_path: Path, ablation: bool, work: Path,
           say: Progress) -> dict[str, Any]:
    import keras

    from . import sparsity
    from .keras_steps import run_steps
    from .train import predict

    keras.utils.set_random_seed(opts.seed)
    teacher = graph.as_functional(source.handle, str(source.path))
    result = run_steps(teacher, train, opts, patterns, say)
    student = result.model
    say(f"saving {model_path.name}")
    _save_keras(student, model_path)
    eval_data = held or train
    body: dict[str, Any] = {
        "phases": result.phases, "notes": list(result.notes),
        "channels": result.channel_plan, "qat": result.qat,
        "before": _keras_stats(teacher, source.path, eval_data),
        "after": _keras_stats(student, model_path, eval_data),
        "layers": _kernel_rows(teacher, student, patterns),
    }
    body["after"]["float_drift_vs_original"] = measure.drift(
        predict(teacher, eval_data.inputs), predict(student, eval_data.inputs))
    if opts.prune is not None:
        say("sparsity pre-flight (XNNPACK sparse path)")
        body["sparsity_preflight"] = sparsity.preflight(student,
                                                        sparsity.conv1x1_sparsity(student))
    if opts.distill and ablation and train.labels is not None:
        say("ablation: the same steps without distillation")
        keras.utils.set_random_seed(opts.seed)
        plain = run_steps(teacher, train, replace(opts, distill=False), patterns, say)
        plain_path = work / f"no_distill{model_path.suffix}"
        _save_keras(plain.model, plain_path)
        body["_ablation"] = plain_path
        body["ablation"] = {"what": "same steps and seed, hard labels only (no distillation)",
                            "float": _keras_stats(plain.model, plain_path, eval_data)}
    return body


def _save_keras(model: Any, path: Path) -> None:
    from ..backends._frameworks import stdout_to_stderr

    with stdout_to_stderr():
        model.save(path)


def _keras_stats(model: Any, path: Path, data: Dataset) -> dict[str, Any]:
    from .train import predict

    outs = predict(model, data.inputs)
    return {"parameters": graph.parameters(model), "macs": graph.macs(model),
            "file": measure.compressed_sizes(path),
            "accuracy": measure.accuracy(outs, data.labels)}


def _kernel_rows(before: Any, after: Any, patterns: tuple[re.Pattern[str], ...]
                 ) -> list[dict[str, Any]]:
    old = {k.key: k for k in graph.kernels(before)}
    rows = []
    for k in graph.kernels(after):
        w = k.numpy()
        o = old.get(k.key)
        rows.append({
            "layer": k.layer, "weight": k.attr, "type": k.cls, "shape": list(w.shape),
            "shape_before": list(o.variable.shape) if o is not None else None,
            "sparsity": round(float(np.mean(w == 0)), 4), "unique_values": int(np.unique(w).size),
            "skipped": any(p.search(k.layer) for p in patterns),
        })
    return rows


# ------------------------------------------------------------------------------ ONNX


def _onnx(source: Any, train: Dataset, held: Dataset | None, opts: CompressOptions,
          patterns: tuple[re.Pattern[str], ...], model_path: Path, say: Progress
          ) -> dict[str, Any]:
    from .onnx_steps import RETRAIN_HINT, compress_onnx, run_float, save_onnx

    say("pruning / clustering ONNX weight initializers (post-training, no fine-tuning)")
    new, rows = compress_onnx(source.handle, opts, patterns)
    save_onnx(new, model_path)
    eval_data = held or train
    ref = run_float(source.path, eval_data.inputs, eval_data.names)
    cand = run_float(model_path, eval_data.inputs, eval_data.names)
    notes = [f"ONNX: post-training only ({RETRAIN_HINT})"]
    if opts.epochs != DEFAULT_EPOCHS:
        notes.append("--epochs has no effect on ONNX models (no fine-tuning)")

    def stats(path: Path, outs: list[np.ndarray]) -> dict[str, Any]:
        return {"parameters": _onnx_params(path), "file": measure.compressed_sizes(path),
                "accuracy": measure.accuracy(outs, eval_data.labels)}

    after = stats(model_path, cand)
    after["float_drift_vs_original"] = measure.drift(ref, cand)
    return {"phases": [{"phase": "post-training", "steps": 0, "fine_tuned": False}],
            "notes": notes, "channels": None, "qat": None,
            "before": stats(source.path, ref), "after": after, "layers": rows}


def _onnx_params(path: Path) -> dict[str, int]:
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    arrays = [numpy_helper.to_array(t) for t in m.graph.initializer]
    return {"total": int(sum(a.size for a in arrays)),
            "nonzero": int(sum(np.count_nonzero(a) for a in arrays))}


# ------------------------------------------------------------------------------ measuring


def _measure(source: Any, compressed: Path, ablation_path: Path | None,
             targets: Sequence[str], train: Dataset, held: Dataset | None, work: Path,
             say: Progress, trust_model: bool, formats: str) -> dict[str, Any]:
    import edgeopt_runtime as rt

    from ..backends._frameworks import stdout_to_stderr

    eval_data = held or train
    say("measuring: converting the original model")
    before = measure.convert_for(source.path, targets, train, held, work / "original", say,
                                 trust_model, formats)
    say("measuring: converting the compressed model")
    after = measure.convert_for(compressed, targets, train, held, work / "compressed", say,
                                formats=formats)
    plain = None
    if ablation_path is not None:
        say("measuring: converting the model compressed without distillation")
        plain = measure.convert_for(ablation_path, targets, train, held, work / "ablation", say,
                                    formats=formats)
    ref_float = _float_outputs(source, eval_data)
    plain_index = {(a["target"], a["format"], a["precision"]): a for a in plain.artifacts} \
        if plain is not None else {}
    rows = []
    for art, b_path, a_path in measure.artifact_pairs(before, after):
        say(f"measuring {art['target']}/{art['file']}: size, latency (interleaved), accuracy")
        with stdout_to_stderr():
            mb = rt.load(b_path, threads=1)
            ma = rt.load(a_path, threads=1)
        outs_b, outs_a = measure.run_outputs(mb, eval_data), measure.run_outputs(ma, eval_data)
        row = {
            "target": art["target"], "file": art["file"], "format": art["format"],
            "precision": art["precision"],
            "size": measure.size_gain(measure.compressed_sizes(b_path),
                                      measure.compressed_sizes(a_path)),
            "latency": measure.interleaved_latency(mb, ma, eval_data.feeds(0)),
            "accuracy": {"before": measure.accuracy(outs_b, eval_data.labels),
                         "after": measure.accuracy(outs_a, eval_data.labels)},
            "drift_vs_float_original": {"before": measure.drift(ref_float, outs_b),
                                        "after": measure.drift(ref_float, outs_a)},
        }
        key = (art["target"], art["format"], art["precision"])
        if key in plain_index:
            with stdout_to_stderr():
                mp = rt.load(plain.out / plain_index[key]["path"], threads=1)
            outs_p = measure.run_outputs(mp, eval_data)
            row["accuracy"]["after_without_distillation"] = measure.accuracy(outs_p,
                                                                             eval_data.labels)
            row["drift_vs_float_original"]["after_without_distillation"] = measure.drift(
                ref_float, outs_p)
        rows.append(row)
    return {"targets": list(targets), "artifacts": rows,
            "data": "validation" if held is not None else "training",
            "pipeline": "edgeopt.convert for both models, same targets and calibration data"}


def _float_outputs(source: Any, data: Dataset) -> list[np.ndarray]:
    """The float original's outputs: Keras in inference mode, ONNX through the runtime."""
    from .train import predict

    if source.format == "onnx":
        from .onnx_steps import run_float

        return run_float(source.path, data.inputs, data.names)
    return predict(source.handle, data.inputs)


# ------------------------------------------------------------------------------ document


def _document(source: Any, train: Dataset, held: Dataset | None, opts: CompressOptions,
              patterns: tuple[re.Pattern[str], ...], targets: Sequence[str], formats: str,
              body: dict[str, Any], model_path: Path, out: Path, started: float
              ) -> dict[str, Any]:
    from ..results import host_info, tool_versions

    notes = list(body.pop("notes", []))
    notes += train.notes + (held.notes if held else [])
    if held is None:
        notes.append("no --val: accuracy and drift are measured on the training data "
                     "(optimistic); pass --val for held-out numbers")
    doc = {
        "schema": SCHEMA,
        "kind": "compress",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": host_info(),
        "tools": tool_versions(),
        "source": {"path": str(source.path), "format": source.format, "sha256": source.sha256},
        "data": {"training": train.to_dict(), "validation": held.to_dict() if held else None},
        "settings": {**opts.to_dict(), "skip": [p.pattern for p in patterns],
                     "targets": list(targets), "formats": formats},
        "output": {"model": model_path.name, "path": str(out / model_path.name),
                   "next": f"edgeopt convert {out / model_path.name} --target "
                           f"{targets[0] if targets else 'arm-cpu'} --calib {train.path}"},
        **body,
        "binarize": _binarize.status(),
        "notes": notes,
        "wall_seconds": round(time.perf_counter() - started, 3),
    }
    return doc
