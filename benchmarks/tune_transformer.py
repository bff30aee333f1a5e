"""``edgeopt tune`` end to end on a real pretrained transformer (issue 14's "done when").

Runs the CLI exactly as a user would — ``edgeopt tune model.onnx --target arm-cpu --calib
calib.npz --val val.npz --min-cosine 0.99 --budget 15m --out OUT`` with no hand-written TOML —
on ``all-MiniLM-L6-v2`` exported from PyTorch (``benchmarks.transformer_models``), then checks
the chosen artifact independently of edgeopt's own numbers:

* per-sentence cosine of the tuned artifact against the float model on the held-out sentences
  (odd lines of ``calibration_data/sentences/en.txt``; tuning saw them as ``--val``, the
  calibration used the even lines);
* the speed-up at 1 thread: float and tuned int8 timed interleaved in this process
  (``benchmarks.timing``, thread CPU time, rotated order), a ratio, never absolute times;
* the wall time of the whole ``edgeopt tune`` run (issue target: within 15 minutes).

Usage (torch / transformers are only needed for the export and the tokenizer, benchmark only)::

    PYTHONPATH=.:runtime /path/to/venv-with-torch/bin/python -m benchmarks.tune_transformer \\
        [--model minilm-l6] [--min-cosine 0.99] [--budget 15m] [--out result.json]

The ``edgeopt`` CLI is run with ``--edgeopt`` (default: this repository's, through
``sys.executable -c 'from edgeopt.cli import main; main()'``); point it at the project's own
venv (``--edgeopt .venv/bin/edgeopt``) when the torch venv lacks edgeopt's dependencies.
``--model keras-encoder`` (TFLite, no torch needed) tunes the seeded Keras encoder of
``benchmarks.models`` with ``--min-cosine 0.999``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks import timing  # noqa: E402
from benchmarks import transformer_models as tm  # noqa: E402
from benchmarks.transformers import _session, cosines, stats  # noqa: E402

MIN_SPEEDUP = 2.0
MAX_WALL_S = 15 * 60


def prepare(name: str, folder: Path) -> tuple[Path, Path, Path]:
    """The exported model and its calib / val ``.npz`` (tokenized sentences)."""
    model = tm.load(name)
    if model is None:
        raise SystemExit(f"{name}: its model package is not installed")
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "calib.npz", **model.calib)
    np.savez(folder / "val.npz", **model.val)
    return model.onnx, folder / "calib.npz", folder / "val.npz"


def prepare_keras(folder: Path) -> tuple[Path, Path, Path]:
    """The Keras post-LN encoder of ``benchmarks.models`` (seeded, 4 layers, d 256) and
    uniform calib / val embeddings, as a user of a Keras model would hand them over."""
    from benchmarks.models import get

    spec = get("transformer_encoder")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "encoder.keras"
    if not path.is_file():
        spec.build(0).save(path)
    rng = np.random.default_rng(0)
    lo, hi = spec.value_range
    for name, n in (("calib", 64), ("val", 64)):
        np.savez(folder / f"{name}.npz", **{spec.input_name: rng.uniform(
            lo, hi, (n, *spec.input_shape)).astype(np.float32)})
    return path, folder / "calib.npz", folder / "val.npz"


def run_tune(edgeopt: list[str], model: Path, calib: Path, val: Path, out: Path,
             min_cosine: float, budget: str, target: str, fmt: str) -> dict[str, Any]:
    cmd = [*edgeopt, "tune", str(model), "--target", target, "--calib", str(calib),
           "--val", str(val), "--min-cosine", str(min_cosine), "--budget", budget,
           "--format", fmt, "--out", str(out), "--force", "--json"]
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=out.parent)
    wall = time.perf_counter() - t0
    report = json.loads(proc.stdout) if proc.stdout.strip() else None
    # ORT's symbolic shape inference gives up on these exports and saves
    # sym_shape_infer_temp.onnx + <uuid>.data into the working directory unless edgeopt
    # runs it elsewhere: the user's folder must hold only what they put there and OUT
    litter = sorted(p.name for p in out.parent.iterdir()
                    if p.name == "sym_shape_infer_temp.onnx" or p.suffix == ".data")
    return {"exit_code": proc.returncode, "wall_s": round(wall, 1), "report": report,
            "cwd_litter": litter}


def check(model: Path, val: Path, artifact: Path, plan: timing.Plan) -> dict[str, Any]:
    """Independent per-sample cosine and interleaved 1-thread speed-up of ``artifact``
    (ONNX: ONNX Runtime against the exported model; TFLite: edgeopt_runtime against the float
    ``.tflite`` edgeopt shipped beside the artifact's report)."""
    data = np.load(val)
    feeds = [{k: data[k][i:i + 1] for k in data.files} for i in range(len(data[data.files[0]]))]
    if artifact.suffix == ".tflite":
        import edgeopt_runtime as rt

        ref_m = rt.load(_float_tflite(model, artifact), threads=1)
        cand_m = rt.load(artifact, threads=1)

        def first(m: Any, f: dict[str, np.ndarray]) -> np.ndarray:
            return next(iter(m.run(f).values()))

        ref = np.concatenate([first(ref_m, f) for f in feeds])
        got = np.concatenate([first(cand_m, f) for f in feeds])
        one = feeds[0]
        fns = {"float": lambda: ref_m.run(one), "tuned": lambda: cand_m.run(one)}
        return _timed(ref, got, fns, plan, artifact)
    ref_s, cand_s = _session(model), _session(artifact)
    names = {i.name for i in cand_s.get_inputs()}
    ref = np.concatenate([ref_s.run(None, f)[0] for f in feeds])
    got = np.concatenate([cand_s.run(None, {k: v for k, v in f.items() if k in names})[0]
                          for f in feeds])
    one = feeds[0]
    fns = {"float": lambda: ref_s.run(None, one),
           "tuned": lambda: cand_s.run(None, {k: v for k, v in one.items() if k in names})}
    return _timed(ref, got, fns, plan, artifact)


def _float_tflite(model: Path, artifact: Path) -> Path:
    """The float TFLite model of a Keras source (built once, beside the benchmark data)."""
    from edgeopt.backends import get_backend
    from edgeopt.sources import load_source

    src = load_source(model)
    shapes = {s.name: (1, *s.shape[1:]) for s in src.inputs}
    return get_backend("tflite").build_float(src, shapes, model.parent / "float-work")


def _timed(ref: np.ndarray, got: np.ndarray, fns: dict[str, Any], plan: timing.Plan,
           artifact: Path) -> dict[str, Any]:
    samples = timing.interleaved(fns, plan, cpu=True)
    r = timing.ratio(samples["float"], samples["tuned"], cpu=True)
    return {"cosine": stats(cosines(ref, got)), "speedup": r["speedup"], "spread": r["spread"],
            "float_cpu_p50_ms": samples["float"].summary()["cpu_p50_ms"],
            "tuned_cpu_p50_ms": samples["tuned"].summary()["cpu_p50_ms"],
            "size_bytes": artifact.stat().st_size}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.tune_transformer")
    p.add_argument("--model", default="minilm-l6",
                   choices=["minilm-l6", "mpnet-base", "keras-encoder"])
    p.add_argument("--target", default="arm-cpu")
    p.add_argument("--min-cosine", type=float, default=None,
                   help="default 0.99 (minilm-l6) / 0.98 (mpnet-base)")
    p.add_argument("--budget", default="15m")
    p.add_argument("--edgeopt", default=None, help="the edgeopt command (default: this repo's)")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--out", type=Path, default=None, help="write the JSON document here")
    args = p.parse_args(argv)
    keras = args.model == "keras-encoder"
    why = None if keras else tm.missing()
    if why:
        print(json.dumps({"skipped": why}))
        return 0
    goal = args.min_cosine or {"minilm-l6": 0.99, "mpnet-base": 0.98}.get(args.model, 0.999)
    folder = tm.CACHE / args.model / "tune-bench"
    model, calib, val = prepare_keras(folder) if keras else prepare(args.model, folder)
    for p in folder.iterdir():  # litter of an earlier run would read as this run's
        if p.name == "sym_shape_infer_temp.onnx" or p.suffix == ".data":
            p.unlink()
    edgeopt = (args.edgeopt.split() if args.edgeopt else
               [sys.executable, "-c", "from edgeopt.cli import main; main()"])
    out = folder / "out"
    load0 = os.getloadavg()
    fmt = "tflite" if keras else "onnx"
    run = run_tune(edgeopt, model, calib, val, out, goal, args.budget, args.target, fmt)
    doc: dict[str, Any] = {"schema": "edgeopt.bench.tune/1", "model": args.model,
                           "target": args.target, "min_cosine": goal, "budget": args.budget,
                           "exit_code": run["exit_code"], "wall_s": run["wall_s"],
                           "cwd_litter": run["cwd_litter"],
                           "load_avg": [load0, os.getloadavg()]}
    report = run["report"]
    if report is None:
        doc["error"] = "edgeopt tune wrote no JSON report"
    else:
        target = report["targets"][0]
        rec = (target.get("tune") or [{}])[0]
        doc["search"] = {k: rec.get(k) for k in ("status", "evaluations", "seconds",
                                                 "chosen_reason", "budget_met", "model")}
        doc["trials"] = [{k: t.get(k) for k in ("label", "step", "reverted", "accuracy",
                                                "latency_ms", "size_bytes", "met", "error")}
                         | {"speedup": (t.get("latency") or {}).get("speedup_p50")}
                         for t in rec.get("trials") or []]
        arts = [a for a in target.get("artifacts") or [] if a.get("format") == fmt]
        if arts:
            artifact = out / target["directory"] / arts[0]["file"]
            doc["check"] = check(model, val, artifact, timing.Plan(rounds=args.rounds))
    chk = doc.get("check") or {}
    doc["goal_met"] = bool(chk) and chk["cosine"]["min"] >= goal and \
        chk["speedup"] >= MIN_SPEEDUP and run["wall_s"] <= MAX_WALL_S and not run["cwd_litter"]
    text = json.dumps(doc, indent=1, default=str)
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0 if doc["goal_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
