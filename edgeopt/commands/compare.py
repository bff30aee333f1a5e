"""``edgeopt compare [REFERENCE] CANDIDATE --data PATH``: how far a quantized model drifts.

The command line of ``edgeopt.compare.run_compare`` (both models run through the one evaluator,
``edgeopt.evaluate``, on the same samples). REFERENCE is the float model: a ``.tflite`` /
``.onnx`` file, or the source model (``.keras``, ``.h5``, SavedModel folder, ``.onnx``), converted
to the candidate's format the way ``convert`` does; left out, a convert output folder's kept float
reference is used. The report (JSON, Markdown, HTML) is always written; budget gates then decide
the exit code: 0 all passed, 1 a gate failed (one line per failed gate says by how much), 2 bad
input (an ``EdgeOptError``).
"""

from __future__ import annotations

from pathlib import Path

import click

from edgeopt.commands._options import (
    console_options,
    input_shape_option,
    print_warnings,
    report_warnings,
    running,
)
from edgeopt.compare import DEFAULT_LAYER_SAMPLES
from edgeopt.evaluate import DEFAULT_LATENCY_RUNS, HOST_THREADS


@click.command("compare")
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path),
                metavar="[REFERENCE] CANDIDATE")
@click.option("--data", "data", required=True, type=click.Path(path_type=Path),
              help="Evaluation inputs (.npz/.npy/image dir); validation data, else calibration.")
@click.option("--labels", "labels_path", type=click.Path(path_type=Path),
              help="Class ids (.npy, .npz with 'labels'/'y', or text); default: the --data "
                   ".npz's 'labels'/'y' array.")
@click.option("--num", type=click.IntRange(min=1), help="Use a seeded random subset of N samples.")
@click.option("--max-eval", type=click.IntRange(min=1), metavar="N",
              help="Measure on at most N samples (a seeded subset). Default: all, streamed.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the subset and of the bootstrap intervals.")
@click.option("--threads", type=click.IntRange(min=1), default=HOST_THREADS, show_default=True,
              help="Threads for both models.")
@click.option("--latency-runs", type=click.IntRange(min=0), default=DEFAULT_LATENCY_RUNS,
              show_default=True, help="Timed runs per model (interleaved); 0: no latency.")
@click.option("--format", "fmt", type=click.Choice(["tflite", "onnx"]),
              help="Which model of an artifact folder CANDIDATE is (default: the manifest's "
              "first).")
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
@click.option("--gate-on", type=click.Choice(["min", "p5", "mean"]), default="min",
              show_default=True,
              help="Per-sample statistic --min-sqnr / --min-cosine compare: the worst sample "
                   "(min), the 5th percentile or the mean; failing samples are named either way.")
@click.option("--output-kind", "output_kinds", multiple=True, metavar="[NAME=]KIND",
              help="What an output is: classifier, embedding, regression or detection (default: "
                   "inferred from shape, values and name). Repeatable.")
@click.option("--per-layer/--no-per-layer", default=True, show_default=True,
              help="Rank layers by quantization error (ONNX QDQ, or TFLite with a TF source).")
@click.option("--source", type=click.Path(path_type=Path),
              help="Float Keras/SavedModel source, for TFLite per-layer analysis (default: "
              "REFERENCE when it is one).")
@click.option("--calib", type=click.Path(path_type=Path),
              help="Calibration data the candidate was quantized with (TFLite per-layer "
                   "re-quantizes --source with it; default: --data).")
@click.option("--layer-samples", type=click.IntRange(min=1), default=DEFAULT_LAYER_SAMPLES,
              show_default=True, help="Samples used by the per-layer analysis.")
@input_shape_option
@click.option("--trust-model", is_flag=True,
              help="Let Keras run code stored in a source REFERENCE (Lambda layers); only for "
              "models you trust.")
@click.option("--isolate/--no-isolate", default=True, show_default=True,
              help="Probe both models in a child process first (skip only for trusted files).")
@click.option("--allow-invalid", is_flag=True,
              help="Exit 0 on validity failures (broken candidate file, NaN/inf outputs, a "
                   "constant float reference); budget gates still decide. The report says so.")
@console_options
def command(models: tuple[Path, ...], data: Path, labels_path: Path | None,
            num: int | None, max_eval: int | None, seed: int, threads: int, latency_runs: int,
            fmt: str | None, out_dir: Path, as_json: bool,
            max_drop: str | None, drop_metric: str, min_sqnr: float | None,
            min_cosine: float | None, gate_on: str, output_kinds: tuple[str, ...],
            per_layer: bool, source: Path | None, calib: Path | None,
            layer_samples: int, input_shapes: tuple[str, ...], trust_model: bool,
            isolate: bool, allow_invalid: bool, quiet: bool, verbose: bool,
            log_file: Path | None) -> None:
    """Compare a quantized CANDIDATE's outputs with its float REFERENCE on the same data.

    REFERENCE: a float .tflite / .onnx, or the source model (.keras, .h5, SavedModel dir,
    .onnx). Left out, CANDIDATE must be a convert output folder (OUT/<target>) that kept its
    float reference.

    Examples: edgeopt compare model.keras out/arm-cpu --data val.npz;
    edgeopt compare out/arm-cpu --data val.npz

    Writes report.json / report.md / report.html to --out. Exit code 1 when a gate
    (--max-drop, --min-sqnr, --min-cosine; NaN/inf outputs, a constant float reference, a
    broken candidate file) fails, 2 on bad input.
    """
    from edgeopt.compare import GateOptions, run_compare
    from edgeopt.drift import VALIDITY_GATES, parse_output_kinds
    from edgeopt.report import dumps, print_summary, write_report

    if len(models) > 2:
        raise click.UsageError(f"expected [REFERENCE] CANDIDATE, got {len(models)} paths")
    reference, candidate = (None, models[0]) if len(models) == 1 else models
    with running(quiet, verbose, log_file) as console:
        result = run_compare(
            reference, candidate, data, labels_path=labels_path, num=num, seed=seed,
            threads=threads, max_eval=max_eval, latency_runs=latency_runs,
            per_layer=per_layer, source=source, calib=calib, layer_samples=layer_samples,
            isolate=isolate, input_shapes=input_shapes, fmt=fmt, trust_model=trust_model,
            output_kinds=parse_output_kinds(output_kinds),
            gates=GateOptions(max_drop=max_drop, drop_metric=drop_metric, min_sqnr=min_sqnr,
                              min_cosine=min_cosine, gate_on=gate_on))
        report = result.to_dict()
        paths = write_report(report, out_dir)
        print_warnings(console, report_warnings(report))
        if as_json:
            click.echo(dumps(report), nl=False)
        else:
            print_summary(report)
            click.echo(f"report: {paths['html']} (also {paths['json'].name}, "
                       f"{paths['md'].name})")
        blocking = [r for r in result.gates.failed
                    if not (allow_invalid and r.gate in VALIDITY_GATES)]
        for r in result.gates.failed:
            allowed = "" if r in blocking else " (allowed: --allow-invalid)"
            console.notice(f"gate failed{allowed}: {r.message}")
    if blocking:
        raise SystemExit(1)
