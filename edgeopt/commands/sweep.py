"""``edgeopt sweep SWEEP.toml --out DIR``: models x targets x recipes, cached and resumable.

Writes ``DIR/jobs/<key>/`` per job and ``DIR/results.{json,csv,html}``. A rerun skips finished
jobs; a changed input reruns only the jobs it affects. ``--json`` prints the results document on
stdout; progress goes to stderr (a bar on a terminal, plain lines otherwise). Exit codes: 0 all
jobs ok, 1 some job failed (results still written), 2 bad sweep file / options, 130 / 143 on
SIGINT / SIGTERM (finished jobs kept; rerun to resume).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

_EXECUTORS = ["serial", "process", "ray"]


def _resources(items: tuple[str, ...]) -> dict[str, float]:
    from edgeopt.executors import ExecutorError

    out = {}
    for item in items:
        name, sep, amount = item.partition("=")
        try:
            value = float(amount) if sep else 1.0
        except ValueError:
            value = -1.0
        if not name or value <= 0:
            raise ExecutorError(f"invalid --resource {item!r}: expected NAME=AMOUNT, e.g. "
                                f"device:pi4=1")
        out[name] = value
    return out


def _summary(doc: dict[str, Any]) -> list[str]:
    lines = []
    for job in doc["jobs"]:
        head = f"{job['model']} · {job['target']} · {job['recipe']}: {job['status']}"
        if job.get("cached"):
            head += " (cached)"
        if job["status"] != "ok":
            err = job.get("error") or {}
            lines.append(f"{head}: {err.get('message', '')}".rstrip(": "))
            continue
        for a in job["artifacts"]:
            drop = a.get("accuracy_drop")
            acc = f", accuracy drop {100 * drop:.2f} pts" if drop is not None else ""
            lines.append(f"{head} {a['file']}: {a['size_bytes']} bytes, p50 "
                         f"{a.get('latency_p50_ms') or float('nan'):.3g} ms "
                         f"({a.get('speedup_p50') or float('nan'):.2f}x){acc}, "
                         f"cosine {a.get('cosine') or float('nan'):.5f}")
    c = doc["counts"]
    lines.append(f"{c['ok']} ok, {c['failed']} failed, {c['pending']} pending, "
                 f"{c['cached']} from cache")
    return lines


@click.command("sweep")
@click.argument("sweep_file", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Sweep folder: jobs/<key>/ per job and results.{json,csv,html}. Reused "
              "as the cache by later runs.")
@click.option("--executor", type=click.Choice(_EXECUTORS), default=None,
              help="Where jobs run: serial (this process), process (a local pool, the "
              "default with -j > 1) or ray (pip install \"edgeopt[ray]\").")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None, metavar="N",
              help="Parallel workers (process) / CPUs of a local Ray cluster.")
@click.option("--ray-address", metavar="ADDR",
              help="Join this Ray cluster (auto, HOST:6379, ray://HOST:10001) instead of "
              "starting a local one.")
@click.option("--resource", "resources", multiple=True, metavar="NAME=N",
              help="A custom resource this machine offers local workers, e.g. device:pi4=1 "
              "(the board of a [devices] entry). Repeatable.")
@click.option("--rerun-failed", is_flag=True,
              help="Also rerun jobs whose inputs were refused last time (cached failures).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
def command(sweep_file: Path, out: Path, executor: str | None, jobs: int | None,
            ray_address: str | None, resources: tuple[str, ...], rerun_failed: bool,
            as_json: bool) -> None:
    """Run every (model, target, recipe) job of SWEEP_FILE that OUT does not hold yet.

    Example: edgeopt sweep sweep.toml --out sweeps/nightly -j 2
    """
    from edgeopt.executors import make_executor
    from edgeopt.report import dumps
    from edgeopt.sweep import SweepInterrupted, load_sweep, run_sweep
    from edgeopt.sweep.progress import SweepProgress

    spec = load_sweep(sweep_file)
    name = executor or ("ray" if ray_address else "process" if (jobs or 1) > 1 else "serial")
    progress = SweepProgress(0, 0)
    try:  # SIGINT / SIGTERM arrive as edgeopt.signals.Interrupted (the CLI installs it)
        with make_executor(name, jobs, ray_address=ray_address,
                           resources=_resources(resources)) as ex:
            doc = run_sweep(spec, out, ex, rerun_failed=rerun_failed, progress=progress,
                            shared_scratch=not ray_address)
    except SweepInterrupted as exc:
        progress.close()
        c = exc.results["counts"]
        click.echo(f"edgeopt: sweep interrupted: {c['ok'] + c['failed']} of "
                   f"{len(exc.results['jobs'])} jobs finished are kept in {out}; run the same "
                   "command again to resume", err=True)
        raise SystemExit(exc.exit_code) from None
    finally:
        progress.close()
    if as_json:
        click.echo(dumps(doc), nl=False)
    else:
        for line in _summary(doc):
            click.echo(line)
        click.echo(f"wrote {out}/results.json, results.csv, results.html")
    if doc["counts"]["failed"] or doc["counts"]["pending"]:
        sys.exit(1)
