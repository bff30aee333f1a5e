"""Compression benchmark: real trained digits classifiers through ``edgeopt compress``.

``python -m benchmarks.compression [--quick] [--out DIR]`` writes
``results/compression-<date>.{json,md}``. Needs scikit-learn (``pip install ".[example]"``) for
the 1,797 UCI digits it ships (no download); the split is the bundled example's
(``scripts/make_example.py``): 1,297 training digits, ``calibration_data/digits/val.npz`` (300
held-out digits) for every accuracy number.

Cases (each compressed model and its original go through ``edgeopt.convert`` for arm-cpu
TFLite; sizes, int8 latency — thread CPU time, 1 thread, the two models interleaved — and
accuracy come from ``edgeopt compress``'s own report):

1. ``prune50_cluster16_distill``: the bundled ``examples/digits_cnn.keras``, 50 % magnitude
   pruning + 16 shared values per kernel, distilled (and the same without distillation).
   Targets: accuracy within 1 point of float, gzip'd int8 TFLite >= 30 % smaller.
2. ``channels30``: a wider digits CNN trained here (32-64-64 filters), 30 % of the filters
   removed (L1), fine-tuned with distillation. Target: int8 latency faster than the original.
3. ``criteria``: L1 / L2 / first-order Taylor ranking for 30 / 50 / 70 % channel pruning of the
   wide CNN, accuracy before fine-tuning (one shot), and at 50 % after fine-tuning.
4. ``qat``: the bundled model made to lose accuracy under PTQ by a function-preserving change
   (conv1's filter 0 scaled 100x, conv2's matching input channel / 100: the same float
   function, but one activation channel 100x larger sets the per-tensor int8 range); then
   ``--qat``. Target: QAT int8 accuracy above the PTQ int8 accuracy.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
VAL = ROOT / "calibration_data" / "digits" / "val.npz"
EXAMPLE = ROOT / "examples" / "digits_cnn.keras"


def _say(msg: str) -> None:
    print(f"[compression] {msg}", file=sys.stderr, flush=True)


def _make_example() -> Any:
    spec = importlib.util.spec_from_file_location("make_example", ROOT / "scripts" /
                                                  "make_example.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def training_npz(work: Path) -> Path:
    """The bundled example's 1,297 training digits with labels."""
    import numpy as np

    mk = _make_example()
    images, labels = mk.load_digits_16x16()
    _calib, _val, rest = mk.split(len(images), mk.SEED)
    path = work / "digits_train.npz"
    np.savez(path, input=mk.to_input(images[rest]), labels=labels[rest])
    return path


def wide_cnn(train: Path, work: Path, epochs: int) -> Path:
    """A wider digits CNN (more filters: channel pruning has something to remove)."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 1), name="input")
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1")(inp)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv3")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(64, activation="relu", name="fc")(x)
    out = keras.layers.Dense(10, activation="softmax", name="probs")(x)
    model = keras.Model(inp, out, name="digits_wide")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    with np.load(train) as d:
        model.fit(d["input"], d["labels"], batch_size=32, epochs=epochs, verbose=0)
    path = work / "digits_wide.keras"
    model.save(path)
    return path


def outlier_model(work: Path, factor: float = 100.0) -> Path:
    """The bundled model with one activation channel ``factor`` x larger (same function)."""
    import keras

    m = keras.models.load_model(EXAMPLE, compile=False)
    c1, c2 = m.get_layer("conv1"), m.get_layer("conv2")
    w1, w2 = c1.get_weights(), c2.get_weights()
    w1[0][..., 0] *= factor
    w1[1][0] *= factor
    w2[0][:, :, 0, :] /= factor
    c1.set_weights(w1)
    c2.set_weights(w2)
    path = work / "digits_outlier.keras"
    m.save(path)
    return path


def _compress(model: Path, train: Path, out: Path, measure: bool = True, **kw: Any
              ) -> dict[str, Any]:
    from edgeopt.compress import CompressOptions, compress

    ablation = kw.pop("ablation", True)
    t0 = time.perf_counter()
    report = compress(model, train, CompressOptions(**kw), val=VAL, out=out, force=True,
                      targets=["arm-cpu"], formats="tflite", measure_gains=measure,
                      ablation=ablation, progress=_say)
    data = report.data
    data["_seconds"] = round(time.perf_counter() - t0, 1)
    return data


def _row(name: str, data: dict[str, Any]) -> dict[str, Any]:
    arts = (data.get("measured") or {}).get("artifacts") or [{}]
    a = arts[0]
    acc = a.get("accuracy") or {}
    size = a.get("size") or {}
    lat = a.get("latency") or {}
    return {
        "case": name,
        "steps": data["settings"]["steps"],
        "epochs": data["settings"]["epochs"],
        "params": [data["before"]["parameters"]["total"], data["after"]["parameters"]["total"]],
        "nonzero": [data["before"]["parameters"]["nonzero"],
                    data["after"]["parameters"]["nonzero"]],
        "macs": [data["before"]["macs"]["total"], data["after"]["macs"]["total"]],
        "float_accuracy": [data["before"]["accuracy"], data["after"]["accuracy"]],
        "int8_accuracy": [acc.get("before"), acc.get("after")],
        "int8_accuracy_without_distillation": acc.get("after_without_distillation"),
        "tflite_int8_bytes": [size.get("raw", {}).get("before"), size.get("raw", {}).get("after")],
        "gzip": size.get("gzip"), "zstd": size.get("zstd"),
        "int8_speedup_cpu": lat.get("speedup_cpu"), "int8_speedup_wall": lat.get("speedup_wall"),
        "int8_cpu_ms": [lat.get("before", {}).get("cpu_p50_ms"),
                        lat.get("after", {}).get("cpu_p50_ms")],
        "seconds": data["_seconds"],
    }


def run(out_dir: Path, quick: bool) -> dict[str, Any]:
    epochs = 3 if quick else 8
    results: dict[str, Any] = {"created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                               "quick": quick, "cases": [], "checks": {}}
    with tempfile.TemporaryDirectory(prefix="edgeopt-bench-compress-") as tmp:
        work = Path(tmp)
        train = training_npz(work)
        _say("case 1: bundled example, 50 % pruning + 16 clusters + distillation")
        d1 = _compress(EXAMPLE, train, work / "c1", prune=0.5, cluster=16, distill=True,
                       epochs=epochs)
        r1 = _row("prune50_cluster16_distill", d1)
        r1["sparsity_preflight"] = d1.get("sparsity_preflight", {}).get("verdict")
        results["cases"].append(r1)
        _say("case 2: wide CNN, 30 % channel pruning + distillation")
        wide = wide_cnn(train, work, epochs=10 if quick else 20)
        d2 = _compress(wide, train, work / "c2", prune_channels=0.3, distill=True,
                       epochs=epochs, ablation=False)
        r2 = _row("channels30", d2)
        results["cases"].append(r2)
        _say("case 3: channel-ranking criteria (30 / 50 / 70 %, one shot; 50 % fine-tuned)")
        crit: dict[str, Any] = {}
        for c in ("l1", "l2", "taylor"):
            crit[c] = {}
            for frac in (0.3, 0.5, 0.7):
                one = _compress(wide, train, work / f"k{c}{frac}", measure=False,
                                prune_channels=frac, criterion=c, epochs=0)
                crit[c][f"one_shot_{frac}"] = one["after"]["accuracy"]
                crit[c]["float"] = one["before"]["accuracy"]
            tuned = _compress(wide, train, work / f"k{c}t", measure=False, prune_channels=0.5,
                              criterion=c, epochs=max(1, epochs // 2))
            crit[c]["fine_tuned_0.5"] = tuned["after"]["accuracy"]
        results["criteria"] = crit
        _say("case 4: QAT on a model built to lose accuracy under PTQ")
        d4 = _compress(outlier_model(work), train, work / "c4", qat=True,
                       epochs=5 if quick else 15)
        r4 = _row("qat_outlier", d4)
        results["cases"].append(r4)
    acc_f, acc_c = r1["float_accuracy"][0], r1["int8_accuracy"][1]
    results["checks"] = {
        "prune+cluster+distill int8 accuracy within 1 point of float": bool(
            acc_c is not None and acc_f - acc_c <= 0.01 + 1e-9),
        "prune+cluster gzip int8 tflite >= 30 % smaller": bool(
            (r1["gzip"] or {}).get("reduction", 0) >= 0.30),
        "channel pruning int8 latency faster (thread CPU, interleaved)": bool(
            (r2["int8_speedup_cpu"] or 0) > 1.0),
        "QAT int8 accuracy above PTQ int8 accuracy": bool(
            r4["int8_accuracy"][1] is not None and r4["int8_accuracy"][0] is not None
            and r4["int8_accuracy"][1] > r4["int8_accuracy"][0]),
    }
    results["host"] = _host()
    _write(results, out_dir)
    return results


def _host() -> dict[str, Any]:
    from edgeopt.compress.sparsity import host_sparse_path
    from edgeopt.results import host_info, tool_versions

    return {**host_info(), "tools": tool_versions(), "xnnpack_sparse": host_sparse_path()}


def _pct(v: Any) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def _change(reduction: Any) -> str:
    return "—" if reduction is None else f"{-100 * reduction:+.1f}%"


def render(results: dict[str, Any]) -> str:
    quick = ", quick" if results["quick"] else ""
    lines = [f"# Compression benchmark ({results['created']}{quick})",
             "", "Digits (UCI via scikit-learn), 1,297 training / 300 held-out; arm-cpu int8 "
             "TFLite through `edgeopt convert`; latency = thread CPU time, 1 thread, original "
             "and compressed int8 interleaved, this host (not an ARM device).", "",
             "| case | steps | params (non-zero) | MACs | float acc | int8 acc | int8 acc w/o KD "
             "| int8 TFLite | gzip | zstd | int8 speedup (CPU) | s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["cases"]:
        gz, zs = r["gzip"] or {}, r["zstd"] or {}
        lines.append(
            f"| {r['case']} | {', '.join(r['steps'])} ({r['epochs']} ep) | "
            f"{r['params'][0]} -> {r['params'][1]} ({r['nonzero'][1]}) | "
            f"{r['macs'][0]} -> {r['macs'][1]} | {_pct(r['float_accuracy'][0])} -> "
            f"{_pct(r['float_accuracy'][1])} | {_pct(r['int8_accuracy'][0])} -> "
            f"{_pct(r['int8_accuracy'][1])} | {_pct(r['int8_accuracy_without_distillation'])} | "
            f"{r['tflite_int8_bytes'][0]} -> {r['tflite_int8_bytes'][1]} B | "
            f"{gz.get('before')} -> {gz.get('after')} B ({_change(gz.get('reduction'))}) | "
            f"{zs.get('before')} -> {zs.get('after')} B ({_change(zs.get('reduction'))}) | "
            f"{r['int8_speedup_cpu']}x | {r['seconds']} |")
    lines += ["", "Channel-ranking criteria on the wide CNN (held-out float accuracy after "
              "removing the fraction of filters per layer; one shot = no fine-tuning):", "",
              "| criterion | float | one shot 30 % | one shot 50 % | one shot 70 % | "
              "50 % fine-tuned |", "|---|---|---|---|---|---|"]
    for c, v in (results.get("criteria") or {}).items():
        lines.append(f"| {c} | {_pct(v.get('float'))} | {_pct(v.get('one_shot_0.3'))} | "
                     f"{_pct(v.get('one_shot_0.5'))} | {_pct(v.get('one_shot_0.7'))} | "
                     f"{_pct(v.get('fine_tuned_0.5'))} |")
    lines += ["", "Checks:", ""]
    lines += [f"- [{'x' if ok else ' '}] {name}" for name, ok in results["checks"].items()]
    pre = next((r.get("sparsity_preflight") for r in results["cases"]
                if r.get("sparsity_preflight")), None)
    if pre:
        lines += ["", f"Sparsity pre-flight (case 1): {pre}"]
    return "\n".join(lines) + "\n"


def _write(results: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"compression-{results['created'][:10]}{'-quick' if results['quick'] else ''}"
    (out_dir / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out_dir / f"{stem}.md").write_text(render(results))
    _say(f"wrote {out_dir / stem}.json and .md")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.compression",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer epochs (~5 min)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    results = run(args.out, args.quick)
    print(render(results))
    return 0 if all(results["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
