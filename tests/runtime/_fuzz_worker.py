"""Fuzz harness for corrupt model files: mutators, a child-process worker, and its driver.

The worker (``python _fuzz_worker.py MODE`` with file paths on stdin) loads and runs each file and
prints ``S <i>`` before and ``R <i> <outcome>\\t<detail>`` after it. The driver restarts the worker
after a crash (or a hang), so the file that killed it is known, and carries on with the rest.

Modes: ``load`` (``edgeopt_runtime.load`` + ``Model.run``: the public path), ``raw`` (the bare
LiteRT interpreter / ONNX Runtime session, no checks: the baseline), ``verify`` (``verify`` checks,
then the bare interpreter with ``model_path``, i.e. mmapped read-only buffers).

Outcomes: ``ran``; ``rejected`` (EdgeOptError at load); ``run_rejected`` (EdgeOptError at run);
``huge_input`` (loaded; input too large to feed here); ``backend_error`` (raw modes: the backend
raised); ``error`` (any other exception: a contract violation); ``crash`` (killed by a signal);
``timeout``.
"""

from __future__ import annotations

import os
import queue
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MUTATIONS = ("bitflip", "byterun", "truncate", "swap", "zero", "int32", "struct", "field")
ACCEPTABLE = {"ran", "rejected", "run_rejected", "huge_input", "backend_error"}
MAX_FEED_ELEMENTS = 1 << 24
WORKER_MEMORY_LIMIT = 6 << 30  # address space: a huge allocation fails instead of OOM-killing


# -- mutators ------------------------------------------------------------------------------------
# Flatbuffer layouts used to find structural slots (offsets, vtable entries, lengths, scalars)
# in the *valid* base model. Width codes ("1"/"2"/"4"/"8" scalars, "s", "vN", "g"; options
# layouts come from edgeopt_runtime.verify.schema_tables), plus "T:Name" (vector of tables),
# "t:Name" (table) and "U"/"U2" (builtin options union; type in the previous field).
_LAYOUTS = {
    "Model": "4 T:OperatorCode T:SubGraph s T:Buffer v4 T:Metadata T:SignatureDef",
    "OperatorCode": "1 s 4 4",
    "SubGraph": "T:Tensor v4 v4 T:Operator s 4",
    "Tensor": "v4 1 4 s t:QuantizationParameters 1 _ v4 1",
    "QuantizationParameters": "v4 v4 v4 v8 1 _ 4",
    "Operator": "4 v4 v4 1 U v1 1 v1 v4 8 8 1 U2 4",
    "Buffer": "v1 8 8",
    "Metadata": "s 4",
    "SignatureDef": "T:TensorMap T:TensorMap s _ 4",
    "TensorMap": "s 4",
}


def structural_slots(data: bytes) -> list[tuple[int, int, bool]]:
    """(position, width, is_value) of every offset, vtable entry, vector length and scalar.

    ``is_value``: a scalar field or an element of a short int vector (shape, tensor indices),
    i.e. a value the kernels see, rather than flatbuffer plumbing.
    """
    from edgeopt_runtime.verify import flatbuffer as v
    from edgeopt_runtime.verify.schema_tables import OPTIONS, OPTIONS_2

    def widths(fields: tuple) -> str:
        """The generated field layout as width codes ("1 4 4 v4 s g _ ...")."""
        out = []
        for _, code, _ in fields:
            if code in ("g", "G", "s", "_", "t", "T"):
                out.append({"G": "v4", "t": "_", "T": "_"}.get(code, code))
            elif code.startswith("v:"):
                out.append(f"v{v.WIDTH[code[2:]]}")
            else:
                out.append(str(v.WIDTH[code]))
        return " ".join(out)

    r = v.Reader(memoryview(data))
    slots: list[tuple[int, int, bool]] = [(0, 4, False)]

    def walk(pos: int, layout: str) -> None:
        t = v.Table(r, pos, "t")
        slots.append((t.pos, 4, False))
        slots.extend((t.vt + 2 * k, 2, False) for k in range(t.nfields + 2))
        codes = layout.split()
        for fid, code in enumerate(codes):
            field(t, fid, code, codes)

    def field(t: object, fid: int, code: str, codes: list[str]) -> None:
        if code == "_":
            return
        if code in ("1", "2", "4", "8", "g"):
            width = 4 if code == "g" else int(code)
            p = t.field(fid, width)
            if p:
                slots.append((p, width, True))
            return
        p = t.field(fid, 4)
        if not p:
            return
        slots.append((p, 4, False))
        target = r.deref(p, "x")
        if code in ("U", "U2"):
            kind = t.scalar(fid - 1, v.U8)
            schema = OPTIONS if code == "U" else OPTIONS_2
            if kind in schema:
                walk(target, widths(schema[kind][1]))
            return
        if code.startswith("t:"):
            walk(target, _LAYOUTS[code[2:]])
            return
        slots.append((target, 4, False))  # vector / string length
        n = r.u32(target, "x")
        if code.startswith("T:"):
            for i in range(n):
                slots.append((target + 4 + 4 * i, 4, False))
                walk(r.deref(target + 4 + 4 * i, "x"), _LAYOUTS[code[2:]])
        elif code in ("v4", "G") and n <= 64:  # shapes, tensor indices: the interesting values
            slots.extend((target + 4 + 4 * i, 4, True) for i in range(n))

    walk(r.deref(0, "root"), _LAYOUTS["Model"])
    return sorted(set(slots))


def _interesting(rng: np.random.Generator, width: int, old: int, size: int) -> int:
    bits = 8 * width
    choices = [
        0, 1, 2, 3, (1 << bits) - 1, (1 << (bits - 1)) - 1, 1 << (bits - 1), old + 1, old - 1,
        old * 2, old ^ (1 << int(rng.integers(bits))), int(rng.integers(0, 300)),
        int(rng.integers(0, 1 << min(bits, 62))),
    ]  # fmt: skip
    if width >= 4:
        choices += [size, size - 4, size + 4, old + size // 2, 0xFFFF, 0x10000]
    return choices[int(rng.integers(len(choices)))] % (1 << bits)


def _plausible(rng: np.random.Generator, width: int, old: int) -> int:
    """Values a kernel might not expect but a structural check cannot rule out."""
    signed_old = old - (1 << (8 * width)) if old >= 1 << (8 * width - 1) else old
    choices = [
        0,
        1,
        2,
        3,
        -1,
        -2,
        signed_old + 1,
        signed_old - 1,
        signed_old * 2,
        int(rng.integers(0, 17)),
        int(rng.integers(-(1 << 15), 1 << 15)),
        255,
        256,
    ]
    return choices[int(rng.integers(len(choices)))] % (1 << (8 * width))


def mutate(
    data: bytes, kind: str, rng: np.random.Generator, slots: list[tuple[int, int, bool]] | None
) -> bytes:
    """One mutation of ``kind`` (see MUTATIONS); ``slots`` are structural_slots (TFLite)."""
    b = bytearray(data)
    n = len(b)
    if kind == "bitflip":
        for _ in range(int(rng.integers(1, 9))):
            b[int(rng.integers(n))] ^= 1 << int(rng.integers(8))
    elif kind == "byterun":
        k = int(rng.integers(1, 33))
        at = int(rng.integers(0, max(1, n - k)))
        b[at : at + k] = (
            bytes([0xFF]) * k if rng.random() < 0.3 else rng.integers(0, 256, k, np.uint8).tobytes()
        )
    elif kind == "truncate":
        return bytes(b[: int(rng.integers(0, n))])
    elif kind == "swap":
        k = int(rng.integers(4, 65))
        a, c = sorted(int(x) for x in rng.choice(max(1, n - k), 2, replace=False))
        if c - a >= k:
            b[a : a + k], b[c : c + k] = b[c : c + k], b[a : a + k]
    elif kind == "zero":
        k = int(rng.integers(4, 257))
        at = int(rng.integers(0, max(1, n - k)))
        b[at : at + k] = bytes(k)
    elif kind == "int32" or (kind in ("struct", "field") and not slots):
        at = int(rng.integers(0, n // 4)) * 4
        old = int.from_bytes(b[at : at + 4], "little")
        b[at : at + 4] = _interesting(rng, 4, old, n).to_bytes(4, "little")
    elif kind == "struct":
        for _ in range(int(rng.integers(1, 3))):
            at, width, _ = slots[int(rng.integers(len(slots)))]
            old = int.from_bytes(b[at : at + width], "little")
            b[at : at + width] = _interesting(rng, width, old, n).to_bytes(width, "little")
    elif kind == "field":
        values = [s for s in slots if s[2]]
        for _ in range(int(rng.integers(1, 3))):
            at, width, _ = values[int(rng.integers(len(values)))]
            old = int.from_bytes(b[at : at + width], "little")
            b[at : at + width] = _plausible(rng, width, old).to_bytes(width, "little")
    else:
        raise ValueError(f"unknown mutation {kind!r}")
    return bytes(b)


@dataclass(frozen=True)
class Case:
    """One mutated file."""

    path: str
    base: str
    kind: str


def make_corpus(base_models: dict[str, Path], out: Path, count: int, seed: int) -> list[Case]:
    """Write ``count`` mutated files (round-robin over base models and mutation kinds)."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    bases = sorted(base_models)
    datas = {name: base_models[name].read_bytes() for name in bases}
    slots = {n: structural_slots(d) if n.endswith(".tflite") else None for n, d in datas.items()}
    cases = []
    for i in range(count):
        name = bases[i % len(bases)]
        kind = MUTATIONS[(i // len(bases)) % len(MUTATIONS)]
        data = datas[name]
        mutated = data
        while mutated == data:  # a swap of equal bytes can leave the file unchanged
            mutated = mutate(data, kind, rng, slots[name])
        stem, suffix = name.rsplit(".", 1)
        path = out / f"{i:05d}_{stem}_{kind}.{suffix}"
        path.write_bytes(mutated)
        cases.append(Case(str(path), name, kind))
    return cases


# -- driver --------------------------------------------------------------------------------------
@dataclass
class Result:
    case: Case
    outcome: str
    detail: str


def _reader(stream: Iterable[str], q: queue.Queue) -> None:
    for line in stream:
        q.put(line.rstrip("\n"))
    q.put(None)


def _signal_name(rc: int) -> str:
    try:
        return f"signal {-rc} ({signal.Signals(-rc).name})"
    except ValueError:
        return f"signal {-rc}"


def run_cases(cases: list[Case], mode: str, timeout: float = 30.0) -> list[Result]:
    """Run every case through worker children; restart after each crash or hang."""
    if mode == "cli":
        return [_run_cli(c, timeout) for c in cases]
    results: dict[int, Result] = {}
    pending = list(range(len(cases)))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "OMP_NUM_THREADS": "1"}
    while pending:
        with tempfile.TemporaryFile("w+") as err:
            proc = subprocess.Popen(
                [sys.executable, __file__, mode],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, env=env,
            )  # fmt: skip
            q: queue.Queue = queue.Queue()
            threading.Thread(target=_reader, args=(proc.stdout, q), daemon=True).start()
            proc.stdin.write("".join(cases[i].path + "\n" for i in pending))
            proc.stdin.close()
            current, finished = None, False
            while not finished:
                try:
                    line = q.get(timeout=timeout)
                except queue.Empty:
                    proc.kill()
                    proc.wait()
                    if current is not None:
                        results[current] = Result(cases[current], "timeout", f"> {timeout:g} s")
                    break
                if line is None:
                    rc = proc.wait()
                    if current is not None and current not in results:
                        err.seek(0)
                        tail = " | ".join(err.read().strip().splitlines()[-2:])[-300:]
                        outcome = "crash" if rc < 0 else "error"
                        what = _signal_name(rc) if rc < 0 else f"worker exited {rc}"
                        results[current] = Result(cases[current], outcome, f"{what}: {tail}")
                    finished = True
                elif line.startswith("S "):
                    current = pending[int(line[2:])]
                elif line.startswith("R "):
                    k, _, rest = line[2:].partition(" ")
                    outcome, _, detail = rest.partition("\t")
                    results[pending[int(k)]] = Result(cases[pending[int(k)]], outcome, detail)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        pending = [i for i in pending if i not in results]
    return [results[i] for i in range(len(cases))]


def _run_cli(case: Case, timeout: float) -> Result:
    """``python -m edgeopt_runtime profile FILE --runs 2``: exit 0 ran, 2 rejected."""
    cmd = [sys.executable, "-m", "edgeopt_runtime", "profile", case.path, "--runs", "2"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Result(case, "timeout", f"> {timeout:g} s")
    last = (p.stderr.strip().splitlines() or [""])[-1][:300]
    if p.returncode < 0:
        return Result(case, "crash", f"{_signal_name(p.returncode)}: {last}")
    if p.returncode == 0:
        return Result(case, "ran", "")
    if p.returncode == 2 and "Traceback" not in p.stderr:
        return Result(case, "rejected", last)
    return Result(case, "error", f"exit {p.returncode}: {last}")


def summarize(results: list[Result]) -> dict[str, object]:
    """Counts per outcome, per (mutation kind, outcome) and per (base model, outcome)."""
    return {
        "files": len(results),
        "outcomes": dict(Counter(r.outcome for r in results).most_common()),
        "by_kind": {
            k: dict(Counter(r.outcome for r in results if r.case.kind == k).most_common())
            for k in sorted({r.case.kind for r in results})
        },
        "by_base": {
            b: dict(Counter(r.outcome for r in results if r.case.base == b).most_common())
            for b in sorted({r.case.base for r in results})
        },
    }


# -- worker --------------------------------------------------------------------------------------
def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else "")[:300]


def _feed(shape: Iterable[int | None], dtype: str, rng: np.random.Generator) -> np.ndarray | None:
    dims = [1 if d is None or d < 0 else int(d) for d in shape]
    if int(np.prod(dims, dtype=np.float64)) > MAX_FEED_ELEMENTS:
        return None
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return rng.standard_normal(dims).astype(dt)
    return np.zeros(dims, dt)


def _try_load(path: str, rng: np.random.Generator) -> tuple[str, str]:
    import edgeopt_runtime as rt

    try:
        model = rt.load(path, threads=1)
    except rt.EdgeOptError as exc:
        return "rejected", _first_line(exc)
    feeds = {}
    for s in model.inputs:
        # Quantized integer inputs take float feeds (Model.run quantizes them).
        a = _feed(s.shape, "float32" if s.is_quantized else s.dtype, rng)
        if a is None:
            return "huge_input", f"{s.name} {s.shape}"
        feeds[s.name] = a
    try:
        model.run(feeds)
    except rt.EdgeOptError as exc:
        return "run_rejected", _first_line(exc)
    return "ran", ""


def _try_raw(path: str, rng: np.random.Generator, check: bool) -> tuple[str, str]:
    if check:
        import edgeopt_runtime as rt
        from edgeopt_runtime import verify

        data = Path(path).read_bytes()
        try:
            if path.endswith(".tflite"):
                verify.check_tflite(data, path)
            else:
                verify.check_onnx(data, path)
        except rt.EdgeOptError as exc:
            return "rejected", _first_line(exc)
    try:
        if path.endswith(".tflite"):
            from ai_edge_litert.interpreter import Interpreter

            # ``raw`` hands bytes over like the runtime does; ``verify`` uses mmapped, read-only
            # buffers (model_path), where a write into a constant tensor would fault.
            if check:
                it = Interpreter(model_path=path, num_threads=1)
            else:
                it = Interpreter(model_content=Path(path).read_bytes(), num_threads=1)
            it.allocate_tensors()
            for d in it.get_input_details():
                a = _feed(d["shape"], np.dtype(d["dtype"]).name, rng)
                if a is None:
                    return "huge_input", str(d["shape"])
                it.set_tensor(d["index"], a)
            it.invoke()
        else:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.log_severity_level = 4
            sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
            feeds = {}
            for a in sess.get_inputs():
                dtype = a.type[len("tensor(") : -1]
                dtype = {"float": "float32", "double": "float64"}.get(dtype, dtype)
                x = _feed([d if isinstance(d, int) else 1 for d in a.shape], dtype, rng)
                if x is None:
                    return "huge_input", str(a.shape)
                feeds[a.name] = x
            sess.run(None, feeds)
    except Exception as exc:  # noqa: BLE001 - raw backends raise many types; all are clean errors
        return "backend_error", f"{type(exc).__name__}: {_first_line(exc)}"
    return "ran", ""


def worker_main(mode: str) -> None:
    """Load and run every path read from stdin, reporting each outcome on stdout."""
    resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_LIMIT, WORKER_MEMORY_LIMIT))
    paths = sys.stdin.read().split("\n")[:-1]
    rng = np.random.default_rng(0)
    import edgeopt_runtime  # noqa: F401 - import once, before the first file is timed

    for i, path in enumerate(paths):
        print(f"S {i}", flush=True)
        start = time.perf_counter()
        try:
            if mode == "load":
                outcome, detail = _try_load(path, rng)
            else:
                outcome, detail = _try_raw(path, rng, check=(mode == "verify"))
        except Exception as exc:  # noqa: BLE001 - anything else is what the fuzz looks for
            outcome, detail = "error", f"{type(exc).__name__}: {_first_line(exc)}"
        detail = f"{detail} [{time.perf_counter() - start:.2f}s]".replace("\n", " ")
        print(f"R {i} {outcome}\t{detail}", flush=True)


if __name__ == "__main__":
    worker_main(sys.argv[1])
