"""The on-device command line: ``edgeopt-runtime`` / ``python -m edgeopt_runtime``.

``profile MODEL``: latency, memory and per-op time (a table, or ``--json``).
``run MODEL --input in.npz --output out.npz``: one inference for scripted use.
``check BUNDLE``: golden-output check of a deploy bundle (``check.py``).
``device``: facts about this device (``device.py``).

Both probe the model in a child process first (``--no-isolate`` skips it): a file handed to the
device may be corrupt, and a crash of the child is a one-line refusal instead of a dead process.
Numeric options are bounded (threads 1..256, runs, warm-up, duration, seed) with the range in
the message; ``--input`` arrays are checked against a byte budget from their headers before any
data is decompressed.

argparse rather than click keeps the device install at numpy + the two inference engines.
User errors (``EdgeOptError``) become one line ``edgeopt-runtime: error: ...`` and exit code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .errors import EdgeOptError, InputError
from .manifest_schema import MAX_THREADS
from .profile import MAX_DURATION_S, MAX_RUNS, MAX_WARMUP

PROG = "edgeopt-runtime"
RUN_SCHEMA = "edgeopt.run/1"


def _bounded(kind: type, what: str, ok: Any) -> Any:
    """An argparse type: parse ``kind`` and require ``ok(value)``, else say ``expected <what>``."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


def _int_in(lo: int, hi: int) -> Any:
    return _bounded(int, f"an integer in {lo}..{hi:,}", lambda v: lo <= v <= hi)


_threads = _int_in(1, MAX_THREADS)
_runs = _int_in(1, MAX_RUNS)
_warmup = _int_in(0, MAX_WARMUP)
_seed = _int_in(0, 2**63 - 1)
_duration = _bounded(
    float, f"seconds in (0, {MAX_DURATION_S:g}]", lambda v: 0 < v <= MAX_DURATION_S
)


def _add_load_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help=".tflite / .onnx file, or an artifact directory (manifest.json)")
    p.add_argument(
        "--threads", type=_threads, help=f"interpreter / intra-op threads (1..{MAX_THREADS})"
    )
    p.add_argument(
        "--delegate",
        metavar="NAME|PATH",
        help="TFLite delegate: xnnpack (default), none, edgetpu, gpu, or a library path",
    )
    p.add_argument(
        "--providers",
        metavar="P1,P2",
        type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
        help="ONNX Runtime execution providers, comma-separated (default: CPU)",
    )
    p.add_argument(
        "--no-isolate",
        dest="isolate",
        action="store_false",
        help="skip the child-process probe of the model (only for files you trust: a corrupt "
        "model can then crash this process)",
    )
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")


def _load_args(args: argparse.Namespace) -> dict[str, Any]:
    """What ``_add_load_options`` parsed, as ``load`` / ``profile`` keyword arguments."""
    return {"threads": args.threads, "delegate": args.delegate, "providers": args.providers,
            "isolate": args.isolate}  # fmt: skip


def version_line() -> str:
    """``edgeopt-runtime 0.1.0 (ai-edge-litert 2.1.0, onnxruntime 1.32.0, numpy 2.4.0)``, from
    package metadata only (nothing is imported: ``--version`` works where an engine is broken)."""
    from importlib import metadata

    from . import __version__

    engines = []
    for name in ("ai-edge-litert", "tflite-runtime", "onnxruntime", "numpy"):
        try:
            engines.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return f"{PROG} {__version__} ({', '.join(engines) or 'no engine installed'})"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Run and profile edgeopt models on this device."
    )
    parser.add_argument("--version", action="version", version=version_line())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    prof = sub.add_parser("profile", help="latency, memory and per-op time of a model")
    _add_load_options(prof)
    amount = prof.add_mutually_exclusive_group()
    amount.add_argument("--runs", type=_runs, default=100, help="timed runs (100)")
    amount.add_argument("--duration", type=_duration, metavar="S", help="time budget (s)")
    prof.add_argument("--warmup", type=_warmup, default=10, help="warm-up runs (10)")
    prof.add_argument("--input", metavar="FILE.npz", help="inputs (default: seeded random)")
    prof.add_argument("--seed", type=_seed, default=0, help="seed of the random inputs (0)")
    prof.add_argument(
        "--input-shape",
        dest="input_shapes",
        action="append",
        metavar="NAME=D0,D1,...",
        help="shape of a random input's dynamic dims, e.g. image=1,224,224,3 (repeatable; the "
        "name may be left out for a one-input model; default: dynamic dims 1)",
    )
    prof.add_argument("--no-op-profile", action="store_true", help="skip per-op timing")
    run = sub.add_parser("run", help="run one inference: .npz in, .npz out")
    _add_load_options(run)
    run.add_argument("--input", required=True, metavar="IN.npz", help="inputs by name")
    run.add_argument("--output", required=True, metavar="OUT.npz", help="outputs by name")
    run.add_argument(
        "--raw", action="store_true", help="integer IO passed through (no (de)quantization)"
    )
    from . import check, device  # commands of their own modules (deploy: golden check, facts)

    check.add_parser(sub)
    device.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 2 user error, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "handler", None) is not None:
            return args.handler(args)
        if args.command == "profile":
            return _profile(args)
        return _run(args)
    except EdgeOptError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


# -- profile -----------------------------------------------------------------------------------
def _profile(args: argparse.Namespace) -> int:
    from .profile import profile

    result = profile(
        args.model,
        runs=args.runs,
        duration=args.duration,
        warmup=args.warmup,
        **_load_args(args),
        inputs=args.input,
        seed=args.seed,
        op_profile=not args.no_op_profile,
        progress=_Progress(sys.stderr) if sys.stderr.isatty() else None,
        input_shapes=args.input_shapes,
    )
    doc = result.to_dict()
    if args.json:
        print(json.dumps(doc))
    else:
        print(format_profile(doc))
    return 0


class _Progress:
    """One self-overwriting status line on a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        of = f"/{total}" if total else ""
        end = "\n" if total and done >= total and phase == "runs" else ""
        self.stream.write(f"\r{phase} {done}{of}   {end}")
        self.stream.flush()


def _t(ms: float | None) -> str:
    """A duration for humans: µs below 1 ms."""
    if ms is None:
        return "-"
    return f"{ms * 1e3:.1f} µs" if ms < 1 else f"{ms:.3f} ms"


def _mib(value: dict[str, Any]) -> str:
    return "-" if value.get("bytes") is None else f"{value['bytes'] / 2**20:.3f}"


def format_profile(doc: dict[str, Any], top_nodes: int = 10) -> str:
    """A readable text report of an ``edgeopt.profile/1`` document."""
    m, rt, host, t, lat = doc["model"], doc["runtime"], doc["host"], doc["timing"], doc["latency"]
    lines = [
        f"{m['file']}  ({m['format']}, {m['precision']}, {m['size_bytes']} bytes)",
        f"runtime  {rt['backend']} {rt['backend_version']}  delegate {rt['delegate']}  "
        f"threads {rt['threads_effective']}",
        f"host     {host['cpu']}  {host['machine']}  {host['os']}  Python {host['python']}",
        f"inputs   {doc['inputs']['source']}"
        + (f" (seed {doc['inputs']['seed']})" if doc["inputs"].get("seed") is not None else "")
        + "  "
        + ", ".join(f"{a['name']} {a['dtype']}{a['shape']}" for a in doc["inputs"]["arrays"]),
        "",
        f"backend import   {_t(t.get('backend_import_ms'))}",
        f"load (cold)      {_t(t.get('load_ms'))}",
        f"first inference  {_t(t.get('first_inference_ms'))}",
        f"warm-up runs     {t.get('warmup_runs')}",
        "",
        f"latency over {lat['runs']} runs:  mean {_t(lat['mean_ms'])}  std {_t(lat['std_ms'])}"
        f"  min {_t(lat['min_ms'])}  max {_t(lat['max_ms'])}",
        f"  p50 {_t(lat['p50_ms'])}  p90 {_t(lat['p90_ms'])}  p95 {_t(lat['p95_ms'])}"
        f"  p99 {_t(lat['p99_ms'])}  throughput {lat['throughput_ips']:,.1f} inferences/s",
        "",
        f"{'memory':<26}{'MiB':>9}  method",
    ]
    for key, value in doc["memory"].items():
        lines.append(f"  {key:<24}{_mib(value):>9}  {value['method']}")
    lines += ["", *_format_ops(doc["op_profile"], top_nodes)]
    if doc.get("notes"):
        lines += ["", "notes:", *(f"  - {n}" for n in doc["notes"])]
    return "\n".join(lines)


def _format_ops(ops: dict[str, Any], top_nodes: int) -> list[str]:
    if not ops["available"]:
        lines = [f"per-op time: {ops['reason']}"]
        if ops.get("op_counts"):
            counts = ", ".join(f"{k} x{v}" for k, v in ops["op_counts"].items())
            lines.append(f"  ops: {counts}")
        return lines
    lines = [
        f"per-op time ({ops['source']}, {ops['runs']} runs): nodes "
        f"{_t(ops['node_total_ms_per_run'])} of {_t(ops['model_run_ms_per_run'])} per run",
        f"  {'op type':<28}{'nodes':>6}{'per run':>12}{'share':>8}",
    ]
    for g in ops["by_op_type"]:
        lines.append(
            f"  {g['op_type']:<28}{g['nodes']:>6}{_t(g['mean_ms_per_run']):>12}{g['share']:>8.1%}"
        )
    lines.append(f"  top {min(top_nodes, len(ops['by_node']))} nodes:")
    for n in ops["by_node"][:top_nodes]:
        lines.append(
            f"    {n['name'][:48]:<48} {n['op_type']:<18}{_t(n['mean_ms_per_run']):>12}"
            f"{n['share']:>8.1%}"
        )
    return lines


# -- run ---------------------------------------------------------------------------------------
def _run(args: argparse.Namespace) -> int:
    from .model import load
    from .npz import read_npz
    from .profile import run_checked

    out_path = Path(args.output)
    if out_path.suffix.lower() != ".npz":
        raise InputError(f"{out_path}: --output must be a .npz path")
    if not out_path.parent.is_dir():
        raise InputError(f"{out_path}: output directory {out_path.parent} does not exist")
    model = load(args.model, **_load_args(args))
    feeds = read_npz(args.input, model.inputs, any_batch=True)
    t0 = time.perf_counter_ns()
    outputs = run_checked(model, feeds, args.input, raw=args.raw, batch=True)
    elapsed_ms = (time.perf_counter_ns() - t0) / 1e6
    write_npz_atomic(out_path, dict(outputs))
    summary = [
        {"name": k, "shape": list(v.shape), "dtype": v.dtype.name} for k, v in outputs.items()
    ]
    if args.json:
        doc = {
            "schema": RUN_SCHEMA,
            "model": str(model.path),
            "backend": model.backend,
            "delegate": model.delegate,
            "input": args.input,
            "output": str(out_path),
            "raw": args.raw,
            "outputs": summary,
            "latency_ms": round(elapsed_ms, 6),
            "notes": list(model.notes),
        }
        print(json.dumps(doc))
    else:
        shapes = ", ".join(f"{o['name']} {o['dtype']}{o['shape']}" for o in summary)
        print(f"wrote {out_path}: {shapes} ({_t(elapsed_ms)})")
    return 0


def write_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays as ``.npz`` via a temp file in the same folder, then rename.

    Written member by member (not ``np.savez(**arrays)``) so an output named e.g. ``file``
    cannot collide with savez's own parameter.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
            for name, value in arrays.items():
                with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
