"""The issue's targets for the defaults, checked against one results document.

Every check reads numbers from the same run's document (never from a constant), and says
``"not run"`` when the run did not include what it needs (e.g. ``--models tiny_cnn``).
"""

from __future__ import annotations

from typing import Any

# (id, what, threshold, comparison, unit)
SPEEDUP_MIN = 2.0
OVERHEAD_TINY_US_MAX = 10.0
OVERHEAD_MOBILENET_PCT_MAX = 2.0
IMPORT_S_MAX = 0.3
IMPORT_MIB_MAX = 80.0


def _check(cid: str, what: str, target: str, measured: float | None, ok: bool | None,
           evidence: str = "") -> dict[str, Any]:
    status = "not run" if ok is None else ("pass" if ok else "FAIL")
    return {"id": cid, "what": what, "target": target, "measured": measured, "status": status,
            "evidence": evidence}


def _model(doc: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((m for m in doc.get("models", []) if m["name"] == name), None)


def find_speedup(doc: dict[str, Any], model: str, fmt: str, target: str, precision: str,
                 threads: int = 1) -> tuple[float | None, dict[str, Any] | None]:
    """Speed-up vs float of ``target``'s ``precision`` artifact, and its latency entry."""
    m = _model(doc, model)
    if m is None:
        return None, None
    for group in m.get("latency", []):
        if group["format"] != fmt or group["threads"] != threads:
            continue
        for key, r in group["results"].items():
            art = next((a for a in m["artifacts"] if a["id"] == key), None)
            if art and target in art["targets"] and art["precision"] == precision:
                return r["speedup"]["speedup"], r
    return None, None


def _speedup_check(doc: dict[str, Any], fmt: str) -> dict[str, Any]:
    """The 1-thread int8 speed-up on MobileNetV2, on thread CPU time when it was recorded.

    Why CPU time: on a shared machine a call is preempted in proportion to its length and in
    whole time slices, so the longer float call loses more wall time than the int8 one and the
    wall-clock ratio is biased upwards (measured here: 2.6-2.8x on wall vs 2.1x on CPU time in
    one run, where a quiet host gives 2.15x). With 1 thread the engine computes on the calling
    thread, so its CPU time is the latency an idle device would see. Wall time is in the
    evidence.
    """
    value, entry = find_speedup(doc, "mobilenet_v2", fmt, "arm-cpu", "int8")
    what = f"{fmt} int8 (arm-cpu) vs float32, MobileNetV2-224, 1 thread"
    evidence = ""
    if entry is not None:
        sp, cpu = entry["speedup"], entry.get("cpu_speedup")
        if cpu:
            value = cpu["speedup"]
            evidence = (f"thread CPU time, median of {len(cpu['per_round'])} within-round ratios "
                        f"(spread {cpu['spread'][0]}-{cpu['spread'][1]}); ")
        evidence += (f"wall clock {sp['speedup']}x (spread {sp['spread'][0]}-{sp['spread'][1]})"
                     f"; int8 p50 {entry['p50_ms']} ms")
    ok = None if value is None else value >= SPEEDUP_MIN
    return _check(f"{fmt}-int8-speedup", what, f">= {SPEEDUP_MIN}x", value, ok, evidence)


def _worst_overhead(doc: dict[str, Any], model: str, key: str
                    ) -> tuple[float | None, str]:
    """Largest overhead ``key`` over every model file of ``model`` and which file it was.

    Model.run and the raw loop get the same input; for integer-IO files the float -> int input
    conversion Model.run offers callers is reported beside it (``io_quantization_us``)."""
    m = _model(doc, model)
    if m is None or not m.get("overhead"):
        return None, ""
    rows = m["overhead"]
    int_io = {a["id"] for a in m["artifacts"] if a.get("io_dtype") in ("int8", "uint8")}
    worst = max(rows, key=lambda k: rows[k][key])
    r = rows[worst]
    evidence = (f"worst of {len(rows)} files: {worst}{' (integer IO)' if worst in int_io else ''}"
                f" (raw {r['raw_us']:.1f} µs, Model.run {r['wrapper_us']:.1f} µs, median of "
                f"{r['rounds']} rounds)")
    quant = {k: rows[k]["io_quantization_us"] for k in rows
             if rows[k].get("io_quantization_us") is not None}
    if quant:
        k = max(quant, key=quant.get)
        evidence += (f"; float feeds to integer-IO files additionally cost up to {quant[k]:.1f} µs"
                     f" of input quantization ({k}), work the raw loop does not do")
    return r[key], evidence


def evaluate(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """All checks, in the issue's order."""
    checks = [_speedup_check(doc, "tflite"), _speedup_check(doc, "onnx")]
    tiny, ev = _worst_overhead(doc, "tiny_cnn", "overhead_us")
    checks.append(_check(
        "overhead-tiny", "runtime wrapper overhead per call, tiny CNN (1 thread)",
        f"<= {OVERHEAD_TINY_US_MAX} µs", tiny,
        None if tiny is None else tiny <= OVERHEAD_TINY_US_MAX, ev,
    ))
    mnv2, ev = _worst_overhead(doc, "mobilenet_v2", "overhead_pct")
    checks.append(_check(
        "overhead-mobilenet_v2", "runtime wrapper overhead, MobileNetV2 (1 thread)",
        f"<= {OVERHEAD_MOBILENET_PCT_MAX} %", mnv2,
        None if mnv2 is None else mnv2 <= OVERHEAD_MOBILENET_PCT_MAX, ev,
    ))
    checks.extend(_startup_checks(doc.get("startup") or {}))
    return checks


def _startup_checks(startup: dict[str, Any]) -> list[dict[str, Any]]:
    imp = startup.get("import_edgeopt_runtime") or {}
    ms, mib = imp.get("import_ms"), imp.get("rss_after_import_mib")
    s = None if ms is None else round(ms / 1e3, 4)
    how = f"median of {imp.get('repeats')} fresh processes" if imp else ""
    return [
        _check("import-time", "import edgeopt_runtime (fresh process)", f"< {IMPORT_S_MAX} s", s,
               None if s is None else s < IMPORT_S_MAX, how),
        _check("import-rss", "RSS after import edgeopt_runtime (whole process)",
               f"< {IMPORT_MIB_MAX} MiB", mib, None if mib is None else mib < IMPORT_MIB_MAX,
               how + (f"; + LiteRT {imp.get('rss_after_litert_mib')} MiB, + ORT "
                      f"{imp.get('rss_after_ort_mib')} MiB" if imp else "")),
    ]
