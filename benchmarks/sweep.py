"""Sweep wall time on serial / process / Ray, the cached rerun, and sharded validation.

    python -m benchmarks.sweep [--jobs 2] [--val-samples 24500] [--shard-size 5000]
        [--workdir DIR] [--json]

1. **The sweep**: 2 Keras models (the bundled ``examples/digits_cnn.keras`` and a small digits
   MLP trained here, seeded) x 3 targets (arm-cpu, edgetpu, mobile-gpu) x 2 recipes (the
   profile as it is; per-tensor weights) = 12 jobs, each ``edgeopt sweep`` run as a user would
   (a fresh CLI process into a fresh ``--out``): serial, ``--executor process -j N`` and
   ``--executor ray -j N`` (a private local Ray cluster, start-up included). The three results
   must agree on everything but timings (artifact sha256, size, SQNR, accuracy); the run fails
   otherwise.
2. **The cached rerun**: the serial command again on its own ``--out``.
3. **Sharded validation**: digits_cnn x arm-cpu with a validation set of real digits (the 500
   bundled calibration + validation images, each at 49 shifts of -3..3 pixels:
   24,500 labelled samples): one shard on the serial executor vs ``shard_size`` shards on the
   process pool and on Ray; per-shard worker peak RSS (VmHWM reset at task start), wall time,
   and the merged accuracy, which must be identical for every shard count.

The machine is shared and noisy: wall times are from one run each; compare the ratios.
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

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "calibration_data" / "digits"
TARGETS = ("arm-cpu", "edgetpu", "mobile-gpu")

_MLP = """
import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np, keras
keras.utils.set_random_seed(0)
d = np.load(sys.argv[1], allow_pickle=False)
x, y = d["input"], d["labels"]
inp = keras.Input((16, 16, 1), name="input")
h = keras.layers.Flatten()(inp)
h = keras.layers.Dense(64, activation="relu", name="fc1")(h)
out = keras.layers.Dense(10, activation="softmax", name="probs")(h)
m = keras.Model(inp, out)
m.compile("adam", "sparse_categorical_crossentropy")
m.fit(x, y, epochs=30, batch_size=32, verbose=0)
m.save(sys.argv[2])
"""


def log(msg: str) -> None:
    print(f"[sweep-bench] {msg}", file=sys.stderr, flush=True)


def shifted_digits(n_shift: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """The bundled digits (calib + val) at every (dy, dx) shift in -n..n, zero-padded."""
    xs, ys = [], []
    for name in ("calib.npz", "val.npz"):
        d = np.load(DIGITS / name, allow_pickle=False)
        xs.append(d["input"])
        ys.append(d["labels"])
    x, y = np.concatenate(xs), np.concatenate(ys)
    out_x, out_y = [], []
    pad = np.pad(x, ((0, 0), (n_shift, n_shift), (n_shift, n_shift), (0, 0)))
    for dy in range(-n_shift, n_shift + 1):
        for dx in range(-n_shift, n_shift + 1):
            out_x.append(pad[:, n_shift + dy:n_shift + dy + 16, n_shift + dx:n_shift + dx + 16])
            out_y.append(y)
    return np.concatenate(out_x).astype(np.float32), np.concatenate(out_y)


def write_inputs(work: Path) -> dict[str, Path]:
    mlp = work / "digits_mlp.keras"
    if not mlp.exists():
        log("training the digits MLP (seeded)")
        subprocess.run([sys.executable, "-c", _MLP, str(DIGITS / "calib.npz"), str(mlp)],
                       check=True)
    return {"cnn": ROOT / "examples" / "digits_cnn.keras", "mlp": mlp}


def sweep_file(work: Path, name: str, models: dict[str, Path], *, val: Path, targets: tuple,
               recipes: str, extra: str = "") -> Path:
    lines = ["targets = [" + ", ".join(f'"{t}"' for t in targets) + "]",
             "[settings]\nlatency_runs = 20\n" + extra, ""]
    for mname, path in models.items():
        lines += ["[[model]]", f'name = "{mname}"', f'path = "{path}"',
                  f'calib = "{DIGITS / "calib.npz"}"', f'val = "{val}"', ""]
    lines.append(recipes)
    p = work / f"{name}.toml"
    p.write_text("\n".join(lines))
    return p


def run_cli(sweep: Path, out: Path, *args: str) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edgeopt.cli", "sweep", str(sweep), "--out",
                           str(out), "--json", *args], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"edgeopt sweep {' '.join(args)} failed ({proc.returncode}):\n"
                         f"{proc.stderr[-3000:]}")
    return wall, json.loads(proc.stdout)


def deterministic(doc: dict[str, Any]) -> list[Any]:
    """What must not depend on the executor: status and every drift / accuracy number."""
    return [(j["job"], j["status"], [(a["file"], a["sqnr_db"], a["cosine"], a["top1_agreement"],
                                      a["accuracy"]) for a in j["artifacts"]])
            for j in doc["jobs"]]


def byte_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Artifacts whose bytes differ (tf2onnx numbers generated names per process: a model
    converted after others in the same process gets other suffixes, same graph)."""
    return [f"{x['model']}/{x['target']}/{x['recipe']}/{p['file']}"
            for x, y in zip(a["jobs"], b["jobs"], strict=True)
            for p, q in zip(x["artifacts"], y["artifacts"], strict=True)
            if p["sha256"] != q["sha256"]]


def bench_matrix(work: Path, models: dict[str, Path], jobs: int) -> dict[str, Any]:
    recipes = ('[[recipe]]\nname = "default"\n\n[[recipe]]\nname = "per-tensor"\n'
               'profile = { quantization = { per_channel = false } }\n')
    sweep = sweep_file(work, "matrix", models, val=DIGITS / "val.npz", targets=TARGETS,
                       recipes=recipes)
    result: dict[str, Any] = {"jobs": 12, "workers": jobs, "wall_s": {}}
    docs = {}
    for name, args in (("serial", ("--executor", "serial")),
                       ("process", ("--executor", "process", "-j", str(jobs))),
                       ("ray", ("--executor", "ray", "-j", str(jobs)))):
        log(f"12-job sweep on {name}")
        wall, docs[name] = run_cli(sweep, work / f"out-{name}", *args)
        result["wall_s"][name] = round(wall, 1)
        result.setdefault("peak_rss_mib_max", {})[name] = round(max(
            j["peak_rss_bytes"] for j in docs[name]["jobs"]) / 2**20, 1)
    ok = all(d["counts"]["ok"] == 12 for d in docs.values())
    same = deterministic(docs["process"]) == deterministic(docs["serial"]) == \
        deterministic(docs["ray"])
    if not (ok and same):
        raise SystemExit(f"executors disagree (all ok: {ok}, same results: {same})")
    result["same_results"] = True
    result["byte_differences_vs_serial"] = {n: byte_differences(docs["serial"], docs[n])
                                            for n in ("process", "ray")}
    log("cached rerun")
    wall, doc = run_cli(sweep, work / "out-serial", "--executor", "serial")
    result["wall_s"]["cached_rerun"] = round(wall, 2)
    result["cached"] = doc["counts"]["cached"]
    return result


def bench_validation(work: Path, models: dict[str, Path], jobs: int, n_samples: int,
                     shard_size: int) -> dict[str, Any]:
    x, y = shifted_digits()
    x, y = x[:n_samples], y[:n_samples]
    val = work / "digits_shifted.npz"
    np.savez(val, input=x, labels=y)
    recipes = '[[recipe]]\nname = "default"\n'
    result: dict[str, Any] = {"samples": int(len(y)), "runs": {}}
    merged = {}
    for name, shards, args in (("serial", len(y), ("--executor", "serial")),
                               ("process", shard_size, ("--executor", "process", "-j",
                                                        str(jobs))),
                               ("ray", shard_size, ("--executor", "ray", "-j", str(jobs)))):
        sweep = sweep_file(work, f"val-{name}", {"cnn": models["cnn"]}, val=val,
                           targets=("arm-cpu",), recipes=recipes,
                           extra=f"[validation]\nshard_size = {shards}\n")
        out = work / f"val-out-{name}"
        log(f"validation of {len(y)} samples on {name} (shard size {shards})")
        wall, doc = run_cli(sweep, out, *args)
        [job] = doc["jobs"]
        v = json.loads((out / job["dir"] / "validation.json").read_text())
        merged[name] = [(a["path"].split("/")[-1], a["task"]["metrics"]["accuracy"]["quantized"],
                         a["drift"][0]["metrics"]["sqnr_db"]) for a in v["artifacts"]]
        result["runs"][name] = {
            "wall_s_including_convert": round(wall, 1), "convert_s": job["seconds"],
            "shards": len(v["shards"]),
            "shard_peak_rss_mib": [round(s["peak_rss_bytes"] / 2**20, 1) for s in v["shards"]
                                   if s.get("peak_rss_bytes")],
            "shard_seconds": [s["seconds"] for s in v["shards"]],
            "accuracy": {p: acc for p, acc, _ in merged[name]},
        }
    if not merged["serial"] == merged["process"] == merged["ray"]:
        raise SystemExit(f"sharded validation differs from one shard: {merged}")
    result["identical_to_one_shard"] = True
    return result


def markdown(doc: dict[str, Any]) -> str:
    m, v = doc["matrix"], doc["validation"]
    lines = [f"# Sweep benchmark ({doc['host']}, {doc['date']})", "",
             f"12 jobs (2 models x 3 targets x 2 recipes), {m['workers']} workers, one CLI run "
             "each (fresh `--out`), machine shared: one run each, compare ratios.", "",
             "| executor | wall s | vs serial | max job peak RSS MiB |", "|---|---|---|---|"]
    for name in ("serial", "process", "ray"):
        lines.append(f"| {name} | {m['wall_s'][name]} | "
                     f"{m['wall_s']['serial'] / m['wall_s'][name]:.2f}x | "
                     f"{m['peak_rss_mib_max'][name]} |")
    lines += [f"| cached rerun (serial) | {m['wall_s']['cached_rerun']} | — | — |", "",
              f"Same status, SQNR, cosine, top-1 agreement and accuracy on all three executors: "
              f"{m['same_results']}. Artifacts whose bytes differ from the serial run's: "
              f"{m['byte_differences_vs_serial']}.", "",
              f"Sharded validation: {v['samples']} samples, digits_cnn x arm-cpu "
              "(2 artifacts: tflite + onnx)", "",
              "| executor | shards | wall s (incl. convert) | convert s | shard s | "
              "shard peak RSS MiB |", "|---|---|---|---|---|---|"]
    for name, r in v["runs"].items():
        lines.append(f"| {name} | {r['shards']} | {r['wall_s_including_convert']} | "
                     f"{r['convert_s']:.1f} | {', '.join(f'{s:.1f}' for s in r['shard_seconds'])}"
                     f" | {', '.join(map(str, r['shard_peak_rss_mib']))} |")
    lines += ["", f"Merged metrics identical to one shard: {v['identical_to_one_shard']}; "
              f"accuracy {v['runs']['serial']['accuracy']}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.sweep", description=__doc__.split(
        "\n\n")[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--val-samples", type=int, default=24500)
    ap.add_argument("--shard-size", type=int, default=5000)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with tempfile.TemporaryDirectory(prefix="edgeopt-sweep-bench-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        models = write_inputs(work)
        import platform

        doc = {"schema": "edgeopt.bench.sweep/1", "host": platform.node(),
               "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
               "matrix": bench_matrix(work, models, args.jobs),
               "validation": bench_validation(work, models, args.jobs, args.val_samples,
                                              args.shard_size)}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{doc['date']}-{doc['host']}-sweep"
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(doc))
    print(json.dumps(doc, indent=2) if args.json else markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
