"""Write a suite result: ``<date>-<host>.json`` (the document) and ``.md`` (tables).

Both files are written to a temporary name and renamed, so an interrupted run never leaves a
half-written result next to the good ones. The Markdown is rendered from the JSON document
alone (``render_markdown(json.load(...))`` reproduces it).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any


def result_stem(doc: dict[str, Any]) -> str:
    """``<YYYY-MM-DD>-<host>[-quick]`` from the document's creation time and hostname."""
    day = _dt.datetime.fromisoformat(doc["created"]).date().isoformat()
    host = re.sub(r"[^A-Za-z0-9_.-]+", "-", doc["host"].get("hostname") or "host")
    return f"{day}-{host}" + ("-quick" if doc["config"].get("quick") else "")


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write(doc: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` into ``out_dir``; return both paths."""
    stem = result_stem(doc)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    _atomic_write(json_path, json.dumps(doc, indent=1, allow_nan=False) + "\n")
    _atomic_write(md_path, render_markdown(doc))
    return json_path, md_path


# --------------------------------------------------------------------------- markdown


def _f(x: Any, digits: int = 2) -> str:
    if x is None:
        return "–"
    if isinstance(x, str):
        return x
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return f"{x:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines + [""]


def render_markdown(doc: dict[str, Any]) -> str:
    """The results as Markdown: host, checks, latency, drift, conversion cost, startup."""
    out: list[str] = []
    out += _header(doc)
    out += _checks(doc)
    out += _latency(doc)
    out += _xnnpack(doc)
    out += _op_profiles(doc)
    out += _conversion(doc)
    out += _overhead(doc)
    out += _host_peak(doc)
    return "\n".join(out)


def _header(doc: dict[str, Any]) -> list[str]:
    h, cfg, v = doc["host"], doc["config"], doc["versions"]
    plan = cfg["plan"]
    return [
        f"# edgeopt benchmarks — {doc['created']} on {h.get('hostname')}",
        "",
        f"{'Quick' if cfg['quick'] else 'Full'} run, {doc.get('duration_s', '?')} s. "
        f"Host: {h['model']} ({h['cores']} cores usable, {h['peak']['int8_instruction']}). "
        f"LiteRT {v.get('ai-edge-litert')}, ONNX Runtime {v.get('onnxruntime')}, "
        f"TensorFlow {v.get('tensorflow')}, Python {v.get('python')}.",
        "",
        f"Latency: {plan['rounds']} interleaved rounds, one block of ~{plan['block_s']} s per "
        "model per round (rotated order); speed-up = median over rounds of the within-round "
        "ratio float p50 / artifact p50, with the min–max of those ratios. Drift: "
        f"{cfg['drift_samples']} held-out seeded inputs vs the float model of the same format. "
        f"Calibration: {cfg['calib_samples']} seeded samples. Models have random (seeded) "
        "weights with BatchNorm statistics settled on one batch. Produced by "
        "`python -m benchmarks run" + (" --quick" if cfg["quick"] else "") + "`; the JSON "
        "next to this file has every number.",
        "",
    ]


def _checks(doc: dict[str, Any]) -> list[str]:
    rows = [[c["what"], c["target"], _f(c["measured"], 3), f"**{c['status']}**",
             c.get("evidence") or ""] for c in doc.get("checks", [])]
    return ["## Targets (issue 7)", ""] + _table(
        ["check", "target", "measured", "status", "evidence"], rows
    )


def _drift_cells(art: dict[str, Any] | None) -> list[str]:
    if art is None or not art.get("drift"):
        return ["–", "–"]
    d = art["drift"][0]  # first output; the JSON has all
    return [_f(d.get("sqnr_db"), 1), _f(d.get("cosine"), 4)]


def _latency(doc: dict[str, Any]) -> list[str]:
    rows = []
    for m in doc["models"]:
        arts = {a["id"]: a for a in m["artifacts"]}
        for g in m["latency"]:
            for key, r in g["results"].items():
                art = arts.get(key)
                sp, cpu = r["speedup"], r.get("cpu_speedup")
                rows.append([
                    m["name"], g["format"], str(g["threads"]),
                    key.split("/", 1)[1],
                    _f(r["p50_ms"], 3), _f(r["p90_ms"], 3),
                    "1 (ref)" if sp is None else
                    f"**{sp['speedup']:.2f}x** ({sp['spread'][0]:.2f}–{sp['spread'][1]:.2f})",
                    "–" if not cpu else f"{cpu['speedup']:.2f}x",
                    "1" if art is None else _f(art["size_ratio"], 3),
                    *_drift_cells(art),
                    _f(r["roof"]["gmacs"], 1),
                    f"{_f(r['roof']['pct_of_peak'], 1)} % {r['roof']['peak_kind']}",
                ])
    macs = ", ".join(f"{m['name']} {m['macs']['gmac']:.3f}" for m in doc["models"])
    return ["## Latency, size and drift per model × format × threads", "",
            f"GMACs per inference: {macs}. Roof: achieved GMAC/s (MACs / p50) against the host's "
            "peak for the model's arithmetic (int8 or fp32) × threads (see the end of this page). "
            "CPU-time speed-up (1 thread only): the same ratio on each call's CPU time on the "
            "calling thread, which leaves out time-slices taken by other processes.", ""] + _table(
        ["model", "format", "threads", "artifact (targets)", "p50 ms", "p90 ms",
         "speed-up vs float", "CPU-time speed-up", "size ratio", "SQNR dB", "cosine", "GMAC/s",
         "roof"], rows
    )


def _xnnpack(doc: dict[str, Any]) -> list[str]:
    rows = []
    for m in doc["models"]:
        entries = [("float32", m["float"].get("tflite", {}).get("xnnpack"), None)]
        entries += [(a["id"].split("/", 1)[1], a.get("xnnpack"), a) for a in m["artifacts"]
                    if a["format"] == "tflite"]
        for name, x, art in entries:
            if not x:
                continue
            if "error" in x:
                rows.append([m["name"], name, "–", x["error"], "–"])
                continue
            outside = ", ".join(f"{k} {v}" for k, v in x["outside"].items()) or "none"
            float_ops = ", ".join(f"{k} {v}" for k, v in (art or {}).get("float_ops", {}).items())
            rows.append([m["name"], name, str(x["partitions"]),
                         f"{sum(x['outside'].values())}/{x['ops_total']}: {outside}",
                         "–" if art is None or art["precision"] != "int8" else float_ops or "none"])
    return ["## TFLite: XNNPACK placement and float ops", "",
            "Measured with edgeopt.inspect.xnnpack (LiteRT's DELEGATE nodes mapped back to the "
            "ops they replaced). Every partition boundary hands tensors between XNNPACK and "
            "TFLite's built-in kernels; ops outside XNNPACK run on the slower built-in kernels. "
            "Float ops in int8 models: as the converter reported them (kept float between "
            "DEQUANTIZE/QUANTIZE).", ""] + _table(
        ["model", "artifact", "XNNPACK partitions", "ops outside XNNPACK", "float ops (int8)"],
        rows)


def _op_profiles(doc: dict[str, Any]) -> list[str]:
    out = ["## Where the time goes: ONNX Runtime per-op class, float vs int8 (arm-cpu), 1 thread",
           "", "Median kernel time per run of each op class, from profiling traces of the two "
           "models run alternately (benchmarks/opprofile.py). A class with a speed-up below the "
           "model's is what holds int8 back. LiteRT exposes no per-op time from Python.", ""]
    for m in doc["models"]:
        prof = m.get("onnx_op_profile")
        if not prof:
            continue
        rows = [[c["class"], str(c["nodes"]), _f(c["float_ms"], 3), _f(c["int8_ms"], 3),
                 "–" if c["speedup"] is None else f"{c['speedup']:.2f}x",
                 f"{100 * c['int8_share']:.1f} %"]
                for c in prof["classes"] if c["int8_ms"] >= 0.001 or c["float_ms"] >= 0.001]
        out.append(f"**{m['name']}**: profiled run {prof['float_run_ms']:.3f} ms float, "
                   f"{prof['int8_run_ms']:.3f} ms int8.")
        out.append("")
        out += _table(["op class", "int8 nodes", "float ms", "int8 ms", "speed-up",
                       "share of int8"], rows)
    return out


def _stage_cell(stage: dict[str, Any] | None) -> str:
    if not stage:
        return "–"
    growth = stage.get("growth_mib")
    extra = "" if growth is None else f" (+{growth:.0f})"
    return f"{_f(stage.get('seconds'), 1)} s / {_f(stage.get('peak_rss_mib'), 0)} MiB{extra}"


_STAGES = ("load", "data_check", "calibrate", "convert", "validate")


def _conversion(doc: dict[str, Any]) -> list[str]:
    rows = []
    for m in doc["models"]:
        c = m["conversion"]
        rows.append([f"**{m['name']}**", "all", _f(c["wall_s"], 1), _f(c["peak_rss_mib"], 0),
                     *[_stage_cell(c["stages"].get(s)) for s in _STAGES]])
        for target, st in c["per_target"].items():
            refused = [f"{k}: {v[:160]}…" if len(v) > 160 else f"{k}: {v}"
                       for k, v in c.get("refused", {}).items() if k.split(" ")[0] == target]
            cells = [_stage_cell(st.get(s)) for s in _STAGES]
            if refused:
                cells[-1] += " — **refused** " + "; ".join(refused)
            rows.append(["", target, _f(st["total"]["seconds"], 1),
                         _f(st["total"]["peak_rss_mib"], 0), *cells])
    return ["## Conversion cost (edgeopt.convert, one call per target, fresh process per model)",
            "", "Wall time / peak RSS per stage. The first target's `load` includes importing "
            "TensorFlow (later targets reuse it, as one `edgeopt convert --target a --target b` "
            "run would); `calibrate` is "
            "the converter running the float model over the calibration samples; `convert` the "
            "rest of each build; `validate` edgeopt's own drift + latency check of each "
            "artifact. Peak RSS: the process's kernel VmHWM, reset at every stage boundary; "
            "(+N) is how far the stage rose above the RSS it started with — later targets start "
            "with what earlier ones left allocated.", ""] + _table(
        ["model", "target", "wall s", "peak RSS MiB", "load", "data check", "calibrate",
         "convert", "validate"], rows
    )


def _overhead(doc: dict[str, Any]) -> list[str]:
    out = ["## Runtime wrapper overhead and startup", "",
           "`Model.run` vs the raw interpreter / session loop on the same loaded model, 1 thread, "
           "call pairs in rounds (benchmarks/runtime_overhead.py); A/A noise: the same "
           "measurement of the raw loop against itself. Both sides get the same input; for "
           "integer-IO files (Edge TPU: uint8) the extra cost of passing a float input that "
           "`Model.run` quantizes is the last column (work the raw loop does not do).", ""]
    rows = []
    for m in doc["models"]:
        for key, o in (m.get("overhead") or {}).items():
            spread = o.get("per_round_overhead_us") or [0.0]
            rows.append([m["name"], key, _f(o.get("raw_us"), 1), _f(o.get("wrapper_us"), 1),
                         _f(o.get("overhead_us"), 2),
                         f"{min(spread):.1f}..{max(spread):.1f}", _f(o.get("overhead_pct"), 2),
                         _f(o.get("noise_floor_us"), 2), o.get("clock", "–"),
                         _f(o.get("io_quantization_us"), 1)])
    if rows:
        out += _table(["model", "file", "raw µs", "Model.run µs", "overhead µs",
                       "per-round µs", "overhead %", "A/A noise µs", "clock",
                       "float-input quantization µs"], rows)
    st = doc.get("startup") or {}
    imp, hlp = st.get("import_edgeopt_runtime"), st.get("edgeopt_help")
    if imp:
        out += _table(["fresh process", "time ms", "RSS after, MiB"], [
            ["python (baseline)", "–", _f(imp["rss_python_mib"], 1)],
            ["import edgeopt_runtime", _f(imp["import_ms"], 1), _f(imp["rss_after_import_mib"], 1)],
            ["+ LiteRT interpreter module", _f(imp["litert_import_ms"], 1),
             _f(imp["rss_after_litert_mib"], 1)],
            ["+ onnxruntime", _f(imp["ort_import_ms"], 1), _f(imp["rss_after_ort_mib"], 1)],
        ])
    if hlp:
        out.append(f"`edgeopt --help`: {_f(hlp.get('wall_ms'), 0)} ms wall, of which "
                   f"{_f(hlp.get('python_startup_ms'), 0)} ms is the bare interpreter start "
                   f"({hlp.get('method')}).")
    return out + [""]


def _host_peak(doc: dict[str, Any]) -> list[str]:
    p = doc["host"]["peak"]
    probe = p.get("probe") or {}
    lines = [
        "## Host compute roof", "",
        f"- CPU: {doc['host']['model']}, SIMD flags: {' '.join(doc['host']['simd_flags'])}",
        f"- Clock {p['clock_ghz']} GHz ({p['clock_source']})",
        f"- Micro-architecture: {p['table_entry']} ({p['table_match']}): {p['derivation']}",
        f"- fp32: {p['fp32_macs_per_cycle']} MACs/cycle ({p['fp32_macs_per_cycle_source']}) "
        f"= **{p['fp32_gmacs_per_core']} GMAC/s per core**",
        f"- int8: {p['int8_macs_per_cycle']} MACs/cycle ({p['int8_macs_per_cycle_source']}) "
        f"= **{p['int8_gmacs_per_core']} GMAC/s per core**",
    ]
    if probe:
        lines.append("- Probe (benchmarks/peak_probe.c): " + ", ".join(
            f"{k} {v}" for k, v in probe.items()))
    lines += [f"- {a}" for a in p["assumptions"]]
    return lines + [""]
