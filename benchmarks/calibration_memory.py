"""Peak RSS of ``edgeopt convert`` as the number of calibration samples grows.

    python -m benchmarks.calibration_memory [--counts 500,5000] [--size 224]
        [--runs tflite,onnx-minmax,onnx-entropy] [--workdir DIR] [--json]

For each N: a folder of N seeded random images (smooth noise, alternately JPEG and PNG) of
``size x size x 3``, and a small seeded Keras model (four strided 3x3 convolutions, global
average pooling, a dense layer; fast to convert, but with full-resolution activations). Each run
kind is one ``edgeopt convert MODEL --target arm-cpu --calib DIR`` in a fresh child process:

* ``tflite``: ``--format tflite`` (TFLite's representative dataset, min/max calibration);
* ``onnx-minmax`` / ``onnx-entropy``: ``--format onnx --calib-method minmax|entropy`` (ONNX
  Runtime's calibrators; Percentile uses the same histogram calibrator as Entropy).

The number reported is the child's peak RSS: ``ru_maxrss`` from ``os.wait4`` — the kernel's
high-water mark for that process, not a sample. Validation data is a separate 16-image folder,
so the drift pass does not scale with N: what grows with N is calibration only (plus the
calibration data's up-front check and hash, which stream).

Measured on this host (2026-11, 224x224 images, peak RSS MiB of the ``edgeopt convert`` child):

    run            N=500   N=5,000   before the chunked ORT reader (N=500 / N=5,000)
    tflite         688.6   691.6     (unchanged: TFLite already streamed)
    onnx-minmax    716.6   717.3     719.4 / 807.3
    onnx-entropy   765.2   765.2     3501.4 / not run (extrapolated ~28 GiB: beyond this host)

``tests/converter/test_calibration_memory.py`` runs a 96x96, 40-vs-320-image version in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RUNS: dict[str, list[str]] = {
    "tflite": ["--format", "tflite"],
    "onnx-minmax": ["--format", "onnx", "--calib-method", "minmax"],
    "onnx-entropy": ["--format", "onnx", "--calib-method", "entropy"],
    # one child, both formats; ONNX with the histogram calibrator (the CI test's run)
    "all-entropy": ["--format", "all", "--calib-method", "entropy"],
}
VAL_IMAGES = 16
CHILD_TIMEOUT_S = 3600


def make_images(folder: Path, count: int, size: int, seed: int = 0) -> Path:
    """``count`` seeded ``size x size`` RGB images in ``folder`` (kept if already complete).

    Smooth noise (an 8x8 random image upscaled, plus mild per-pixel noise): realistic file
    sizes for PNG / JPEG, unlike white noise. Even indices are JPEG, odd ones PNG.
    """
    from PIL import Image

    stamp = folder / ".complete"
    if stamp.is_file() and stamp.read_text() == f"{count} {size} {seed}":
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        base = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        smooth = np.asarray(base.resize((size, size), Image.Resampling.BILINEAR), np.int16)
        pixels = np.clip(smooth + rng.integers(-8, 9, smooth.shape), 0, 255).astype(np.uint8)
        ext = "jpg" if i % 2 == 0 else "png"
        Image.fromarray(pixels).save(folder / f"img_{i:05d}.{ext}")
    stamp.write_text(f"{count} {size} {seed}")
    return folder


def build_model(path: Path, size: int, seed: int = 0) -> Path:
    """Write the seeded conv model to ``path`` (``.keras``) in a child process, once."""
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "benchmarks.calibration_memory", "--build-model", str(path),
           "--size", str(size), "--seed", str(seed)]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return path


def _build_model_here(path: Path, size: int, seed: int) -> None:
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 3), name="image")
    x = inp
    for i, filters in enumerate((16, 32, 64, 64)):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu",
                                name=f"conv{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(10, name="logits")(x)
    keras.Model(inp, out).save(path)


def convert_peak(model: Path, images: Path, val: Path, run: str, out: Path,
                 env: dict[str, str] | None = None) -> dict[str, Any]:
    """One ``edgeopt convert`` in a child process.

    Args:
        model, images, val: the model and the calibration / validation image folders.
        run: a key of ``RUNS``.
        out: output directory (replaced).
        env: environment of the child (default: this one), e.g. a PYTHONPATH.

    Returns:
        ``peak_rss_mib`` (the child's ``ru_maxrss``), ``wall_s``, ``exit`` and the last
        stderr line.
    """
    cmd = [sys.executable, "-m", "edgeopt.cli", "convert", str(model), "--target", "arm-cpu",
           "--calib", str(images), "--val", str(val), "--out", str(out), "--force",
           "--latency-runs", "3", *RUNS[run]]
    return {"run": run, **child_peak(cmd, out.parent,
                                     {"TF_CPP_MIN_LOG_LEVEL": "3", **(env or os.environ)})}


def child_peak(cmd: list[str], cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run ``cmd`` in a child process: ``peak_rss_mib`` (its ``ru_maxrss``), ``wall_s``,
    ``exit`` and the last stderr line."""
    with tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=cwd, env=env)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait again
        wall = time.perf_counter() - t0
        err.seek(0)
        lines = err.read().strip().splitlines()
    return {
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # Linux: KiB
        "wall_s": round(wall, 1),
        "exit": proc.returncode,
        "stderr": lines[-1][:300] if lines else "",
    }


def measure(counts: list[int], runs: list[str], size: int, work: Path,
            env: dict[str, str] | None = None, log: Any = sys.stderr) -> list[dict[str, Any]]:
    """Peak RSS per (run kind, N); every conversion in its own child."""
    model = build_model(work / f"conv{size}.keras", size)
    val = make_images(work / f"val_{size}", VAL_IMAGES, size, seed=1)
    rows = []
    for n in counts:
        print(f"{n} images ...", file=log, flush=True)
        images = make_images(work / f"calib_{size}_{n}", n, size, seed=0)
        for run in runs:
            row = {"n": n, **convert_peak(model, images, val, run, work / "out", env)}
            print(f"  {run}: {row['peak_rss_mib']} MiB, {row['wall_s']} s, exit {row['exit']}",
                  file=log, flush=True)
            rows.append(row)
    return rows


def growth(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Per run kind: peak RSS at the largest N minus peak RSS at the smallest N (MiB)."""
    out = {}
    for run in dict.fromkeys(r["run"] for r in rows):
        mine = sorted((r for r in rows if r["run"] == run), key=lambda r: r["n"])
        out[run] = round(mine[-1]["peak_rss_mib"] - mine[0]["peak_rss_mib"], 1)
    return out


def _table(rows: list[dict[str, Any]]) -> str:
    lines = ["| run | N | peak RSS MiB | wall s | exit |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['run']} | {r['n']} | {r['peak_rss_mib']} | {r['wall_s']} | {r['exit']} |"
              for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table (or JSON); exit 1 if a conversion failed."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", default="500,5000", help="comma list of sample counts")
    ap.add_argument("--runs", default="tflite,onnx-minmax,onnx-entropy",
                    help=f"comma list of: {', '.join(RUNS)}")
    ap.add_argument("--size", type=int, default=224, help="image height and width")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, help="keep images, model and output here")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--build-model", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.build_model:
        _build_model_here(args.build_model, args.size, args.seed)
        return 0
    counts = [int(c) for c in args.counts.split(",")]
    runs = [r.strip() for r in args.runs.split(",")]
    unknown = [r for r in runs if r not in RUNS]
    if unknown:
        ap.error(f"unknown run kind(s) {', '.join(unknown)}; choose from {', '.join(RUNS)}")
    with tempfile.TemporaryDirectory(prefix="edgeopt_calibmem_") as tmp:
        work = args.workdir or Path(tmp)
        rows = measure(counts, runs, args.size, work)
    result = {"size": args.size, "counts": counts, "rows": rows, "growth_mib": growth(rows)}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(_table(rows))
        print("growth (largest N - smallest N), MiB:",
              ", ".join(f"{k} {v:+}" for k, v in result["growth_mib"].items()))
    return 1 if any(r["exit"] != 0 for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
