"""Wrapper overhead of ``edgeopt_runtime``: ``Model.run`` against the raw engine loop.

For each model, the same loaded interpreter / session is driven two ways, call pair after call
pair in rounds (``paired_overhead``: back to back, order alternating):

- raw LiteRT: ``set_tensor`` / ``invoke`` / ``get_tensor``; raw ONNX Runtime: ``session.run``;
- ``Model.run(x)`` (feed checks, IO (de)quantization, ``Outputs`` dict).

The overhead is the median over rounds of each round's median pair difference (Model.run - raw),
in µs per call and as a percentage of the raw time. Targets (issue 2): at most 10 µs per call
on a tiny float-IO model, at most 2 % on a MobileNetV2-sized int8 model with float IO.

Also measured in fresh subprocesses (``startup``): ``import edgeopt_runtime`` time and RSS, and
``edgeopt --help`` wall time.

The models are built with TensorFlow in a child process, so the measuring process never holds
TensorFlow (its threads and memory would be noise). Run::

    python -m benchmarks.runtime_overhead [--rounds N] [--threads N] [--cache DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TINY_SHAPE = (8, 8, 3)
MNV2_SHAPE = (224, 224, 3)
TARGET_TINY_US = 10.0
TARGET_LARGE_PCT = 2.0
MODEL_FILES = {
    "tiny_float.tflite": "tiny CNN 8x8x3, float",
    "tiny_float.onnx": "tiny CNN 8x8x3, float",
    "mobilenetv2_int8.tflite": "MobileNetV2-224 (weights=None), int8, float IO",
    "mobilenetv2_float.onnx": "MobileNetV2-224 (weights=None), float",
}


# -- models (built in a child process: TensorFlow never enters the measuring process) ----------
def build_models(out_dir: str | os.PathLike[str], seed: int = 0) -> dict[str, Path]:
    """Build the benchmark models with Keras / TFLite / tf2onnx into ``out_dir`` (cached).

    Args:
        out_dir: folder for the model files; existing files are reused.
        seed: Keras seed (weights are random: latency does not depend on trained values).

    Returns:
        file name -> path, for every entry of ``MODEL_FILES``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in MODEL_FILES}
    if all(p.exists() for p in paths.values()):
        return paths
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input(TINY_SHAPE, batch_size=1, name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    tiny = keras.Model(inp, keras.layers.Dense(5, name="logits")(x))
    mnv2 = keras.applications.MobileNetV2(
        weights=None, input_tensor=keras.Input(MNV2_SHAPE, batch_size=1, name="image")
    )
    _to_tflite(tiny, paths["tiny_float.tflite"], TINY_SHAPE, int8=False)
    _to_onnx(tiny, paths["tiny_float.onnx"], TINY_SHAPE)
    _to_tflite(mnv2, paths["mobilenetv2_int8.tflite"], MNV2_SHAPE, int8=True)
    _to_onnx(mnv2, paths["mobilenetv2_float.onnx"], MNV2_SHAPE)
    return paths


def _to_tflite(model: Any, path: Path, shape: tuple[int, ...], *, int8: bool) -> None:
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        rng = np.random.default_rng(1)

        def representative() -> Any:
            for _ in range(8):
                yield [rng.uniform(0, 1, (1, *shape)).astype(np.float32)]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    path.write_bytes(conv.convert())


def _to_onnx(model: Any, path: Path, shape: tuple[int, ...]) -> None:
    import tensorflow as tf
    import tf2onnx

    spec = [tf.TensorSpec((1, *shape), tf.float32, name="image")]

    @tf.function(input_signature=spec)
    def fn(x: Any) -> Any:
        return {"logits": model(x, training=False)}

    tf2onnx.convert.from_function(fn, input_signature=spec, opset=17, output_path=str(path))


def build_in_subprocess(out_dir: Path) -> dict[str, Path]:
    """``build_models`` in a child interpreter (TensorFlow stays out of this process)."""
    code = (
        "import sys; from benchmarks.runtime_overhead import build_models; "
        "build_models(sys.argv[1])"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(out_dir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"building the benchmark models failed:\n{proc.stderr[-3000:]}")
    return {name: out_dir / name for name in MODEL_FILES}


# -- measurement -------------------------------------------------------------------------------
def _raw_call(model: Any, x: np.ndarray) -> Any:
    """The engine's own minimal loop on the very interpreter / session ``model`` wraps."""
    runner = model.runner
    if model.format == "tflite":
        interp = runner.interpreter
        i_idx = interp.get_input_details()[0]["index"]
        o_idx = interp.get_output_details()[0]["index"]

        def raw() -> Any:
            interp.set_tensor(i_idx, x)
            interp.invoke()
            return interp.get_tensor(o_idx)

        return raw
    sess = runner.session
    i_name = sess.get_inputs()[0].name
    o_names = [o.name for o in sess.get_outputs()]
    return lambda: sess.run(o_names, {i_name: x})


def paired_overhead(
    raw: Callable[[], Any],
    wrapped: Callable[[], Any],
    *,
    rounds: int,
    block_s: float,
    cpu_clock: bool = True,
) -> dict[str, Any]:
    """Time ``raw`` and ``wrapped`` back to back, call pair after call pair, in rounds.

    Each pair runs both calls within milliseconds of each other (order alternating every pair),
    so load from other processes hits both sides alike; the wrapper's cost is the pair's
    difference. Per round: the median raw time and the median pair difference; the result is
    the median over rounds (per-round values are kept: their spread is the noise).

    Args:
        raw / wrapped: zero-argument calls running one inference each.
        rounds / block_s: rounds, and seconds of pairs per round.
        cpu_clock: report this thread's CPU time (``time.thread_time_ns``) as the primary
            number. Right when the engine runs on the calling thread (1 thread): on a shared
            machine it leaves out the time the process waits for a core. Wall time
            (``perf_counter_ns``) is reported alongside either way.

    Returns:
        ``raw_us``, ``wrapper_us``, ``overhead_us``, ``overhead_pct`` (primary clock),
        ``overhead_wall_us`` / ``overhead_cpu_us``, per-round overheads, pairs and rounds.
    """
    wall, cpu = time.perf_counter_ns, time.thread_time_ns
    for _ in range(5):  # warm-up: first calls allocate and fill caches
        raw(), wrapped()
    t0 = wall()
    raw()
    wrapped()
    pairs = int(min(5000, max(5, block_s * 1e9 / max(wall() - t0, 1))))
    per_round: dict[str, list[float]] = {"raw_w": [], "raw_c": [], "d_w": [], "d_c": []}
    for r in range(rounds):
        rec: dict[str, list[int]] = {k: [] for k in per_round}
        for i in range(pairs):
            raw_first = (i + r) % 2 == 0
            first, second = (raw, wrapped) if raw_first else (wrapped, raw)
            w0, c0 = wall(), cpu()
            first()
            w1, c1 = wall(), cpu()
            second()
            w2, c2 = wall(), cpu()
            for key, (a, b, c) in (("w", (w0, w1, w2)), ("c", (c0, c1, c2))):
                t_raw, t_wrapped = (b - a, c - b) if raw_first else (c - b, b - a)
                rec[f"raw_{key}"].append(t_raw)
                rec[f"d_{key}"].append(t_wrapped - t_raw)
        for k, values in rec.items():
            per_round[k].append(statistics.median(values) / 1e3)
    med = {k: statistics.median(v) for k, v in per_round.items()}
    key = "c" if cpu_clock else "w"
    raw_us, overhead_us = med[f"raw_{key}"], med[f"d_{key}"]
    return {
        "raw_us": round(raw_us, 3),
        "wrapper_us": round(raw_us + overhead_us, 3),
        "overhead_us": round(overhead_us, 3),
        "overhead_pct": round(100 * overhead_us / raw_us, 3),
        "overhead_wall_us": round(med["d_w"], 3),
        "overhead_cpu_us": round(med["d_c"], 3),
        "raw_wall_us": round(med["raw_w"], 3),
        "per_round_overhead_us": [round(d, 3) for d in per_round[f"d_{key}"]],
        "pairs_per_round": pairs,
        "rounds": rounds,
        "clock": "thread CPU time" if cpu_clock else "wall time",
        "method": "call pairs back to back (order alternating), median pair difference per "
        "round, median over rounds",
    }


def wrapper_overhead(
    path: str | os.PathLike[str],
    x: np.ndarray | None = None,
    *,
    threads: int = 1,
    rounds: int = 15,
    block_s: float = 0.1,
) -> dict[str, Any]:
    """``Model.run(x)`` vs the raw loop on the same interpreter / session of one model.

    Args:
        path: a ``.tflite`` / ``.onnx`` file or artifact directory (single-input model).
        x: the input (float, as callers pass it; quantized by ``Model.run`` for int8-IO models
            and by hand, once, outside the timed loop for the raw side). Default: seeded
            uniform [0, 1) of the input shape.
        threads: engine threads (1 = least noisy on a shared machine).
        rounds / block_s: rounds, and seconds of call pairs per round.

    Returns:
        ``paired_overhead``'s numbers plus model, backend, delegate and threads.
    """
    import edgeopt_runtime as rt

    model = rt.load(path, threads=threads)
    spec = model.inputs[0]
    if x is None:
        shape = [d or 1 for d in spec.shape]
        x = np.random.default_rng(0).uniform(0, 1, shape).astype(np.float32)
    raw_x = x
    if spec.is_quantized and np.asarray(x).dtype.kind == "f":
        raw_x = rt.quantize(x, spec.quantization, spec.dtype, ties=model.runner.ties)
    raw = _raw_call(model, raw_x)
    got = raw()
    first = got[0] if isinstance(got, list) else got  # ORT returns a list of outputs
    expect = model.run(raw_x, raw=True)[0]
    assert np.array_equal(expect, first), "Model.run and the raw loop disagree"
    run = model.run
    cpu_clock = threads == 1  # the engine then runs on this thread: its CPU time is the work
    # The wrapper's overhead is measured on the same input the raw loop gets. For integer-IO
    # models the float -> int conversion Model.run does for callers is work the raw loop does
    # not do at all: it is measured separately (io_quantization_us), not hidden in "overhead".
    io_quant = None
    if raw_x is not x:
        with_quant = paired_overhead(
            raw, lambda: run(x), rounds=rounds, block_s=block_s, cpu_clock=cpu_clock
        )
        io_quant = with_quant["overhead_us"]
    result = paired_overhead(
        raw, lambda: run(raw_x), rounds=rounds, block_s=block_s, cpu_clock=cpu_clock
    )
    # The same measurement of raw against an identical raw loop: what "0" looks like here.
    control = paired_overhead(
        raw, _raw_call(model, raw_x), rounds=rounds, block_s=block_s, cpu_clock=cpu_clock
    )
    return {
        "model": Path(path).name,
        "description": MODEL_FILES.get(Path(path).name, ""),
        "backend": model.backend,
        "delegate": model.delegate,
        "threads": threads,
        **result,
        "io_quantization_us": io_quant,
        "noise_floor_us": control["overhead_us"],
        "noise_floor_pct": control["overhead_pct"],
    }


_IMPORT_PROBE = """
import json, time
def rss():
    with open('/proc/self/status') as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith('VmRSS:'))
base = rss()
t0 = time.perf_counter()
import edgeopt_runtime
t1 = time.perf_counter()
after = rss()
from edgeopt_runtime.backends.tflite import _interpreter_module
_interpreter_module()
t2 = time.perf_counter()
tfl = rss()
from edgeopt_runtime.backends.onnx import _ort
_ort()
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "rss_base": base, "rss_after_import": after,
                  "litert_import_s": t2 - t1, "rss_after_litert": tfl,
                  "ort_import_s": t3 - t2, "rss_after_ort": rss()}))
"""


def measure_import(repeats: int = 5) -> dict[str, Any]:
    """``import edgeopt_runtime`` (then each engine) in fresh interpreters: median time, RSS.

    Linux only for RSS (VmRSS); each repeat is a new ``python`` process, so imports are cold
    for the interpreter but the OS file cache is warm after the first.
    """
    runs = []
    for _ in range(repeats):
        proc = subprocess.run(
            [sys.executable, "-c", _IMPORT_PROBE], capture_output=True, text=True, check=True
        )
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))

    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    mib = 2**20
    return {
        "repeats": repeats,
        "import_ms": round(med("import_s") * 1e3, 2),
        "rss_python_mib": round(med("rss_base") / mib, 1),
        "rss_after_import_mib": round(med("rss_after_import") / mib, 1),
        "import_rss_delta_mib": round((med("rss_after_import") - med("rss_base")) / mib, 1),
        "litert_import_ms": round(med("litert_import_s") * 1e3, 2),
        "rss_after_litert_mib": round(med("rss_after_litert") / mib, 1),
        "ort_import_ms": round(med("ort_import_s") * 1e3, 2),
        "rss_after_ort_mib": round(med("rss_after_ort") / mib, 1),
        "method": "fresh python per repeat; time.perf_counter around the import; VmRSS",
    }


def startup(repeats: int = 5) -> dict[str, Any]:
    """Start-up costs in fresh processes: the runtime import, and ``edgeopt --help``.

    Returns:
        ``{"import_edgeopt_runtime": measure_import(...), "edgeopt_help": {...}}``; the help
        entry is ``None`` when the converter package is not installed.
    """
    out: dict[str, Any] = {"import_edgeopt_runtime": measure_import(repeats)}
    help_code = "import sys; sys.argv = ['edgeopt', '--help']; from edgeopt.cli import main; main()"
    walls, bare = [], []
    for _ in range(repeats):
        bare.append(_wall([sys.executable, "-c", "pass"]))
        wall = _wall([sys.executable, "-c", help_code])
        if wall is None:
            out["edgeopt_help"] = None
            return out
        walls.append(wall)
    out["edgeopt_help"] = {
        "wall_ms": round(statistics.median(walls), 1),
        "python_startup_ms": round(statistics.median(bare), 1),
        "method": "median wall time of a fresh `python -c` process (includes interpreter start)",
    }
    return out


def _wall(cmd: list[str]) -> float | None:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, check=False)
    ms = (time.perf_counter() - t0) * 1e3
    return ms if proc.returncode == 0 else None


# -- entry points ------------------------------------------------------------------------------
def run(
    *,
    cache: str | os.PathLike[str] | None = None,
    rounds: int = 15,
    threads: int = 1,
    block_s: float = 0.1,
) -> dict[str, Any]:
    """Build (or reuse) the models, measure overhead and import cost, return the numbers.

    Args:
        cache: folder for the built models (reused between runs); default: a temp folder.
        rounds: rounds of call pairs per model.
        threads: engine threads (1 = the least noisy on a shared machine).
        block_s: seconds per block of calls (each side, each round).

    Returns:
        ``{"overhead": [per-model dicts], "startup": startup(), "targets": {...}}``.
    """
    with tempfile.TemporaryDirectory(prefix="edgeopt-overhead-") as tmp:
        folder = Path(cache) if cache else Path(tmp)
        paths = build_in_subprocess(folder)
        rows = [
            wrapper_overhead(p, threads=threads, rounds=rounds, block_s=block_s)
            for p in paths.values()
        ]
    for row in rows:
        tiny = row["model"].startswith("tiny")
        row["target"] = f"<= {TARGET_TINY_US:g} µs" if tiny else f"<= {TARGET_LARGE_PCT:g} %"
        row["meets_target"] = (
            row["overhead_us"] <= TARGET_TINY_US
            if tiny
            else row["overhead_pct"] <= TARGET_LARGE_PCT
        )
    return {
        "overhead": rows,
        "startup": startup(),
        "targets": {"tiny_us": TARGET_TINY_US, "large_pct": TARGET_LARGE_PCT},
    }


def markdown(result: dict[str, Any]) -> str:
    """The numbers as Markdown tables."""
    lines = [
        "| model | backend | raw µs/call | Model.run µs/call | overhead µs | overhead % | "
        "A/A control µs | overhead µs, wall clock | per-round overhead µs (min..max) | target "
        "| met |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for r in result["overhead"]:
        spread = r["per_round_overhead_us"]
        lines.append(
            f"| {r['model']} | {r['backend']} [{r['delegate']}] | {r['raw_us']:.1f} | "
            f"{r['wrapper_us']:.1f} | {r['overhead_us']:.2f} | {r['overhead_pct']:.2f} | "
            f"{r['noise_floor_us']:.2f} | {r['overhead_wall_us']:.2f} | "
            f"{min(spread):.2f}..{max(spread):.2f} | {r['target']} | "
            f"{'yes' if r['meets_target'] else 'NO'} |"
        )
    clocks = sorted({r["clock"] for r in result["overhead"]})
    lines += [
        "",
        f"Clock: {', '.join(clocks)} (at 1 thread the engine runs on the calling thread, so "
        "its CPU time is the work, without waits for a core on a shared machine). A/A control: "
        "the raw loop measured against an identical raw loop, i.e. what zero looks like.",
    ]
    imp = result["startup"]["import_edgeopt_runtime"]
    help_ = result["startup"].get("edgeopt_help") or {}
    lines += [
        "",
        "| fresh process | time ms | RSS after, MiB |",
        "|---|---:|---:|",
        f"| python (baseline) | - | {imp['rss_python_mib']} |",
        f"| import edgeopt_runtime | {imp['import_ms']} | {imp['rss_after_import_mib']} |",
        f"| + LiteRT interpreter module | {imp['litert_import_ms']} | "
        f"{imp['rss_after_litert_mib']} |",
        f"| + onnxruntime | {imp['ort_import_ms']} | {imp['rss_after_ort_mib']} |",
        f"| `edgeopt --help` (whole process; bare python {help_.get('python_startup_ms')} ms) | "
        f"{help_.get('wall_ms')} | - |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI: print the Markdown tables (or ``--json``)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.runtime_overhead")
    p.add_argument("--cache", help="folder to build / reuse the models in")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--block-s", type=float, default=0.1)
    p.add_argument("--json", action="store_true", help="print the numbers as one JSON document")
    args = p.parse_args(argv)
    result = run(cache=args.cache, rounds=args.rounds, threads=args.threads, block_s=args.block_s)
    print(json.dumps(result) if args.json else markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
