"""Transformer recipes on real pretrained models: accuracy per sentence and int8/float speed.

``python -m benchmarks.transformers [--models minilm-l6,mpnet-base,keras-encoder] [--search]
[--rounds 7] [--out FILE] [--json]``

* ``minilm-l6`` / ``mpnet-base``: real sentence-embedding transformers from PyPI packages,
  exported by ``torch.onnx.export`` (``benchmarks/transformer_models.py``), built through
  edgeopt's ONNX backend with one ``Recipe`` each (ORT static default, dynamic per-tensor and
  per-channel weight MatMuls, + outlier split, + smoothing and outlier split), validated on 143
  held-out sentences: cosine of the mean-pooled embedding **per sentence** (min, p5, mean).
* ``keras-encoder``: the 4-layer d-256 Keras encoder of ``benchmarks/models.py`` (seeded) as
  TFLite float32 / dynamic-range / full int8 through edgeopt's TFLite backend, LiteRT.
* ``--search``: the search core (``edgeopt.tune.search``) on MiniLM-L6 with a real evaluator
  (build + per-sentence min cosine + interleaved latency), budget min cosine >= 0.99.

Timing: 1 thread, every model of one table timed in the same rounds (``benchmarks.timing``,
rotated order), speed-up = median over rounds of float / int8 thread-CPU-time block medians.
Heavy dependencies (torch, transformers, the model packages) are needed here only.

Results 2026-12-01 (``results/2026-12-01-vm-transformers.json``; AMD EPYC, shared 2-core VM,
load average 7-10; per-sentence cosine over 143 sentences; speed-up float/int8 at 1 thread):

| model | recipe | cos min | cos mean | sentences < 0.99 | speed-up |
|---|---|---|---|---|---|
| MiniLM-L6 | static U8S8 (arm-cpu default; masks kept float) | 0.771 | 0.844 | 143 | 2.27x |
| MiniLM-L6 | dynamic MatMul | 0.945 | 0.967 | 143 | 2.25x |
| MiniLM-L6 | dynamic per-channel MatMul | 0.989 | 0.994 | 2 | 2.22x |
| MiniLM-L6 | + outlier-split | 0.993 | 0.996 | 0 | 2.16x |
| MiniLM-L6 | + smooth + outlier-split | **0.998** | 0.999 | 0 | **2.49x** |
| MPNet-base | static U8S8 (runs now; was an ORT crash) | 0.037 | 0.171 | 143 | 3.23x |
| MPNet-base | dynamic MatMul | 0.638 | 0.776 | 143 | 2.89x |
| MPNet-base | dynamic per-channel MatMul | 0.868 | 0.922 | 143 | 2.55x |
| MPNet-base | + outlier-split | 0.980 | 0.991 | 49 | 2.56x |
| MPNet-base | + smooth + outlier-split | **0.995** | 0.998 | 0 | **2.72x** |
| Keras encoder 4x256 (TFLite) | dynamic range | 0.99995 | 0.99996 | 0 | 2.61x |
| Keras encoder 4x256 (TFLite) | full int8 | 0.99967 | 0.99979 | 0 | 0.84x |

``--search`` (MiniLM-L6, min cosine >= 0.99, arm-cpu starting points): met after 6
evaluations in 106 s (export cached): dynamic per-channel + smooth + outlier-split chosen; the
starts that miss the budget are all slower than it, so no revert was needed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks import timing  # noqa: E402
from benchmarks import transformer_models as tm  # noqa: E402

MIN_COSINE_6 = 0.99  # issue 14 targets (per-sentence minimum cosine, speed-up at 1 thread)
MIN_COSINE_12 = 0.98
MIN_SPEEDUP = 2.0


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _session(path: Path) -> Any:
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    o.inter_op_num_threads = 1
    o.log_severity_level = 3
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(1) / den, np.nan)


def stats(c: np.ndarray) -> dict[str, Any]:
    bad = ~np.isfinite(c)
    v = np.where(bad, -1.0, c)  # a NaN sentence is the worst sentence
    return {"min": round(float(v.min()), 5), "p5": round(float(np.percentile(v, 5)), 5),
            "mean": round(float(v.mean()), 5), "nan": int(bad.sum()),
            "below_0.99": int((v < 0.99).sum()), "sentences": int(v.size)}


class OnnxBench:
    """One real model: its float reference and a way to build and measure recipes."""

    def __init__(self, name: str) -> None:
        from edgeopt.sources import load_source
        from edgeopt.targets import load_target

        model = tm.load(name)
        if model is None:
            raise RuntimeError(f"{name}: model package not installed")
        self.model = model
        self.source = load_source(model.onnx)
        self.profile = load_target("arm-cpu")
        self.work = tm.CACHE / name / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        n = len(model.calib["input_ids"])
        self.calib = [{k: v[i:i + 1] for k, v in model.calib.items()} for i in range(n)]
        m = len(model.val["input_ids"])
        self.val = [{k: v[i:i + 1] for k, v in model.val.items()} for i in range(m)]
        self.float = _session(model.onnx)
        self.ref = np.concatenate([self.float.run(None, f)[0] for f in self.val])

    def build(self, recipe: Any) -> tuple[Path, Any, float]:
        from edgeopt.backends import BuildRequest, get_backend

        out = tm.CACHE / self.model.name / "cands" / f"{recipe.key()}.onnx"
        out.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        built = get_backend("onnx").build(BuildRequest(
            source=self.source, profile=self.profile, precision=recipe.precision,
            input_shapes={s.name: s.shape for s in self.source.inputs}, workdir=self.work,
            out_path=out, calib=self.calib, recipe=recipe))
        return out, built, time.perf_counter() - t0

    def accuracy(self, path: Path) -> dict[str, Any]:
        s = _session(path)
        got = np.concatenate([s.run(None, f)[0] for f in self.val])
        return stats(cosines(self.ref, got))

    def speed(self, paths: dict[str, Path], plan: timing.Plan) -> dict[str, dict[str, Any]]:
        feeds = self.val[0]
        sessions = {"float": self.float, **{k: _session(p) for k, p in paths.items()}}
        fns = {k: (lambda s=s: s.run(None, feeds)) for k, s in sessions.items()}
        samples = timing.interleaved(fns, plan, cpu=True)
        out = {}
        for k in paths:
            r = timing.ratio(samples["float"], samples[k], cpu=True)
            out[k] = {"speedup": r["speedup"], "spread": r["spread"],
                      "cpu_p50_ms": samples[k].summary()["cpu_p50_ms"]}
        out["float"] = {"cpu_p50_ms": samples["float"].summary()["cpu_p50_ms"]}
        return out


def onnx_recipes() -> dict[str, Any]:
    from edgeopt.recipes import Recipe, TransformSpec
    from edgeopt.targets import Format, load_target

    smooth, split = TransformSpec.make("smooth"), TransformSpec.make("outlier-split")
    mm = ("MatMul",)
    return {
        "static (arm-cpu default)": Recipe.from_profile(load_target("arm-cpu"), "onnx", "int8"),
        "dynamic MatMul": Recipe(Format.ONNX, "dynamic", per_channel=False, op_types=mm),
        "dynamic per-channel MatMul": Recipe(Format.ONNX, "dynamic", op_types=mm),
        "+ outlier-split": Recipe(Format.ONNX, "dynamic", op_types=mm, transforms=(split,)),
        "+ smooth + outlier-split": Recipe(Format.ONNX, "dynamic", op_types=mm,
                                           transforms=(smooth, split)),
    }


def bench_onnx(name: str, plan: timing.Plan) -> dict[str, Any]:
    say(f"{name}: preparing (export cached in {tm.CACHE})")
    bench = OnnxBench(name)
    rows: dict[str, Any] = {}
    paths = {}
    for label, recipe in onnx_recipes().items():
        say(f"{name}: building {label}")
        try:
            path, built, seconds = bench.build(recipe)
        except Exception as exc:  # noqa: BLE001 - a failed recipe is a result
            rows[label] = {"recipe": recipe.to_dict(), "error": str(exc)[:300]}
            continue
        paths[label] = path
        check = next((d["float_check"] for d in built.details.get("transforms", [])
                      if "float_check" in d), None)
        rows[label] = {"recipe": recipe.to_dict(), "build_s": round(seconds, 1),
                       "notes": built.notes, "float_check": check,
                       "cosine": bench.accuracy(path)}
    say(f"{name}: timing float and {len(paths)} int8 models interleaved (1 thread)")
    speed = bench.speed(paths, plan)
    for label in paths:
        rows[label].update(speed[label])
    return {"model": name, "layers": bench.model.layers, "float_cpu_p50_ms":
            speed["float"]["cpu_p50_ms"], "rows": rows}


def bench_keras(plan: timing.Plan) -> dict[str, Any]:
    import edgeopt_runtime as rt

    from benchmarks.models import get
    from edgeopt.backends import BuildRequest, get_backend
    from edgeopt.recipes import Recipe
    from edgeopt.sources import load_source
    from edgeopt.targets import Format, load_target

    spec = get("transformer_encoder")
    work = Path(tempfile.mkdtemp(prefix="edgeopt-bench-keras-"))
    path = work / "encoder.keras"
    spec.build(0).save(path)
    src = load_source(path)
    rng = np.random.default_rng(0)
    lo, hi = spec.value_range
    calib = [{spec.input_name: rng.uniform(lo, hi, (1, *spec.input_shape)).astype(np.float32)}
             for _ in range(64)]
    val = [{spec.input_name: rng.uniform(lo, hi, (1, *spec.input_shape)).astype(np.float32)}
           for _ in range(64)]
    shapes = {s.name: (1, *s.shape[1:]) for s in src.inputs}
    backend = get_backend("tflite")
    float_path = backend.build_float(src, shapes, work)
    models = {"float32": rt.load(float_path, threads=1)}
    rows: dict[str, Any] = {}
    for mode in ("dynamic", "int8"):
        say(f"keras-encoder: building tflite {mode}")
        t0 = time.perf_counter()
        built = backend.build(BuildRequest(
            source=src, profile=load_target("arm-cpu"), precision=mode, input_shapes=shapes,
            workdir=work, out_path=work / f"{mode}.tflite", calib=calib,
            recipe=Recipe(Format.TFLITE, mode)))
        models[mode] = rt.load(built.path, threads=1)
        rows[mode] = {"build_s": round(time.perf_counter() - t0, 1),
                      "float_ops": built.details.get("float_ops"), "notes": built.notes}
    ref = np.concatenate([next(iter(models["float32"].run(f).values())) for f in val])
    for mode in rows:
        got = np.concatenate([next(iter(models[mode].run(f).values())) for f in val])
        rows[mode]["cosine"] = stats(cosines(ref, got))
    feeds = val[0]
    fns = {k: (lambda m=m: m.run(feeds)) for k, m in models.items()}
    samples = timing.interleaved(fns, plan, cpu=True)
    for mode in rows:
        r = timing.ratio(samples["float32"], samples[mode], cpu=True)
        rows[mode].update(speedup=r["speedup"], spread=r["spread"])
    return {"model": "keras-encoder", "description": spec.description, "rows": rows}


def layer_signal(bench: OnnxBench) -> dict[str, float]:
    """Per-layer signal for dynamic int8: how far each weight MatMul's input outlier channels
    stand out (calibration channel max / median channel max)."""
    import onnx

    from edgeopt.recipes.graph import GraphView
    from edgeopt.recipes.transforms import channel_max

    model = onnx.load(str(bench.model.onnx))
    view = GraphView(model)
    mms = view.weight_matmuls()
    stats_ = channel_max(model, [m.input[0] for m in mms], bench.calib[:32])
    out = {}
    for m in mms:
        a = stats_[m.input[0]]
        med = float(np.median(a))
        out[view.layer_name(m)] = float(a.max() / med) if med > 0 else 0.0
    return out


def search_demo(name: str, budget: float, plan: timing.Plan) -> dict[str, Any]:
    import onnx

    from edgeopt.recipes.groups import onnx_groups
    from edgeopt.recipes.space import starting_points
    from edgeopt.targets import load_target
    from edgeopt.tune.search import Budget, Evaluation, Limits, Metric, search, serial

    bench = OnnxBench(name)
    groups = onnx_groups(onnx.load(str(bench.model.onnx), load_external_data=False))
    signal = layer_signal(bench)

    float_ms = bench.speed({}, plan)["float"]["cpu_p50_ms"]

    def evaluate(recipe: Any) -> Evaluation:
        path, built, seconds = bench.build(recipe)
        acc = bench.accuracy(path)
        sp = bench.speed({"cand": path}, plan)
        # latency from the interleaved ratio against float (one float reference for every
        # candidate): absolute ms drift with the host's load between candidates, ratios do not
        return Evaluation(recipe, acc["min"], latency_ms=float_ms / sp["cand"]["speedup"],
                          size_bytes=path.stat().st_size, layer_scores=signal,
                          extra={"cosine": acc, "speedup": sp["cand"]["speedup"],
                                 "build_s": round(seconds, 1)})

    from edgeopt.recipes.graph import detect

    shape = detect(onnx.load(str(bench.model.onnx), load_external_data=False))
    starts = starting_points(load_target("arm-cpu"), "onnx", transformer=shape is not None)
    t0 = time.perf_counter()
    result = search(starts, groups, serial(evaluate), Budget(Metric.MIN_COSINE, budget),
                    limits=Limits(evaluations=14, seconds=900), progress=say)
    record = result.to_dict()
    for row, trial in zip(record["trials"], result.trials, strict=True):
        row.update({k: v for k, v in trial.evaluation.extra.items()})
    record["wall_s"] = round(time.perf_counter() - t0, 1)
    record["transformer"] = None if shape is None else shape.to_dict()
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.transformers")
    p.add_argument("--models", default="minilm-l6,mpnet-base,keras-encoder")
    p.add_argument("--search", action="store_true", help="run the search core on MiniLM-L6")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--block-s", type=float, default=0.3)
    p.add_argument("--out", type=Path, default=None, help="write the JSON document here")
    p.add_argument("--json", action="store_true", help="the JSON document on stdout")
    args = p.parse_args(argv)
    why = tm.missing()
    plan = timing.Plan(rounds=args.rounds, block_s=args.block_s)
    doc: dict[str, Any] = {"schema": "edgeopt.bench.transformers/1", "load_avg":
                           os.getloadavg(), "models": []}
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        if name == "keras-encoder":
            doc["models"].append(bench_keras(plan))
        elif why:
            doc["models"].append({"model": name, "skipped": why})
        else:
            doc["models"].append(bench_onnx(name, plan))
    if args.search and not why:
        doc["search"] = search_demo("minilm-l6", MIN_COSINE_6,
                                    timing.Plan(rounds=5, block_s=0.2))
    doc["load_avg_end"] = os.getloadavg()
    text = json.dumps(doc, indent=1, default=str)
    if args.out:
        args.out.write_text(text)
    if args.json:
        print(text)
    else:
        print(table(doc))
    return 0


def table(doc: dict[str, Any]) -> str:
    lines = ["| model | recipe | cosine min | p5 | mean | < 0.99 | speed-up (spread) |",
             "|---|---|---|---|---|---|---|"]
    for m in doc["models"]:
        for label, r in m.get("rows", {}).items():
            c = r.get("cosine", {})
            sp = f"{r['speedup']:.2f}x ({r['spread'][0]:.2f}-{r['spread'][1]:.2f})" \
                if "speedup" in r else r.get("error", "")
            lines.append(f"| {m['model']} | {label} | {c.get('min', '')} | {c.get('p5', '')} | "
                         f"{c.get('mean', '')} | {c.get('below_0.99', '')} | {sp} |")
    if "search" in doc:
        s = doc["search"]
        lines.append(f"\nsearch: {s['status']} after {s['evaluations']} evaluations, "
                     f"{s['wall_s']} s: {s['reason']}")
        for t in s["trials"]:
            mark = " <- chosen" if t["chosen"] else ""
            lines.append(f"  [{t['index']}] {t['step']:9} {t['label']} float={t['reverted']} "
                         f"min-cos={t['accuracy']} speed-up={t.get('speedup')}{mark}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
