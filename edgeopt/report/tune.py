"""The Tuning section of a convert report made by ``edgeopt tune`` / ``convert --auto``.

Per search (target x format, ``targets[].tune``): a verdict (budget met / NOT MET /
interrupted, the chosen candidate and why, evaluations and wall time), a Pareto plot of every
candidate (accuracy metric over latency, inline SVG; the budget as a dashed line, the chosen
candidate ringed) and a table of every candidate tried (recipe, float layers, per-sample
accuracy, speed-up, size, partitions).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from .blocks import Block, Bullets, Heading, Plots, Verdict, table
from .format import fmt, fmt_bytes, speedup
from .svg import plot_frame

_COLUMNS = ["#", "step", "recipe", "float layers", "budget metric", "cos min", "cos p5",
            "cos mean", "SQNR min dB", "drop pts", "speedup", "latency ms", "size",
            "partitions", "result"]
_TITLE = {"met": "budget met", "not-met": "BUDGET NOT MET", "limit": "BUDGET NOT MET",
          "interrupted": "INTERRUPTED — best found so far"}


def tune_blocks(report: Mapping[str, Any]) -> list[Block]:
    """Every search of the report (none for a plain convert)."""
    out: list[Block] = []
    for t in report.get("targets") or []:
        for rec in t.get("tune") or []:
            out += search_blocks(f"{t['name']} / {rec['format']}", rec)
    return out


def search_blocks(title: str, rec: Mapping[str, Any]) -> list[Block]:
    status = rec["status"]
    head = (_TITLE["interrupted"] if status == "interrupted" else
            _TITLE["met"] if rec.get("budget_met") else _TITLE["not-met"])
    model = rec.get("model") or {}
    items = [(bool(rec.get("budget_met")), f"chosen: {_chosen_label(rec)} — "
              f"{rec['chosen_reason']}"),
             (True, f"{rec['evaluations']} candidate evaluation(s) in {fmt(rec['seconds'])} s "
              f"(limits: {_limits(rec)}); objective {rec['objective']}, candidates timed at "
              f"{rec['threads']} thread(s) against the float model, interleaved"),
             (True, f"model: {model.get('evidence')}; {model.get('layer_groups')} layer "
              "group(s)")]
    note = ((rec.get("float") or {}).get("task") or {}).get("note")
    if note:
        items.append((False, note))
    if status != "met":
        items.append((status == "met", f"search stopped: {rec['reason']}"))
    blocks: list[Block] = [Heading(f"Tuning: {title}", 2),
                           Verdict(f"{head}: {rec['budget']['text']}",
                                   bool(rec.get("budget_met")), tuple(items))]
    plot = svg_pareto(rec, title=f"{title}: {rec['budget']['metric']} vs latency")
    if plot:
        blocks.append(Plots((plot,)))
    blocks.append(table(_COLUMNS, [_row(r, rec) for r in rec["trials"]]))
    failed = [f"#{r['index'] + 1} {r['label']}: {r['error']}" for r in rec["trials"]
              if r.get("error")]
    if failed:
        blocks.append(Bullets(tuple(failed)))
    return blocks


def _chosen_label(rec: Mapping[str, Any]) -> str:
    best = rec.get("best")
    if best is None:
        return "nothing"
    r = rec["trials"][best]
    return f"#{best + 1} {r['label']}"


def _limits(rec: Mapping[str, Any]) -> str:
    lim = rec.get("limits") or {}
    parts = []
    if lim.get("evaluations") is not None:
        parts.append(f"{lim['evaluations']} evaluations")
    if lim.get("seconds") is not None:
        parts.append(f"{fmt(lim['seconds'])} s")
    return ", ".join(parts) or "none"


def _row(r: Mapping[str, Any], rec: Mapping[str, Any]) -> list[str]:
    samples = r.get("samples") or {}
    cos, snr = samples.get("cosine") or {}, samples.get("sqnr_db") or {}
    lat = r.get("latency") or {}
    acc = ((r.get("task") or {}).get("metrics") or {}).get("accuracy") or {}
    floats = list(r.get("reverted") or []) or r.get("float_layers") or []
    shown = ", ".join(floats[:3]) + (f" +{len(floats) - 3}" if len(floats) > 3 else "")
    if r.get("error"):
        result = "failed"
    else:
        result = "meets" if r.get("met") else "misses"
    if r.get("chosen"):
        result += " ◀ chosen"
    return [str(r["index"] + 1), r["step"], r["label"], shown or "—", fmt(r.get("accuracy"), 5),
            fmt(cos.get("min"), 5), fmt(cos.get("p5"), 5), fmt(cos.get("mean"), 5),
            fmt(snr.get("min")), fmt(None if acc.get("drop") is None else 100 * acc["drop"]),
            speedup((r.get("confirmed") or {}).get("speedup_p50") or lat.get("speedup_p50")),
            fmt(r.get("latency_ms")),
            fmt_bytes(r.get("size_bytes")), fmt(r.get("partitions")), result]


# ------------------------------------------------------------------------------ Pareto plot


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


def pareto_front(points: Sequence[tuple[float, float]], higher_better: bool) -> list[bool]:
    """Which (latency, accuracy) points no other point beats on both (lower latency; higher
    accuracy, or lower for a drop)."""
    def beats(q: tuple[float, float], p: tuple[float, float]) -> bool:
        qa, pa = (q[1], p[1]) if higher_better else (-q[1], -p[1])
        return q[0] <= p[0] and qa >= pa and (q[0] < p[0] or qa > pa)

    return [not any(beats(q, p) for q in points) for p in points]


def svg_pareto(rec: Mapping[str, Any], *, title: str, width: int = 620,
               height: int = 360) -> str:
    """Every evaluated candidate: accuracy metric (y) over latency (x, ms at the search's
    threads, normalised to the first float timing); filled = meets the budget; the dashed
    polyline is the Pareto front, the dashed horizontal line the budget, the ring the choice."""
    metric = rec["budget"]["metric"]
    higher = metric != "max-drop"
    pts = []
    for r in rec["trials"]:
        x, y = r.get("latency_ms"), r.get("accuracy")
        if r.get("error") or x is None or y is None:
            continue
        if not (isinstance(x, int | float) and math.isfinite(x)):
            continue
        y = float(y) if isinstance(y, int | float) and math.isfinite(y) else math.nan
        pts.append((float(x), y, r))
    if not pts:
        return ""
    threshold = float(rec["budget"]["threshold"])
    finite = [p[1] for p in pts if math.isfinite(p[1])] or [threshold]
    y_hi = max([*finite, threshold])
    y_lo = min([*finite, threshold])
    # Keep the budget region readable: a collapsed candidate (cosine 0.04) would squash the
    # rest into one line, so the axis stops a few budget-widths below the threshold and such
    # points sit on the bottom edge (their tooltips have the value).
    if higher:
        span = max(y_hi - threshold, 1e-6)
        y_lo = max(y_lo, threshold - 4 * span)
    else:
        y_hi = min(y_hi, threshold + max(4 * threshold, 1.0))
        y_lo = min(y_lo, 0.0)
    if y_hi <= y_lo:
        y_lo, y_hi = y_lo - 1, y_hi + 1
    pad = (y_hi - y_lo) * 0.08
    y_lo, y_hi = y_lo - pad, y_hi + pad
    xs = [p[0] for p in pts]
    float_ms = (rec.get("float") or {}).get("p50_ms")
    x_hi = max([*xs, float_ms or 0.0]) * 1.1 or 1.0
    x_lo = 0.0
    left, right, top, bottom = 64, 18, 28, 42

    px, py, out = plot_frame(title, width, height, (left, right, top, bottom), (x_lo, x_hi),
                             (y_lo, y_hi), x_digits=3, y_digits=4, clamp_y=True)
    out.append(f'<line class="budget" x1="{left}" y1="{py(threshold):.1f}" x2="{width - right}" '
               f'y2="{py(threshold):.1f}" stroke="#d64545" stroke-dasharray="6 3"><title>'
               f'budget {_e(rec["budget"]["text"])}</title></line>')
    if float_ms:
        out.append(f'<line class="float" x1="{px(float_ms):.1f}" y1="{top}" '
                   f'x2="{px(float_ms):.1f}" y2="{height - bottom}" stroke="#888" '
                   f'stroke-dasharray="2 3"><title>float p50 {fmt(float_ms)} ms</title></line>'
                   f'<text x="{px(float_ms) + 3:.1f}" y="{top + 10}" fill="#666">float</text>')
    ok = [(x, y) for x, y, _ in pts if math.isfinite(y)]
    front = pareto_front(ok, higher)
    line = sorted((p for p, f in zip(ok, front, strict=True) if f), key=lambda p: p[0])
    if len(line) > 1:
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in line)
        out.append(f'<polyline points="{coords}" fill="none" stroke="#3b6fd8" '
                   'stroke-dasharray="4 3"/>')
    for x, y, r in pts:
        met = bool(r.get("met"))
        fill = 'fill="#3b6fd8" fill-opacity="0.7"' if met else 'fill="#fff"'
        value = "NaN" if math.isnan(y) else fmt(y, 5)
        tip = (f"#{r['index'] + 1} {r['label']}: {metric} {value}, {fmt(x, 3)} ms"
               f"{', meets the budget' if met else ''}")
        yy = py(y) if math.isfinite(y) else height - bottom
        cls = "cand met" if met else "cand"
        out.append(f'<circle class="{cls}" cx="{px(x):.1f}" cy="{yy:.1f}" r="5" {fill} '
                   f'stroke="#3b6fd8"><title>{_e(tip)}</title></circle>')
        if r.get("chosen"):
            side = px(x) < 0.7 * width
            tx = px(x) + 12 if side else px(x) - 12
            out.append(f'<circle class="chosen" cx="{px(x):.1f}" cy="{yy:.1f}" r="10" '
                       f'fill="none" stroke="#17602b" stroke-width="2"/>'
                       f'<text x="{tx:.1f}" y="{yy - 8:.1f}" '
                       f'text-anchor="{"start" if side else "end"}" fill="#17602b">'
                       f'chosen #{r["index"] + 1}</text>')
    ylabel = {"min-cosine": "worst-sample cosine", "min-sqnr": "worst-sample SQNR (dB)",
              "max-drop": "accuracy drop (points)"}.get(metric, metric)
    out.append(f'<text x="{(left + width - right) / 2:.0f}" y="{height - 6}" '
               f'text-anchor="middle">latency p50 (ms, normalised to the first float '
               f'timing)</text><text transform="translate(14 {(top + height - bottom) / 2:.0f}) '
               f'rotate(-90)" text-anchor="middle">{_e(ylabel)}</text></svg>')
    return "".join(out)
