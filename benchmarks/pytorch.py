"""PyTorch models to all three targets through ONNX and onnx2tf:
``python -m benchmarks.pytorch [--models mobilenet_v2,resnet18,transformer] [--out DIR]``.

Needs torch + torchvision (x86_64: ``pip install torch==2.14.1 torchvision==0.29.1``, taken
from this host's disk) and scikit-learn (``pip install -e .[example]``: its two bundled photos
are the image data). Per model:

* torchvision architecture with ``weights=None`` (no download), BatchNorm running statistics
  settled on real image crops (train-mode forward passes, no weight update), ImageNet
  normalization, exported by ``torch.onnx.export`` (TorchScript exporter, dynamic batch);
* ``edgeopt convert`` for arm-cpu, edgetpu and mobile-gpu in one child process, timed (wall
  and CPU seconds) with its peak RSS from ``wait4`` — the child and, separately, the largest
  of its own children (the onnx2tf process);
* per artifact: float check (float TFLite vs ONNX Runtime), drift of the artifact vs the
  PyTorch model itself on held-out crops (cosine, top-1 agreement), Edge TPU / GPU pre-flight.

The transformer encoder (2 layers, d 128, 4 heads, 32 tokens) goes to mobile-gpu only.
Timings here are on a shared 2-core host: compare ratios within a run, not absolute times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("mobilenet_v2", "resnet18", "transformer")
IMAGE = 224
N_CALIB, N_VAL = 32, 16
MEAN = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
STD = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]


def crops(n: int, seed: int) -> np.ndarray:
    """``n`` normalized NCHW 224x224 crops (random scale, position, flip) of sklearn's photos."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(a) for a in load_sample_images().images]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = photos[i % len(photos)]
        side = int(rng.uniform(0.35, 1.0) * min(img.size))
        x0, y0 = rng.integers(0, img.size[0] - side + 1), rng.integers(0, img.size[1] - side + 1)
        crop = img.crop((x0, y0, x0 + side, y0 + side)).resize((IMAGE, IMAGE), Image.BILINEAR)
        a = np.asarray(crop, np.float32).transpose(2, 0, 1) / 255.0
        out.append(((a[:, :, ::-1] if rng.random() < 0.5 else a) - MEAN) / STD)
    return np.ascontiguousarray(np.stack(out).astype(np.float32))


def build(name: str, work: Path) -> dict[str, Any]:
    """Export one model to ``work/<name>.onnx`` with calibration / validation data."""
    import torch

    torch.manual_seed(0)
    if name == "transformer":
        layer = torch.nn.TransformerEncoderLayer(128, 4, 256, dropout=0.0, batch_first=True)
        model = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
        rng = np.random.default_rng(0)
        calib = rng.normal(0, 1, (N_CALIB, 32, 128)).astype(np.float32)
        val = rng.normal(0, 1, (N_VAL, 32, 128)).astype(np.float32)
        dynamic = {"input": {0: "batch_size"}, "output": {0: "batch_size"}}
    else:
        import torchvision

        model = getattr(torchvision.models, name)(weights=None)
        calib, val = crops(N_CALIB, 1), crops(N_VAL, 2)
        settle = crops(64, 3)
        model.train()
        with torch.no_grad():  # BatchNorm statistics from real crops, weights untouched
            for _ in range(3):
                for i in range(0, len(settle), 16):
                    model(torch.from_numpy(settle[i:i + 16]))
        model.eval()
        dynamic = {"input": {0: "batch_size"}, "output": {0: "batch_size"}}
    t0 = time.perf_counter()
    path = work / f"{name}.onnx"
    torch.onnx.export(model, torch.from_numpy(calib[:1]), str(path), input_names=["input"],
                      output_names=["output"], opset_version=17, dynamo=False,
                      dynamic_axes=dynamic)
    export_s = time.perf_counter() - t0
    with torch.no_grad():
        want = model(torch.from_numpy(val)).numpy()
    np.savez(work / f"{name}_calib.npz", input=calib)
    np.savez(work / f"{name}_val.npz", input=val)
    np.save(work / f"{name}_torch.npy", want)
    return {"export_s": round(export_s, 2), "onnx_bytes": path.stat().st_size,
            "torch": torch.__version__}


def convert(name: str, work: Path, targets: list[str]) -> dict[str, Any]:
    """``edgeopt convert`` in a child; wall / CPU seconds and peak RSS from ``wait4``."""
    code = (
        "import json, resource, sys, edgeopt\n"
        "from edgeopt_runtime.errors import EdgeOptError\n"
        "w, n = sys.argv[1], sys.argv[2]\n"
        "try:\n"
        "    edgeopt.convert(f'{w}/{n}.onnx', sys.argv[3].split(','), f'{w}/{n}_calib.npz',\n"
        "                    val=f'{w}/{n}_val.npz', out=f'{w}/out_{n}', force=True,\n"
        "                    latency_runs=20)\n"
        "    err = None\n"
        "except EdgeOptError as exc:\n"
        "    err = str(exc)\n"
        "kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "print(json.dumps({'error': err, 'children_peak_kib': kids}))\n"
    )
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, str(work), name, ",".join(targets)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    last = proc.stdout.read().strip().splitlines() if proc.stdout else []
    info = json.loads(last[-1]) if last else {"error": f"exit status {status}"}
    return {"targets": targets, "wall_s": round(wall, 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "onnx2tf_child_peak_rss_mib": round(info.get("children_peak_kib", 0) / 1024, 1),
            "error": info.get("error")}


def artifacts(name: str, work: Path) -> list[dict[str, Any]]:
    """Per artifact: float check, drift vs PyTorch on held-out data, pre-flight."""
    import edgeopt_runtime as rt

    report_path = work / f"out_{name}" / "report.json"
    if not report_path.is_file():
        return []
    report = json.loads(report_path.read_text())
    x = np.load(work / f"{name}_val.npz")["input"]
    want = np.load(work / f"{name}_torch.npy")
    rows = []
    for target in report["targets"]:
        for art in target["artifacts"]:
            model = rt.load(work / f"out_{name}" / target["name"], format=art["format"],
                            precision=art["precision"], threads=1)
            got = model.run_batch(x)["output"]
            cos = float(np.dot(got.ravel(), want.ravel())
                        / (np.linalg.norm(got) * np.linalg.norm(want)))
            row = {
                "target": target["name"], "file": art["file"], "size_bytes": art["size_bytes"],
                "cosine_vs_torch": round(cos, 5),
                "speedup_p50_vs_float": art["latency"]["speedup_p50"],
                "preflight": (art.get("preflight") or {}).get("summary", {}).get("verdict"),
                "conversion_s": art.get("conversion_seconds"),
            }
            if want.ndim == 2:
                row["top1_agree_vs_torch"] = float(np.mean(got.argmax(1) == want.argmax(1)))
            o2t = (art["details"] or {}).get("onnx2tf")
            if o2t:
                check = o2t["float_check"]["outputs"][0]
                row["float_check"] = {"max_abs_error": check["max_abs_error"],
                                      "cosine": check["cosine"]}
                row["maxpool_padding"] = o2t.get("maxpool_padding")
                row["ops"] = art["details"].get("ops")
            rows.append(row)
    return rows


def run(models: list[str], out: Path) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="edgeopt-bench-pytorch-"))
    doc: dict[str, Any] = {"schema": "edgeopt.bench-pytorch/1", "host": platform.node(),
                           "date": time.strftime("%Y-%m-%d"), "models": {}}
    for name in models:
        print(f"[pytorch] {name}: export", file=sys.stderr)
        entry = build(name, work)
        targets = ["mobile-gpu"] if name == "transformer" else ["arm-cpu", "edgetpu",
                                                                  "mobile-gpu"]
        print(f"[pytorch] {name}: convert {targets}", file=sys.stderr)
        entry["convert"] = convert(name, work, targets)
        entry["artifacts"] = artifacts(name, work)
        doc["models"][name] = entry
        print(json.dumps(entry["convert"]), file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{doc['date']}-pytorch"
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(doc))
    return doc


def markdown(doc: dict[str, Any]) -> str:
    lines = [f"# PyTorch -> edgeopt ({doc['date']}, {doc['host']})", "",
             "`python -m benchmarks.pytorch`; shared 2-core host, wall times inflated by other "
             "load (CPU seconds are the steadier number).", "",
             "| model | targets | convert wall s | CPU s | peak RSS MiB (convert / onnx2tf "
             "child) | error |", "|---|---|---|---|---|---|"]
    for name, m in doc["models"].items():
        c = m["convert"]
        lines.append(f"| {name} | {', '.join(c['targets'])} | {c['wall_s']} | {c['cpu_s']} | "
                     f"{c['peak_rss_mib']} / {c['onnx2tf_child_peak_rss_mib']} | "
                     f"{c['error'] or ''} |")
    lines += ["", "| model | artifact | size | cosine vs torch | top-1 agree | speedup vs "
              "float (host CPU) | float TFLite vs ONNX max abs | pre-flight |",
              "|---|---|---|---|---|---|---|---|"]
    for name, m in doc["models"].items():
        for a in m["artifacts"]:
            fc = a.get("float_check") or {}
            lines.append(
                f"| {name} | {a['target']}/{a['file']} | {a['size_bytes']} | "
                f"{a['cosine_vs_torch']} | {a.get('top1_agree_vs_torch', '')} | "
                f"{a['speedup_p50_vs_float']} | {fc.get('max_abs_error', '')} | "
                f"{a['preflight'] or ''} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pytorch")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r}; choose from {', '.join(MODELS)}")
    doc = run(models, args.out)
    failed = [n for n, m in doc["models"].items() if m["convert"]["error"]]
    return 1 if failed and "transformer" not in failed else 0


if __name__ == "__main__":
    sys.exit(main())
