"""Full-size fuzz of corrupt model files through the runtime's public load path.

    python tests/stress/fuzz_models.py --count 1000 [--seed 0] [--mode load] [--cli 30]
        [--formats tflite,onnx] [--keep DIR] [--json]

Builds the seeded base models (float/int8 TFLite and ONNX, plus float16-weight, dynamic-range,
int8, 16x8, attention and RNN TFLite models), writes ``--count`` mutated copies
(bit flips, byte runs, truncation, swapped sections, zeroed ranges, int32 overwrites, structural
field overwrites), loads and runs each in worker processes (restarted after a crash so the
culprit is known) and prints counts per outcome, per mutation kind and per base model. Exit code
1 when any file crashed or hung the worker or raised something other than an EdgeOptError.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.runtime import _fuzz_worker as fw  # noqa: E402
from tests.runtime.conftest_verify import build_base_models, build_valid_zoo  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Run the fuzz and print the summary; return the process exit code."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1000, help="mutated files to generate")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--mode", choices=("load", "verify", "raw"), default="load",
        help="load: edgeopt_runtime.load + run (default); verify: checks + bare interpreter "
        "with mmapped buffers; raw: bare interpreter / ORT session, no checks (baseline)",
    )  # fmt: skip
    ap.add_argument("--cli", type=int, default=0, help="also run N files through the CLI")
    ap.add_argument("--formats", default="tflite,onnx", help="comma list: tflite, onnx")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per file")
    ap.add_argument("--keep", type=Path, help="write the corpus here and keep it")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="edgeopt_fuzz_") as tmp:
        work = args.keep or Path(tmp)
        log = sys.stderr
        t0 = time.perf_counter()
        print("building base models ...", file=log, flush=True)
        formats = tuple(f".{f.strip()}" for f in args.formats.split(","))
        with contextlib.redirect_stdout(log):  # Keras prints export notes on stdout
            built = build_base_models(work / "base", args.seed)
            zoo = build_valid_zoo(work / "base", args.seed)
            built |= {f"{k}.tflite": v for k, v in zoo.items()}
        bases = {k: v for k, v in built.items() if k.endswith(formats)}
        cases = fw.make_corpus(bases, work / "corpus", args.count, args.seed)
        print(f"{len(cases)} files from {len(bases)} base models; running ...", file=log)
        t1 = time.perf_counter()
        results = fw.run_cases(cases, args.mode, timeout=args.timeout)
        report = {"mode": args.mode, "seed": args.seed, **fw.summarize(results)}
        report["seconds"] = {"build": round(t1 - t0, 1), "run": round(time.perf_counter() - t1, 1)}
        bad = [r for r in results if r.outcome not in fw.ACCEPTABLE]
        if args.cli:
            step = max(1, len(cases) // args.cli)
            cli_results = fw.run_cases(cases[::step][: args.cli], "cli", timeout=args.timeout)
            report["cli"] = fw.summarize(cli_results)
            bad += [r for r in cli_results if r.outcome not in fw.ACCEPTABLE]
        report["failures"] = [
            {"file": Path(r.case.path).name, "outcome": r.outcome, "detail": r.detail} for r in bad
        ]
        _print(report, args.json)
    return 1 if bad else 0


def _print(report: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=1))
        return
    print(f"mode {report['mode']}, seed {report['seed']}: {report['files']} files, "
          f"{report['seconds']['run']} s")  # fmt: skip
    print("outcomes:", _fmt(report["outcomes"]))
    for key in ("by_kind", "by_base"):
        for name, counts in report[key].items():
            print(f"  {name:20s} {_fmt(counts)}")
    if "cli" in report:
        print("cli:", _fmt(report["cli"]["outcomes"]))
    for f in report["failures"]:
        print(f"FAIL {f['outcome']:8s} {f['file']}: {f['detail']}")


def _fmt(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())


if __name__ == "__main__":
    sys.exit(main())
