"""``python -m benchmarks run [--quick] [--out DIR] [--models a,b] [--threads 1,2] [--json]``.

Progress goes to stderr; with ``--json`` the results document is the only thing on stdout.
``_convert`` is the internal child command that builds and converts one model (TensorFlow is
imported there, never in the measuring process).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

# Before anything imports TensorFlow in a child: keep its C++ logging off our stderr.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def _csv(value: str) -> tuple[str, ...]:
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list, got nothing")
    return items


def _threads(value: str) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in _csv(value))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected thread counts like 1,2, got {value!r}"
        ) from None
    if any(t < 1 for t in out):
        raise argparse.ArgumentTypeError(f"thread counts must be >= 1, got {value!r}")
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the suite and write results/<date>-<host>.{json,md}")
    run.add_argument("--quick", action="store_true",
                     help="tiny CNN + MobileNetV2 only, shorter timing (< 10 min)")
    run.add_argument("--out", type=Path, default=DEFAULT_OUT,
                     help=f"results directory (default {DEFAULT_OUT})")
    run.add_argument("--models", type=_csv, help="comma-separated model names (default: preset)")
    run.add_argument("--targets", type=_csv, help="comma-separated target profiles")
    run.add_argument("--threads", type=_threads, help="thread counts to time, e.g. 1,2")
    run.add_argument("--rounds", type=int, help="interleaved timing rounds")
    run.add_argument("--block-s", type=float, help="seconds per model per round")
    run.add_argument("--workdir", type=Path,
                     help="keep models and artifacts here (default: a temp dir, removed)")
    run.add_argument("--no-probe", action="store_true",
                     help="do not compile the peak probe (use the table and /proc/cpuinfo)")
    run.add_argument("--json", action="store_true", help="print the results document on stdout")
    child = sub.add_parser("_convert", help=argparse.SUPPRESS)
    child.add_argument("request", type=Path)
    child.add_argument("--phase", choices=("build", "convert"), required=True)
    return p


def _config(args: argparse.Namespace):  # noqa: ANN202 - suite.Config, imported lazily
    from . import models, suite, timing

    preset = suite.quick() if args.quick else suite.full()
    overrides: dict = {}
    if args.models:
        for name in args.models:
            models.get(name)  # fail early with the list of known names
        overrides["models"] = args.models
    if args.targets:
        overrides["targets"] = args.targets
    if args.threads:
        overrides["threads"] = args.threads
    if args.rounds or args.block_s:
        plan = preset.plan
        overrides["plan"] = timing.Plan(
            rounds=args.rounds or plan.rounds, block_s=args.block_s or plan.block_s,
            warmup=plan.warmup,
        )
    if args.no_probe:
        overrides["probe_host"] = False
    return type(preset)(**{**preset.to_dict(), "plan": preset.plan, **overrides})


def _run(args: argparse.Namespace) -> int:
    from . import report, suite

    try:
        config = _config(args)
    except KeyError as exc:
        print(f"benchmarks: error: {exc.args[0]}", file=sys.stderr)
        return 2
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        doc = suite.run(config, args.workdir, suite.main_log)
    else:
        with tempfile.TemporaryDirectory(prefix="edgeopt-bench-") as tmp:
            doc = suite.run(config, Path(tmp), suite.main_log)
    json_path, md_path = report.write(doc, args.out)
    suite.main_log(f"wrote {json_path} and {md_path}")
    if args.json:
        print(json.dumps(doc, indent=1, allow_nan=False))
    failed = [c["id"] for c in doc["checks"] if c["status"] == "FAIL"]
    if failed:
        suite.main_log(f"targets missed: {', '.join(failed)} (see {md_path})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for usage errors)."""
    args = _parser().parse_args(argv)
    if args.command == "_convert":
        from .conversion import child_main

        return child_main(args.request, args.phase)
    return _run(args)


if __name__ == "__main__":
    sys.exit(main())
