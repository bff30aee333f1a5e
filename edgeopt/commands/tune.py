"""``edgeopt tune MODEL --target T --calib C --val V --min-cosine 0.99``: the artifact that meets
an accuracy budget, found by measuring candidates (``edgeopt.tune``).

``edgeopt tune`` is ``edgeopt convert --auto``: the same options (``--format``, ``--preprocess``,
``--keep-float`` for layers that must stay float, ...) plus the tuning flags defined here, which
``convert`` takes too. It writes ``OUT/<target>/`` like convert — the chosen artifact per format,
``manifest.json`` — plus ``OUT/<target>/tune.json`` and a "Tuning" section in
``OUT/report.{json,md,html}`` (every candidate, a Pareto plot, the choice and why).

Exit codes: 0 every budget met; 1 a budget not met (the most accurate candidate is written,
marked "budget not met"); 2 bad input (one line); 130 Ctrl-C — after the best candidate found so
far is written, marked "interrupted" (a second Ctrl-C while writing aborts and writes nothing).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import click

_FLAGS = ("max_drop", "min_cosine", "min_sqnr", "budget", "objective", "jobs", "executor",
          "threads")
EXIT_NOT_MET = 1
EXIT_INTERRUPTED = 130


def tune_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The tuning flags, shared by ``edgeopt tune`` and ``edgeopt convert --auto``."""
    options = [
        click.option("--max-drop", type=float, metavar="POINTS",
                     help="Budget: task accuracy may drop at most POINTS percentage points "
                     "against the labels of --val (e.g. 0.5)."),
        click.option("--min-cosine", type=float, metavar="C",
                     help="Budget: every validation sample's output keeps cosine >= C against "
                     "float (e.g. 0.99)."),
        click.option("--min-sqnr", type=float, metavar="DB",
                     help="Budget: every validation sample's output keeps SQNR >= DB dB."),
        click.option("--budget", metavar="N|TIME",
                     help="Stop after N candidate evaluations, or a time such as 600s / 15m "
                     "(default 40 evaluations), shared by all targets and formats."),
        click.option("--objective", type=click.Choice(["latency", "size"]), default="latency",
                     show_default=True,
                     help="Among candidates meeting the budget: fastest or smallest."),
        click.option("-j", "--jobs", type=click.IntRange(1, 256), metavar="N",
                     help="Evaluate N candidates in parallel (a local process pool)."),
        click.option("--executor", type=click.Choice(["serial", "process", "ray"]),
                     default="serial", show_default=True,
                     help="Where candidates are built and evaluated (ray: a local or joined "
                     "Ray cluster sharing this file system)."),
        click.option("--threads", type=click.IntRange(1, 256), metavar="N",
                     help="Threads candidates are timed at (default: the target's [runtime] "
                     "threads, at most this host's CPUs)."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def auto_options(values: Mapping[str, Any], auto: bool) -> Any:
    """``TuneOptions`` from the tuning flags (None when not tuning).

    Raises:
        TuneOptionError: tuning flags without ``--auto``, or bad values.
    """
    from edgeopt.tune.options import TuneOptionError, make_options

    if not auto:
        given = [f"--{k.replace('_', '-')}" for k in ("max_drop", "min_cosine", "min_sqnr",
                                                      "budget", "jobs", "threads")
                 if values.get(k) is not None]
        if given:
            raise TuneOptionError(f"{', '.join(given)} tune(s) the conversion: add --auto, or "
                                  "run `edgeopt tune`")
        return None
    return make_options(**{k: values.get(k) for k in _FLAGS if values.get(k) is not None})


def tune_statuses(report: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(``target/format``, search record) for every search of a report."""
    return [(f"{t['name']}/{r['format']}", r) for t in report["targets"]
            for r in t.get("tune") or []]


def exit_code(report: Mapping[str, Any]) -> int:
    """0 all budgets met, 1 one not met, 130 interrupted (see the module docstring)."""
    searches = tune_statuses(report)
    if any(r["status"] == "interrupted" for _, r in searches) or any(
            t.get("error_type") == "Interrupted" for t in report["targets"]):
        return EXIT_INTERRUPTED
    if any(not r["budget_met"] for _, r in searches):
        return EXIT_NOT_MET
    return 0


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    """One line per search: status, the chosen recipe and why."""
    lines = []
    for name, r in tune_statuses(report):
        chosen = r["trials"][r["best"]] if r.get("best") is not None else None
        status = {"met": "budget met", "not-met": "BUDGET NOT MET", "limit": "BUDGET NOT MET",
                  "interrupted": "INTERRUPTED"}.get(r["status"], r["status"])
        label = chosen["label"] if chosen else "nothing"
        lines.append(f"tune {name}: {status} ({r['evaluations']} evaluations, "
                     f"{r['seconds']:.0f} s): {label} — {r['chosen_reason']}")
    return lines


def _command() -> click.Command:
    from edgeopt.commands.convert import command as convert_command

    def callback(**kwargs: Any) -> Any:
        return convert_command.callback(auto=True, recipe_file=None,  # type: ignore[misc]
                                        **kwargs)

    return click.Command(
        "tune", callback=callback,
        params=[p for p in convert_command.params if p.name not in ("auto", "recipe_file")],
        help="Find the fastest artifact of MODEL that meets an accuracy budget, per --target.\n\n"
        "Candidates from each target's recipe space (starting points chosen for the model: "
        "transformer or not) are built, run on --val against the float model and timed; "
        "layer groups ranked by per-layer error go back to float until the budget holds "
        "(greedy revert with step back). Writes OUT/<target>/ like `edgeopt convert`, the "
        "search record in OUT/<target>/tune.json, the chosen recipe in "
        "OUT/<target>/recipe.toml (`edgeopt convert --recipe` rebuilds it) and the "
        "report's Tuning section.\n\n"
        "Example: edgeopt tune model.onnx --target arm-cpu --calib calib.npz --val val.npz "
        "--min-cosine 0.99 --out tuned\n\n"
        "Exit codes: 0 met, 1 budget not met (best found written), 2 bad input, 130 "
        "interrupted (best so far written).",
        context_settings={"help_option_names": ["-h", "--help"]},
    )


def __getattr__(name: str) -> Any:
    """``command`` is built on first use: it copies ``edgeopt convert``'s options, and
    ``commands/convert.py`` imports this module for the tuning flags."""
    if name == "command":
        cmd = _command()
        globals()["command"] = cmd
        return cmd
    raise AttributeError(name)
