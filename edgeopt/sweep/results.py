"""Sweep results: ``OUT/results.json`` (``edgeopt.sweep/1``), ``results.csv``, ``results.html``.

JSON: one row per job (``jobs``): model, target, recipe, status, error, the job folder, its
report, timing / attempts / peak RSS, and per artifact (``artifacts``): path, format,
precision, size, host latency p50 (float and quantized), speedup, SQNR, cosine, top-1
agreement, accuracy and accuracy drop (full validation set when it was sharded), samples.
CSV: one line per artifact (a failed or pending job gets one line with its error), the job
columns repeated. HTML: the table, each row linking its artifact and its convert report, and
per target a Pareto plot of accuracy drop x latency x size drawn as inline SVG (no scripts),
like the project's other reports.
"""

from __future__ import annotations

import csv
import html
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SCHEMA = "edgeopt.sweep/1"
CSV_COLUMNS = [
    "model", "target", "recipe", "status", "cached", "file", "format", "precision",
    "size_bytes", "size_ratio", "latency_p50_ms", "float_latency_p50_ms", "speedup_p50",
    "accuracy", "float_accuracy", "accuracy_drop", "top1_agreement", "cosine", "sqnr_db",
    "samples", "attempts", "seconds", "peak_rss_bytes", "artifact", "report", "error",
]


def build_results(spec: Any, rows: list[dict[str, Any]], executor: str,
                  interrupted: bool) -> dict[str, Any]:
    from ..results import ReportHeader

    base = ReportHeader.now("convert").to_dict()  # created / tools / host, as every report
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "failed", "pending")}
    counts["cached"] = sum(bool(r.get("cached")) for r in rows)
    return {
        "schema": SCHEMA, "created": base["created"], "tools": base["tools"],
        "host": base["host"], "sweep": str(spec.path),
        "executor": executor, "interrupted": interrupted,
        "matrix": {"models": [m.name for m in spec.models],
                   "targets": sorted({r["target"] for r in rows}),
                   "recipes": [r.name for r in spec.recipes]},
        "counts": counts, "jobs": rows,
    }


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_results(doc: Mapping[str, Any], out: Path) -> dict[str, Path]:
    from ..report import dumps

    paths = {"json": out / "results.json", "csv": out / "results.csv",
             "html": out / "results.html"}
    _atomic(paths["json"], dumps(doc))
    _atomic(paths["csv"], render_csv(doc))
    _atomic(paths["html"], render_html(doc))
    return paths


def artifact_lines(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One flat dict per (job, artifact); jobs without artifacts give one line."""
    lines = []
    for job in doc["jobs"]:
        base = {k: job.get(k) for k in ("model", "target", "recipe", "status", "cached",
                                        "attempts", "seconds", "peak_rss_bytes")}
        base["report"] = job.get("report")
        err = job.get("error") or {}
        base["error"] = f"{err.get('type', '')}: {err.get('message', '')}" if err else ""
        for art in job.get("artifacts") or [{}]:
            line = {**base, **{k: art.get(k) for k in CSV_COLUMNS if k in art}}
            line["artifact"] = art.get("path")
            lines.append(line)
    return lines


def render_csv(doc: Mapping[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for line in artifact_lines(doc):
        w.writerow({k: "" if line.get(k) is None else line.get(k) for k in CSV_COLUMNS})
    return buf.getvalue()


# ------------------------------------------------------------------------------ HTML

_CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:1200px;margin:0 auto;padding:24px}h1{font-size:22px;margin:0 0 4px}
h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d9dde5}.meta,.note{color:#5b6475;
font-size:12px}table{border-collapse:collapse;width:100%;font-size:12px;background:#fff}
th,td{padding:3px 6px;border-bottom:1px solid #eceef2;text-align:right;white-space:nowrap}
th{background:#f0f2f6}td.l{text-align:left}td.err{text-align:left;white-space:normal;
color:#8a1c1c;max-width:360px}.plots{display:flex;flex-wrap:wrap;gap:16px}svg{background:#fff;
border:1px solid #dfe3ea}svg text{font:11px system-ui,sans-serif;fill:#333}"""


def _e(s: Any) -> str:
    return html.escape("" if s is None else str(s), quote=True)


def _num(v: Any, digits: int = 4) -> str:
    from ..report import fmt

    return "—" if v is None else fmt(v, digits)


def loss(art: Mapping[str, Any]) -> tuple[float | None, str]:
    """The plot's accuracy axis: accuracy drop in points when labels exist, else the top-1
    disagreement in %, else 1 - cosine (x 100)."""
    if art.get("accuracy_drop") is not None:
        return 100.0 * float(art["accuracy_drop"]), "accuracy drop (points)"
    if art.get("top1_agreement") is not None:
        return 100.0 * (1.0 - float(art["top1_agreement"])), "top-1 disagreement (%)"
    if art.get("cosine") is not None:
        return 100.0 * (1.0 - float(art["cosine"])), "100 x (1 - cosine)"
    return None, ""


def pareto(points: Sequence[tuple[float, float, float]]) -> list[bool]:
    """Which points no other point beats on all of (loss, latency, size) (lower is better)."""
    return [not any(all(q[k] <= p[k] for k in range(3)) and any(q[k] < p[k] for k in range(3))
                    for q in points) for p in points]


def svg_pareto(arts: Sequence[Mapping[str, Any]], title: str, width: int = 560,
               height: int = 340) -> str:
    """Accuracy loss (y) over host latency p50 (x); circle area ~ size; Pareto points filled."""
    from ..report.svg import plot_frame

    pts = []
    for a in arts:
        y, label = loss(a)
        x, s = a.get("latency_p50_ms"), a.get("size_bytes")
        if y is not None and x is not None and s is not None and math.isfinite(y):
            pts.append((float(y), float(x), float(s), a))
    if not pts:
        return ""
    ylabel = loss(pts[0][3])[1]
    front = pareto([(p[0], p[1], p[2]) for p in pts])
    left, right, top, bottom = 56, 16, 28, 40
    xs, ys, ss = [p[1] for p in pts], [p[0] for p in pts], [p[2] for p in pts]
    x_lo, x_hi = 0.0, max(xs) * 1.1 or 1.0
    y_lo, y_hi = min(0.0, min(ys)), max(max(ys) * 1.15, 0.1)

    px, py, out = plot_frame(title, width, height, (left, right, top, bottom), (x_lo, x_hi),
                             (y_lo, y_hi), x_digits=3, y_digits=3)
    smax = max(ss)
    frontier = sorted((p for p, f in zip(pts, front, strict=True) if f), key=lambda p: p[1])
    if len(frontier) > 1:
        line = " ".join(f"{px(p[1]):.1f},{py(p[0]):.1f}" for p in frontier)
        out.append(f'<polyline points="{line}" fill="none" stroke="#3b6fd8" '
                   'stroke-dasharray="4 3"/>')
    for (y, x, s, a), best in zip(pts, front, strict=True):
        r = 4 + 10 * math.sqrt(s / smax)
        tip = (f"{a.get('_label', '')}: {_num(x, 3)} ms, {ylabel} {_num(y, 3)}, "
               f"{int(s)} bytes{' (Pareto)' if best else ''}")
        fill = 'fill="#3b6fd8" fill-opacity="0.6"' if best else 'fill="none"'
        out.append(f'<circle class="{"front" if best else "dominated"}" cx="{px(x):.1f}" '
                   f'cy="{py(y):.1f}" r="{r:.1f}" {fill} stroke="#3b6fd8">'
                   f'<title>{_e(tip)}</title></circle>')
        if best:  # label on the side with room
            right_side = px(x) < 0.65 * width
            tx = px(x) + r + 2 if right_side else px(x) - r - 2
            out.append(f'<text x="{tx:.1f}" y="{py(y) - r:.1f}" text-anchor='
                       f'"{"start" if right_side else "end"}">{_e(a.get("_short", ""))}</text>')
    out.append(f'<text x="{(left + width - right) / 2}" y="{height - 6}" text-anchor="middle">'
               f'host latency p50 (ms, quantized)</text><text transform="translate(14 '
               f'{(top + height - bottom) / 2}) rotate(-90)" text-anchor="middle">'
               f'{_e(ylabel)}</text></svg>')
    return "".join(out)


def _link(href: Any, text: Any) -> str:
    return f'<a href="{_e(href)}">{_e(text)}</a>' if href else _e(text)


def render_html(doc: Mapping[str, Any]) -> str:
    counts = doc.get("counts") or {}
    parts = [f"<h1>edgeopt sweep</h1><div class=\"meta\">{_e(doc.get('sweep'))} · executor "
             f"{_e(doc.get('executor'))} · created {_e(doc.get('created'))} · "
             f"{counts.get('ok', 0)} ok, {counts.get('failed', 0)} failed, "
             f"{counts.get('pending', 0)} pending, {counts.get('cached', 0)} from cache"
             f"{' · INTERRUPTED' if doc.get('interrupted') else ''}</div>"]
    parts.append("<h2>Pareto: accuracy drop × latency × size, per target</h2><p class=\"note\">"
                 "Filled circles are not beaten on all three by another artifact of the same "
                 "target; circle area grows with file size. Latency is host-CPU p50, one "
                 "thread (see each report for where it was measured).</p><div class=\"plots\">")
    for target in (doc.get("matrix") or {}).get("targets", []):
        arts = [{**a, "_label": f"{j['model']} · {j['recipe']} · {a['file']}",
                 "_short": f"{j['model']}/{j['recipe']}/{a['precision']}"}
                for j in doc["jobs"] if j["target"] == target and j["status"] == "ok"
                for a in j.get("artifacts") or []]
        parts.append(svg_pareto(arts, f"{target}"))
    parts.append("</div><h2>Jobs</h2>" + _table(doc))
    body = "\n".join(parts)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>edgeopt "
            f"sweep</title><style>{_CSS}</style></head><body><main>\n{body}\n</main></body>"
            "</html>\n")


_HEAD = ["model", "target", "recipe", "status", "artifact", "size", "p50 ms", "speedup",
         "accuracy", "drop (pts)", "top-1 agr.", "cosine", "SQNR dB", "samples", "attempts",
         "peak RSS", "report"]


def _table(doc: Mapping[str, Any]) -> str:
    from ..report import fmt_bytes

    rows = []
    for line in artifact_lines(doc):
        drop = line.get("accuracy_drop")
        status = line["status"] + (" (cached)" if line.get("cached") else "")
        cells = [f'<td class="l">{_e(line[k])}</td>' for k in ("model", "target", "recipe")]
        cells.append(f'<td class="l">{_e(status)}</td>')
        if line["status"] != "ok":
            cells.append(f'<td class="err" colspan="{len(_HEAD) - 5}">{_e(line["error"])}</td>')
        else:
            name = Path(line["artifact"]).name if line.get("artifact") else ""
            cells += [f'<td class="l">{_link(line.get("artifact"), name)}</td>',
                      f"<td>{_e(fmt_bytes(line.get('size_bytes')))}</td>"]
            cells += [f"<td>{_num(line.get(k), n)}</td>" for k, n in (
                ("latency_p50_ms", 3), ("speedup_p50", 3), ("accuracy", 4))]
            cells.append(f"<td>{_num(None if drop is None else 100 * drop, 3)}</td>")
            cells += [f"<td>{_num(line.get(k), n)}</td>" for k, n in (
                ("top1_agreement", 4), ("cosine", 5), ("sqnr_db", 3), ("samples", 6),
                ("attempts", 2))]
            cells.append(f"<td>{_e(fmt_bytes(line.get('peak_rss_bytes')))}</td>")
        cells.append(f'<td class="l">{_link(line.get("report"), "report")}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    head = "".join(f"<th>{_e(h)}</th>" for h in _HEAD)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
