"""``edgeopt convert MODEL --target T [--target ...] --calib PATH``: the product's main job.

Writes ``OUT/<target>/`` (model files + ``manifest.json``) and ``OUT/report.{json,md,html}``.
``--json`` prints the report as one JSON document on stdout; progress goes to stderr (a bar with
ETA on a terminal, plain periodic lines otherwise; ``--quiet`` / ``--verbose`` / ``--log-file``),
and every warning of the report is printed there once. Exit codes: 0 everything built; 1 some
target or format failed (the others are written and the report says why) or ``--strict`` /
a ``memory_budget_mb`` check failed; 2 bad input, or nothing could be built (nothing written).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgeopt.commands._options import (
    console_options,
    input_shape_option,
    print_warnings,
    report_warnings,
    running,
)
from edgeopt.commands.tune import EXIT_INTERRUPTED, auto_options, tune_options
from edgeopt.commands.tune import exit_code as tune_exit_code
from edgeopt.commands.tune import summary_lines as tune_lines
from edgeopt.limits import MAX_LATENCY_RUNS, MAX_SEED, CalibrationLimits

_FORMATS = ["tflite", "onnx", "all"]
_METHODS = ["minmax", "entropy", "percentile"]
_NUMBER_LISTS = {"mean", "std", "resize"}


def _number(key: str, text: str) -> float:
    """A float, also written as a fraction (``scale=1/127.5``)."""
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            return float(num) / float(den)
        return float(text)
    except (ValueError, ZeroDivisionError):
        from edgeopt_runtime.errors import CalibrationError

        raise CalibrationError(
            f"invalid --preprocess {key}={text!r}: expected a number such as 0.5 or 1/255"
        ) from None


def parse_preprocess(items: tuple[str, ...]) -> Any:
    """``--preprocess KEY=VALUE`` items -> ``Preprocessing`` (None when there are none).

    Lists are comma-separated (``mean=0.485,0.456,0.406``, ``resize=224,224``).

    Raises:
        CalibrationError: malformed item, unknown key or invalid value.
    """
    if not items:
        return None
    from edgeopt_runtime.errors import CalibrationError

    from edgeopt.calibration import Preprocessing

    fields: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key or not value:
            raise CalibrationError(f"invalid --preprocess {item!r}: expected KEY=VALUE")
        if key in _NUMBER_LISTS:
            numbers = [_number(key, v.strip()) for v in value.split(",")]
            fields[key] = [int(n) for n in numbers] if key == "resize" else numbers
        elif key == "scale":
            fields[key] = _number(key, value)
        else:
            fields[key] = value.strip()
    return Preprocessing.from_dict(fields)


def _recipes(path: Path | None) -> Any:
    """``--recipe FILE``: format -> Recipe (None without it); a bad file is a RecipeError."""
    if path is None:
        return None
    from edgeopt.recipes.file import read

    return read(path)


def _max_samples() -> int:
    """The ``--num-calib`` bound (``EDGEOPT_CALIB_MAX_SAMPLES`` raises it; a bad value is
    reported by the conversion itself, in one line)."""
    from edgeopt_runtime.errors import EdgeOptError

    try:
        return CalibrationLimits.from_env().max_samples
    except EdgeOptError:
        return CalibrationLimits().max_samples


def _progress(enabled: bool) -> Any:
    """A ``progress(message)`` callable for the library's stage lines: the current console's
    when a command installed one (``edgeopt.progress``), else plain ``edgeopt: ...`` lines."""
    if not enabled:
        return None
    from edgeopt import progress

    def say(message: str) -> None:
        console = progress.current()
        if console is not None:
            console.info(message)
        else:
            click.echo(f"edgeopt: {message}", err=True)

    return say


@click.command("convert")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--target", "targets", multiple=True, required=True, metavar="NAME_OR_TOML",
              help="Built-in target name (see `edgeopt targets list`) or a profile .toml path. "
              "Repeatable.")
@click.option("--calib", type=click.Path(path_type=Path),
              help="Calibration data: .npz, .npy, an image folder or a folder of .npy/.npz.")
@click.option("--val", type=click.Path(path_type=Path),
              help="Validation data for drift (default: the calibration data).")
@click.option("--format", "fmt", type=click.Choice(_FORMATS), default="all", show_default=True,
              help="Output format(s); 'all' = every format each target allows.")
@click.option("--calib-method", type=click.Choice(_METHODS),
              help="Calibration method (default: the target profile's). TFLite uses min/max.")
@click.option("--preprocess", multiple=True, metavar="KEY=VALUE",
              help="How raw calibration data becomes model input, e.g. scale=1/127.5, "
              "mean=1, std=0.229,0.224,0.225, resize=224,224, layout=NCHW, "
              "channel_order=BGR, color=grayscale. Repeatable. See calibration_data/README.md.")
@click.option("--num-calib", type=click.IntRange(1, _max_samples()), metavar="N",
              help="Use a seeded random subset of N calibration samples.")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True,
              help="Seed of the subset choice (and of synthetic data).")
@click.option("--keep-float", multiple=True, metavar="REGEX",
              help="Leave layers whose TFLite tensor / ONNX node name matches REGEX in float "
              "(re.search). Repeatable. Refused on targets without float fallback.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("out"), show_default=True,
              help="Output directory.")
@click.option("--force", is_flag=True, help="Replace an existing, non-empty OUT of edgeopt output.")
@click.option("--allow-synthetic", is_flag=True,
              help="Without --calib: calibrate on seeded random data (marked loudly in report).")
@click.option("--trust-model", is_flag=True,
              help="Let Keras run Python code stored in the model (Lambda layers). Trusted files "
              "only.")
@click.option("--latency-runs", type=click.IntRange(1, MAX_LATENCY_RUNS), default=50,
              show_default=True,
              help="Timed runs per model for the float-vs-quantized latency.")
@click.option("--strict", is_flag=True,
              help="Exit 1 (report and artifacts still written) when a target would not run "
              "the whole graph on its accelerator: Edge TPU partition incomplete or compile "
              "failed, ops the GPU delegate cannot run.")
@click.option("--rewrite", multiple=True, type=click.Choice(["edgetpu"]),
              help="ONNX sources on Edge TPU targets: replace ops the Edge TPU lacks "
              "(HardSwish, LeakyRelu, Neg) by exact compositions it maps; the report gives "
              "the mapped-op count before and after.")
@click.option("--output-kind", "output_kinds", multiple=True, metavar="[NAME=]KIND",
              help="What an output is: classifier, embedding, regression or detection (default: "
              "inferred from shape, values and name); decides the drift metrics. Repeatable.")
@click.option("--layer-samples", type=click.IntRange(0, 10_000), default=8, show_default=True,
              help="Samples of each artifact's per-layer section (0: no per-layer section).")
@click.option("--allow-invalid", is_flag=True,
              help="Exit 0 even when an artifact fails validation (non-finite or absurd scales, "
              "NaN weights, NaN/inf outputs) or is degraded (constant float reference); the "
              "report marks it either way.")
@click.option("--max-eval", type=click.IntRange(min=1), metavar="N",
              help="Measure drift on at most N validation samples (a seeded subset, as "
              "`edgeopt compare --max-eval`). Default: all of them, streamed.")
@input_shape_option
@click.option("--keep-reference/--no-keep-reference", default=None,
              help="Keep the float model each artifact was measured against in "
              "OUT/<target>/reference/ (`edgeopt compare OUT/<target>` uses it; never deployed). "
              "Default: kept when at most 100 MB per target.")
@click.option("--memory/--no-memory", "measure_memory", default=True, show_default=True,
              help="Measure each artifact's peak working set through the runtime (a child "
              "process per artifact); a target's memory_budget_mb gates it.")
@console_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.option("--recipe", "recipe_file", type=click.Path(path_type=Path), metavar="FILE",
              help="Build the recipe(s) in FILE (e.g. OUT/<target>/recipe.toml written by "
              "`edgeopt tune`) instead of the target's defaults: one artifact per format in it.")
@click.option("--auto", is_flag=True,
              help="Tune: search each target's recipes for the fastest artifact meeting the "
              "budget given by --max-drop / --min-cosine / --min-sqnr (needs --val); "
              "the same as `edgeopt tune`.")
@tune_options
def command(
    model: Path, targets: tuple[str, ...], calib: Path | None, val: Path | None, fmt: str,
    calib_method: str | None, preprocess: tuple[str, ...], num_calib: int | None, seed: int,
    keep_float: tuple[str, ...],
    out: Path, force: bool, allow_synthetic: bool, trust_model: bool, latency_runs: int,
    strict: bool, rewrite: tuple[str, ...], output_kinds: tuple[str, ...],
    layer_samples: int, allow_invalid: bool, max_eval: int | None,
    input_shapes: tuple[str, ...], keep_reference: bool | None, measure_memory: bool,
    quiet: bool, verbose: bool, log_file: Path | None, as_json: bool,
    recipe_file: Path | None = None, auto: bool = False, **tuning: Any,
) -> None:
    """Calibrate and quantize MODEL (.keras, .h5, SavedModel dir, .onnx) for each --target.

    Every target and format is attempted: the ones that work are written, the report marks
    each ok / failed with the reason, and the exit code is 1 when any failed.

    Example: edgeopt convert model.keras --target arm-cpu --target edgetpu --calib calib.npz
    """
    from edgeopt.accelerators import StrictError
    from edgeopt.artifact import Interrupted
    from edgeopt.convert import convert
    from edgeopt.drift import parse_output_kinds
    from edgeopt.report import convert_summary_lines, dumps
    from edgeopt.validation import ValidationFailed

    failed: StrictError | ValidationFailed | None = None
    tune_spec = auto_options(tuning, auto)
    with running(quiet, verbose, log_file) as console:
        try:
            report = convert(
                model, list(targets), calib, val=val, formats=fmt, calib_method=calib_method,
                num_calib=num_calib, seed=seed, keep_float=keep_float, out=out, force=force,
                allow_synthetic=allow_synthetic, trust_model=trust_model,
                progress=_progress(True), latency_runs=latency_runs,
                preprocessing=parse_preprocess(preprocess), strict=strict, rewrite=rewrite,
                max_eval=max_eval,
                input_shapes=list(input_shapes), keep_reference=keep_reference,
                measure_memory=measure_memory, auto=tune_spec, recipes=_recipes(recipe_file),
                output_kinds=parse_output_kinds(output_kinds), layer_samples=layer_samples,
                allow_invalid=allow_invalid,
            )
        except Interrupted as exc:
            console.notice(f"{exc}; temporary files removed, nothing written to {out}")
            raise SystemExit(128 + exc.signum) from None
        except (StrictError, ValidationFailed) as exc:  # all written: show, then fail
            failed, report = exc, exc.report
        print_warnings(console, report_warnings(report.data))
        if as_json:
            click.echo(dumps(report.data), nl=False)
        else:
            for line in convert_summary_lines(report.data) + tune_lines(report.data):
                click.echo(line)
            click.echo(f"wrote {out}/ (report: {out / 'report.md'}, {out / 'report.html'})")
        code = _exit_code(report, failed, console)
        if tune_spec is not None:
            tuned = tune_exit_code(report.data)
            if tuned == EXIT_INTERRUPTED:
                console.notice(f"interrupted: the best candidate found so far is in {out}/ "
                               "(marked interrupted in the report)")
            elif tuned:
                console.notice(f"budget not met: the most accurate candidate found is in "
                               f"{out}/ (marked 'budget not met' in the report)")
            code = max(code, tuned)
    if code:
        raise SystemExit(code)


def _exit_code(report: Any, strict_failed: Any, console: Any) -> int:
    """1 when a target / format failed, an artifact failed validation (unless
    ``--allow-invalid``), a binding gate (memory budget) failed or ``--strict`` found an
    accelerator problem; each reason one line on stderr."""
    code = 0
    result = report.result
    # targets built but invalid (edgeopt.validation) are the ValidationFailed below, or
    # allowed by --allow-invalid: not "did not convert"
    invalid = {t.name for t in result.invalid_targets}
    bad = [t for t in result.targets
           if t.name not in invalid and (t.status.value != "ok" or t.failures)]
    if bad:
        console.notice(f"{len(bad)} of {len(result.targets)} target(s) did not fully convert "
                      f"({', '.join(f'{t.name}: {t.status.value}' for t in bad)}); the rest "
                      "was written: see the report")
        code = 1
    binding = [g for g in result.gates.failed if g.facts.get("binding")]
    for g in binding:
        console.notice(f"gate failed: {g.message}")
        code = 1
    if strict_failed is not None:
        console.notice(str(strict_failed))
        code = max(code, strict_failed.exit_code)
    return code
