"""Seeded fuzz of corrupt *source* models through ``edgeopt convert``.

    python tests/stress/fuzz_sources.py --count 200 [--seed 0] [--timeout 180] [--keep DIR]
        [--cli 8] [--json]

Damages tiny seeded ``.keras``, ``.h5``, SavedModel and ``.onnx`` sources with the runtime fuzz's
kinds of damage (bit flips, byte runs, truncation, swapped sections, zeroed ranges) plus removal
of a part. Damage goes to the whole file, to one member *inside* the ``.keras`` zip (re-zipped
with a valid CRC, so the damage reaches Keras) or to one file of the SavedModel folder. Each
mutated source goes through ``edgeopt convert --target arm-cpu`` (every format) in a worker
process that runs the CLI in-process (one TensorFlow import for many files) with its stdout and
stderr file descriptors sent to per-file logs; the driver restarts a worker that died by a signal
or hung, so the culprit is known. ``--cli N`` also runs N files through a fresh
``python -m edgeopt.cli convert`` each.

Outcomes: ``converted`` (exit 0, every manifest's models present with matching sha256 and
``report.json``); ``rejected`` (exit 2, exactly one stderr line ``edgeopt: error: ...``, nothing
under the output's parent); ``error`` (anything else: traceback, other exit code, extra output,
leftovers); ``crash`` (killed by a signal); ``timeout``. Exit code 1 when any file ended in
``error``, ``crash`` or ``timeout``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

KINDS = ("bitflip", "byterun", "truncate", "swap", "zero")
# Per source format, the part that gets damaged: "file" (the raw bytes), "zip:<member>" (one
# member inside the .keras archive) or a path inside the SavedModel folder.
PARTS = {
    "keras": ("file", "zip:config.json", "zip:model.weights.h5", "zip:metadata.json"),
    "h5": ("file",),
    "savedmodel": (
        "saved_model.pb",
        "variables/variables.index",
        "variables/variables.data-00000-of-00001",
        "fingerprint.pb",
    ),
    "onnx": ("file",),
}
ACCEPTABLE = {"converted", "rejected"}
WORKER_MEMORY_LIMIT = 12 << 30  # address space: a huge allocation fails instead of OOM-killing


@dataclass(frozen=True)
class Case:
    """One damaged source model and the ``edgeopt convert`` arguments that go with it."""

    index: int
    path: str  # the damaged .keras / .h5 / .onnx file or SavedModel folder
    fmt: str
    part: str
    kind: str
    calib: str
    formats: str = "all"  # --format of the conversion

    @property
    def label(self) -> str:
        return f"{self.fmt}:{self.part}:{self.kind}"


@dataclass
class Result:
    case: Case
    outcome: str
    detail: str
    seconds: float


# ----------------------------------------------------------------------------- corpus


def build_bases(out: Path) -> dict[str, tuple[Path, Path]]:
    """Tiny seeded sources (the converter tests' models): format -> (model path, calib .npz)."""
    from tests.converter import _models as M

    with contextlib.redirect_stdout(sys.stderr):  # Keras prints export notes on stdout
        made = {
            "keras": (M.keras_file(), M.calib_npz()),
            "h5": (M.h5_file(), M.calib_npz()),
            "savedmodel": (M.savedmodel_dir(), M.calib_npz()),
            "onnx": (M.onnx_dynamic_file(), M.calib_npz("chw")),
        }
    out.mkdir(parents=True, exist_ok=True)
    bases = {}
    for fmt, (model, calib) in made.items():
        dest = out / model.name
        if model.is_dir():
            shutil.copytree(model, dest, dirs_exist_ok=True)
        else:
            shutil.copyfile(model, dest)
        shutil.copyfile(calib, out / calib.name)
        bases[fmt] = (dest, out / calib.name)
    return bases


def damage(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    """One mutation of ``kind`` (the runtime fuzz's mutator), never a no-op."""
    from tests.runtime._fuzz_worker import mutate

    if not data:
        return b"\0"
    mutated = data
    for _ in range(20):  # a swap of equal bytes (or a zeroed zero run) can change nothing
        if kind == "swap" and len(data) < 2:
            mutated = mutate(data, "bitflip", rng, None)
        elif kind == "swap" and len(data) < 136:  # the runtime mutator swaps 4..64-byte runs
            k = max(1, len(data) // 4)
            a, c = sorted(int(x) for x in rng.choice(len(data) - k + 1, 2, replace=False))
            b = bytearray(data)
            if c - a >= k:
                b[a:a + k], b[c:c + k] = b[c:c + k], b[a:a + k]
            mutated = bytes(b)
        else:
            mutated = mutate(data, kind, rng, None)
        if mutated != data:
            break
    return mutated


def _damage_zip_member(src: Path, dest: Path, member: str, kind: str,
                       rng: np.random.Generator) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == member:
                data = damage(data, kind, rng)
            zout.writestr(info, data)


def make_case(index: int, fmt: str, part: str, kind: str, base: Path, calib: Path,
              out: Path, rng: np.random.Generator, formats: str = "all") -> Case:
    """Write one damaged copy of ``base`` under ``out``."""
    dest = out / f"{index:05d}_{fmt}_{part.replace('/', '_').replace(':', '-')}_{kind}"
    if base.is_dir():
        shutil.copytree(base, dest)
        target = dest / part
        target.write_bytes(damage(target.read_bytes(), kind, rng))
    else:
        dest = dest.with_suffix(base.suffix)
        if part.startswith("zip:"):
            _damage_zip_member(base, dest, part[4:], kind, rng)
        else:
            dest.write_bytes(damage(base.read_bytes(), kind, rng))
    return Case(index, str(dest), fmt, part, kind, str(calib), formats)


def make_corpus(bases: dict[str, tuple[Path, Path]], out: Path, count: int,
                seed: int, onnx_formats: str = "all") -> list[Case]:
    """``count`` damaged sources, round-robin over formats, then parts, then kinds.

    ``onnx_formats``: the ``--format`` of the ``.onnx`` cases. ``all`` also sends every ONNX
    file that loads through onnx2tf to TFLite (about a minute each on a loaded 2-core host);
    ``onnx`` keeps them to ONNX Runtime's quantizer (the CI test does; one dedicated damaged
    ONNX -> TFLite test covers the onnx2tf path).
    """
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    fmts = sorted(bases)
    cases = []
    for i in range(count):
        fmt = fmts[i % len(fmts)]
        j = i // len(fmts)
        parts = PARTS[fmt]
        part = parts[j % len(parts)]
        kind = KINDS[(j // len(parts) + j) % len(KINDS)]
        model, calib = bases[fmt]
        cases.append(make_case(i, fmt, part, kind, model, calib, out, rng,
                               onnx_formats if fmt == "onnx" else "all"))
    return cases


def convert_args(case: Case, out: Path) -> list[str]:
    """``edgeopt convert`` arguments for one case: the case's arm-cpu formats (default all),
    one latency run."""
    return ["convert", case.path, "--target", "arm-cpu", "--calib", case.calib,
            "--out", str(out), "--latency-runs", "1", "--num-calib", "4",
            "--format", case.formats]


# ----------------------------------------------------------------------------- checks


def check_output(out: Path) -> str | None:
    """None when ``out`` holds a complete edgeopt result, else what is wrong."""
    if not (out / "report.json").is_file():
        return f"{out}: no report.json"
    from edgeopt_runtime.manifest import sha256_file

    manifests = sorted(out.glob("*/manifest.json"))
    if not manifests:
        return f"{out}: no manifest"
    for m in manifests:
        for entry in json.loads(m.read_text())["models"]:
            f = m.parent / entry["file"]
            if not f.is_file() or sha256_file(f) != entry["sha256"]:
                return f"{f}: missing or sha256 differs from the manifest"
    return None


def classify(case: Case, rc: int | None, stdout: str, stderr: str, parent: Path) -> tuple[str, str]:
    """Outcome and detail of one finished ``edgeopt convert`` run whose OUT is parent/out."""
    from tests._console import problem_lines

    lines = problem_lines(stderr)  # edgeopt's progress lines are not part of the error
    first = (lines[0] if lines else "")[:300]
    leftovers = sorted(p.name for p in parent.iterdir()) if parent.is_dir() else []
    if rc == 0:
        problem = check_output(parent / "out")
        if problem is None and leftovers == ["out"]:
            return "converted", ""
        return "error", f"exit 0 but {problem or f'leftovers {leftovers}'}"
    if rc == 2:
        one_line = len(lines) == 1 and first.startswith("edgeopt: error: ")
        if one_line and not stdout.strip() and not leftovers:
            return "rejected", first
        what = f"leftovers {leftovers}" if leftovers else f"{len(lines)} stderr lines"
        return "error", f"exit 2 with {what}: {' | '.join(lines[-3:])[:400]}"
    return "error", f"exit {rc}: {' | '.join(lines[-3:])[:400]}"


# ----------------------------------------------------------------------------- driver


def _reader(stream: object, q: queue.Queue) -> None:
    for line in stream:  # type: ignore[attr-defined]
        q.put(line.rstrip("\n"))
    q.put(None)


def _signal_name(rc: int) -> str:
    try:
        return f"signal {-rc} ({signal.Signals(-rc).name})"
    except ValueError:
        return f"signal {-rc}"


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""


def run_cases(cases: list[Case], work: Path, timeout: float = 120.0,
              env: dict[str, str] | None = None) -> list[Result]:
    """Convert every case in worker children (in-process CLI); restart after a crash or hang.

    Args:
        cases: from ``make_corpus``.
        work: scratch folder (per-case logs and outputs).
        timeout: seconds per case before the worker is killed and the case counted a hang.
        env: extra environment for the workers (e.g. ``EDGEOPT_PROBE_TIMEOUT_S``).
    """
    results: dict[int, Result] = {}
    pending = list(range(len(cases)))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "OMP_NUM_THREADS": "1", **(env or {}),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    while pending:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.stress.fuzz_sources", "--worker", str(work)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, env=env, cwd=ROOT,
        )
        q: queue.Queue = queue.Queue()
        threading.Thread(target=_reader, args=(proc.stdout, q), daemon=True).start()
        assert proc.stdin is not None
        proc.stdin.write("".join(json.dumps(cases[i].__dict__) + "\n" for i in pending))
        proc.stdin.close()
        current, started = None, time.monotonic()
        while True:
            try:
                line = q.get(timeout=timeout)
            except queue.Empty:
                proc.kill()
                proc.wait()
                if current is not None:
                    results[current] = Result(cases[current], "timeout", f"> {timeout:g} s",
                                              time.monotonic() - started)
                break
            if line is None:
                rc = proc.wait()
                if current is not None and current not in results:
                    err = _read(work / "logs" / f"{current}.err").strip().splitlines()
                    what = _signal_name(rc) if rc < 0 else f"worker exited {rc}"
                    results[current] = Result(
                        cases[current], "crash" if rc < 0 else "error",
                        f"{what}: {' | '.join(err[-2:])[-300:]}", time.monotonic() - started)
                break
            kind, _, rest = line.partition(" ")
            if kind == "S":
                current, started = int(rest), time.monotonic()
            elif kind == "R":
                index, _, rc_text = rest.partition(" ")
                results[int(index)] = _finish(cases[int(index)], rc_text, work,
                                              time.monotonic() - started)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        pending = [i for i in pending if i not in results]
    return [results[i] for i in range(len(cases))]


def _finish(case: Case, rc_text: str, work: Path, seconds: float) -> Result:
    """Classify a case the worker reported, then free its output."""
    parent = work / "runs" / str(case.index)
    logs = work / "logs"
    if rc_text.startswith("X"):  # an exception escaped the CLI: a traceback for the user
        return Result(case, "error", rc_text[2:], seconds)
    outcome, detail = classify(case, int(rc_text), _read(logs / f"{case.index}.out"),
                               _read(logs / f"{case.index}.err"), parent)
    shutil.rmtree(parent, ignore_errors=True)
    return Result(case, outcome, detail, seconds)


def run_cli(case: Case, work: Path, timeout: float,
            env: dict[str, str] | None = None) -> Result:
    """One case through a fresh ``python -m edgeopt.cli convert`` process."""
    parent = work / "cli" / str(case.index)
    parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "edgeopt.cli", *convert_args(case, parent / "out")]
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                           env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        return Result(case, "timeout", f"> {timeout:g} s", time.monotonic() - t0)
    if p.returncode < 0:
        return Result(case, "crash", _signal_name(p.returncode), time.monotonic() - t0)
    outcome, detail = classify(case, p.returncode, p.stdout, p.stderr, parent)
    shutil.rmtree(parent, ignore_errors=True)
    return Result(case, outcome, detail, time.monotonic() - t0)


def summarize(results: list[Result]) -> dict[str, object]:
    """Counts per outcome, per source format and per (part, kind)."""
    def counts(rs: list[Result]) -> dict[str, int]:
        return dict(Counter(r.outcome for r in rs).most_common())

    return {
        "files": len(results),
        "outcomes": counts(results),
        "by_format": {f: counts([r for r in results if r.case.fmt == f])
                      for f in sorted({r.case.fmt for r in results})},
        "by_part": {p: counts([r for r in results if f"{r.case.fmt}:{r.case.part}" == p])
                    for p in sorted({f"{r.case.fmt}:{r.case.part}" for r in results})},
        "by_kind": {k: counts([r for r in results if r.case.kind == k])
                    for k in sorted({r.case.kind for r in results})},
        "rejections_naming_the_model": sum(
            1 for r in results if r.outcome == "rejected" and Path(r.case.path).name in r.detail),
        "max_seconds": round(max((r.seconds for r in results), default=0.0), 1),
    }


# ----------------------------------------------------------------------------- worker


def worker_main(work: Path) -> None:
    """Convert every case read from stdin with the in-process CLI; report on a private fd.

    Protocol lines: ``S <i>`` before a case, ``R <i> <exit code>`` after it, or
    ``R <i> X <exception>`` when an exception escaped the CLI (the user would see a traceback).
    """
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_LIMIT, WORKER_MEMORY_LIMIT))
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    cases = [Case(**json.loads(line)) for line in sys.stdin.read().splitlines()]
    from edgeopt.cli import main

    (work / "logs").mkdir(parents=True, exist_ok=True)
    for case in cases:
        parent = work / "runs" / str(case.index)
        shutil.rmtree(parent, ignore_errors=True)
        parent.mkdir(parents=True)
        _redirect(work / "logs" / f"{case.index}.out", work / "logs" / f"{case.index}.err")
        print(f"S {case.index}", file=proto)
        try:
            rc = main.main(convert_args(case, parent / "out"), prog_name="edgeopt",
                           standalone_mode=False)
            status = str(rc or 0)
        except SystemExit as exc:
            status = str(exc.code if isinstance(exc.code, int) else 1)
        except BaseException as exc:  # noqa: BLE001 - every escape is recorded, not hidden
            text = str(exc).strip().splitlines()
            status = f"X {type(exc).__name__}: {text[0][:300] if text else ''}"
        sys.stdout.flush()
        sys.stderr.flush()
        print(f"R {case.index} {status}", file=proto)


def _redirect(out: Path, err: Path) -> None:
    """Point file descriptors 1 and 2 (and so every library's output) at per-case logs."""
    sys.stdout.flush()
    sys.stderr.flush()
    for fd, path in ((1, out), (2, err)):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(f, fd)
        os.close(f)


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    """Run the fuzz and print the summary; return the process exit code."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=200, help="damaged sources to generate")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=180.0, help="seconds per file")
    ap.add_argument("--cli", type=int, default=0, help="also run N files through a fresh CLI")
    ap.add_argument("--onnx-format", default="all", choices=("all", "onnx", "tflite"),
                    help="--format of the .onnx cases (all/tflite: through onnx2tf, slow)")
    ap.add_argument("--keep", type=Path, help="write the corpus here and keep it")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker_main(args.worker)
        return 0
    with tempfile.TemporaryDirectory(prefix="edgeopt_srcfuzz_") as tmp:
        work = args.keep or Path(tmp)
        t0 = time.perf_counter()
        print("building base models ...", file=sys.stderr, flush=True)
        bases = build_bases(work / "base")
        cases = make_corpus(bases, work / "corpus", args.count, args.seed, args.onnx_format)
        print(f"{len(cases)} damaged sources; converting ...", file=sys.stderr, flush=True)
        t1 = time.perf_counter()
        results = run_cases(cases, work, timeout=args.timeout)
        report = {"seed": args.seed, **summarize(results)}
        bad = [r for r in results if r.outcome not in ACCEPTABLE]
        if args.cli:
            step = max(1, len(cases) // args.cli)
            cli = [run_cli(c, work, args.timeout) for c in cases[::step][: args.cli]]
            report["cli"] = summarize(cli)
            bad += [r for r in cli if r.outcome not in ACCEPTABLE]
        report["seconds"] = {"build": round(t1 - t0, 1), "run": round(time.perf_counter() - t1, 1)}
        report["failures"] = [
            {"file": Path(r.case.path).name, "outcome": r.outcome, "detail": r.detail} for r in bad
        ]
        report["rejections"] = dict(Counter(
            _gist(r.detail) for r in results if r.outcome == "rejected").most_common(15))
        _print(report, args.json)
    return 1 if bad else 0


def _gist(message: str) -> str:
    """The message without the file name, for grouping."""
    text = message.removeprefix("edgeopt: error: ")
    head, sep, tail = text.partition(": ")
    return (tail if sep else head)[:80]


def _print(report: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=1))
        return
    print(f"seed {report['seed']}: {report['files']} files, {report['seconds']['run']} s "
          f"(slowest {report['max_seconds']} s)")
    print("outcomes:", _fmt(report["outcomes"]))
    for key in ("by_format", "by_part", "by_kind"):
        for name, counts in report[key].items():
            print(f"  {name:55s} {_fmt(counts)}")
    print(f"rejections naming the model file: {report['rejections_naming_the_model']}")
    if "cli" in report:
        print("fresh CLI processes:", _fmt(report["cli"]["outcomes"]))
    for msg, n in report["rejections"].items():
        print(f"  {n:4d} x {msg}")
    for f in report["failures"]:
        print(f"FAIL {f['outcome']:8s} {f['file']}: {f['detail']}")


def _fmt(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())


if __name__ == "__main__":
    sys.exit(main())
