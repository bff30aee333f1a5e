"""The few lines a command prints on the terminal about its report (the files hold the rest)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from .format import fmt, pct, pts
from .sections import evaluations

_INDENT = "    "


def print_summary(report: Mapping[str, Any], file: Any = sys.stdout) -> None:
    """Compare: task metrics, every output's drift, the worst layer."""
    for title, sec in evaluations(report):
        acc = ((sec["task"] or {}).get("metrics") or {}).get("accuracy")
        if acc:
            ci = (f" (95% CI of drop [{pts(acc['ci_low'])}, {pts(acc['ci_high'])}])"
                  if "ci_low" in acc else "")
            print(f"{title}: accuracy float {pct(acc['float'])}, quantized "
                  f"{pct(acc['quantized'])}, drop {pts(acc['drop'])}{ci}", file=file)
        for o in sec["drift"]:
            m = o["metrics"]
            extra = (f", top-1 agreement {pct(m.get('top1_agreement'))}"
                     if o.get("kind") in (None, "classifier") else
                     f", NN agreement {pct(m.get('retrieval_top1_agreement'))}"
                     if o.get("kind") == "embedding" else "")
            print(f"{title}: output {o['name']} ({o.get('kind') or '?'}): SQNR "
                  f"{fmt(m.get('sqnr_db'))} dB, cosine mean "
                  f"{fmt(m.get('cosine_mean', m.get('cosine')), 6)} / worst sample "
                  f"{fmt(m.get('cosine_min'), 6)}{extra}", file=file)
            if o.get("degenerate"):
                print(f"{title}: output {o['name']}: DEGENERATE REFERENCE: {o['degenerate']}",
                      file=file)
        pl = sec["per_layer"]
        if pl["available"] and pl["layers"]:
            w = pl["layers"][0]
            print(f"{title}: worst layer {w.get('layer') or w.get('tensor')} ({w.get('op')}): "
                  f"own SQNR {fmt(w.get('sqnr_db'))} dB"
                  + (f", keep-float gain {fmt(w.get('gain_db'))} dB" if w.get("gain_db")
                     is not None else "") + f"; {w.get('suggestion') or ''}", file=file)
        else:
            print(f"{title}: per-layer: not available ({pl['reason']})", file=file)


def convert_summary_lines(report: Mapping[str, Any]) -> list[str]:
    """Convert: one line per artifact (size ratio, p50 speedup, SQNR / cosine of the first
    output) with its accelerator lines, one per failed target."""
    lines = []
    if report["synthetic_calibration"]:
        lines.append("WARNING: calibrated on SYNTHETIC data (--allow-synthetic); do not ship")
    for t in report["targets"]:
        failures = t.get("failures") or []
        if t["status"] != "ok" and not failures and not t["artifacts"]:
            lines.append(f"{t['name']}: {t['status'].upper()} ({t['error_type']}): {t['error']}")
        for f in failures:
            lines.append(f"{t['name']}/{f['file']}: {f['status'].upper()} ({f['error_type']}): "
                         f"{f['error']}")
        for a in t["artifacts"]:
            lat = a["latency"]
            first = a["drift"][0]["metrics"] if a["drift"] else {}
            quant_ms, float_ms = lat["candidate"]["p50_ms"], lat["reference"]["p50_ms"]
            lines.append(
                f"{a['path']}: {a['size_bytes']} bytes ({a['size_ratio']:.2f}x float), "
                f"p50 {quant_ms:.3g} ms vs float {float_ms:.3g} ms ({lat['speedup_p50']:.2f}x), "
                f"SQNR {first.get('sqnr_db', float('nan')):.1f} dB, "
                f"cosine mean {first.get('cosine_mean', first.get('cosine', float('nan'))):.5f}"
                f" / worst sample {first.get('cosine_min', float('nan')):.5f}"
            )
            pl = a.get("per_layer") or {}
            if pl.get("available") and pl.get("layers"):
                w = pl["layers"][0]
                lines.append(f"{_INDENT}worst layer: {w.get('layer') or w.get('tensor')} "
                             f"({w.get('op')}): {w.get('suggestion') or ''}")
            mem = memory_line(a.get("memory"))
            lines += [_INDENT + mem] if mem else []
            lines += [_INDENT + line for line in accelerator_lines(a)]
        lines += [f"{t['name']}: skipped {s}" for s in t["skipped"]]
    return lines


def memory_line(mem: Mapping[str, Any] | None) -> str | None:
    """``memory: peak working set 2.1 MiB (1.8 MiB after load) ...`` of one artifact."""
    if not mem:
        return None
    if mem.get("peak_working_set_bytes") is None:
        return f"memory: not measured ({mem.get('error')})"
    after = mem.get("after_load_bytes")
    kept = f", {after / 2**20:.1f} MiB held after load" if after is not None else ""
    return (f"memory: peak working set {mem['peak_working_set_bytes'] / 2**20:.1f} MiB{kept} "
            "(edgeopt_runtime in a fresh process, this host)")


def accelerator_lines(art: Mapping[str, Any]) -> list[str]:
    """The pre-flight verdict, the post-build step's result and host-CPU timing notes."""
    from edgeopt.accelerators import post_build_steps

    lines = []
    verdict = (art["preflight"].get("summary") or {}).get("verdict")
    if verdict:
        lines.append(f"pre-flight: {verdict}")
    for step in post_build_steps():
        if step.key in art:
            lines += step.summary_lines(art[step.key])
    return lines + list(art["runtime"]["notes"])
