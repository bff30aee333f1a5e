"""The compress report: ``edgeopt.compress/1`` JSON, Markdown and a self-contained HTML page.

Same conventions as the convert / compare reports (``edgeopt.report``): strict JSON (non-finite
floats as strings), renderers that read the parsed JSON only and tolerate missing sections, an
HTML page with inline CSS and SVG and no scripts. Sections: summary (what shrank, what got
faster, what it cost), steps and their fine-tuning losses, the model before / after
(parameters, MACs, file sizes), measured gains per target artifact, per-kernel sparsity and
shared values, the sparsity pre-flight, binarisation status, notes.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..report import dumps, fmt, fmt_bytes, from_jsonable

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px}h1{font-size:22px;margin:0 0 4px}
h2{font-size:18px;margin:26px 0 8px;border-bottom:1px solid #d9dde5;padding-bottom:4px}
.meta,.note{color:#5b6475;font-size:12px}table{border-collapse:collapse;width:100%;
font-size:13px;background:#fff}th,td{padding:4px 8px;border-bottom:1px solid #eceef2;
text-align:right}th{background:#f0f2f6}td:first-child,th:first-child{text-align:left}
.good{color:#17602b}.bad{color:#8a1c1c}ul.summary{background:#fff;border:1px solid #dfe3ea;
border-radius:8px;padding:10px 28px}svg text{font:11px system-ui,sans-serif;fill:#333}
"""


def write(report: Mapping[str, Any], out_dir: Path, stem: str = "report") -> dict[str, Path]:
    """Write ``report.json`` / ``.md`` / ``.html`` into ``out_dir`` (a staging folder: the
    caller renames it into place, so the three files appear together)."""
    text = dumps(report)
    plain = from_jsonable(json.loads(text))
    paths = {k: out_dir / f"{stem}.{k}" for k in ("json", "md", "html")}
    paths["json"].write_text(text, encoding="utf-8")
    paths["md"].write_text(render_markdown(plain), encoding="utf-8")
    paths["html"].write_text(render_html(plain), encoding="utf-8")
    return paths


# ------------------------------------------------------------------------------ shared rows


def _pct(v: Any) -> str:
    return "—" if not isinstance(v, (int, float)) else f"{100 * v:.1f}%"


def _smaller(reduction: Any) -> str:
    if not isinstance(reduction, (int, float)):
        return "—"
    return f"{100 * reduction:.1f}% smaller" if reduction >= 0 else \
        f"{-100 * reduction:.1f}% larger"


def _x(v: Any) -> str:
    return "—" if not isinstance(v, (int, float)) else f"{v:.2f}x"


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    """The headline: one line per measured gain (also printed by the CLI)."""
    lines = []
    before, after = report.get("before") or {}, report.get("after") or {}
    pb, pa = (before.get("parameters") or {}), (after.get("parameters") or {})
    if pb.get("total"):
        lines.append(f"parameters {pb['total']} -> {pa.get('total')} "
                     f"(non-zero {pb.get('nonzero')} -> {pa.get('nonzero')})")
    mb, ma = (before.get("macs") or {}).get("total"), (after.get("macs") or {}).get("total")
    if mb:
        lines.append(f"MACs {mb} -> {ma} ({_pct(1 - ma / mb) if ma is not None else '—'} fewer)")
    ab, aa = before.get("accuracy"), after.get("accuracy")
    if ab is not None:
        lines.append(f"float accuracy {_pct(ab)} -> {_pct(aa)}")
    for row in (report.get("measured") or {}).get("artifacts", []):
        size, acc, lat = row["size"], row["accuracy"], row["latency"]
        gz = size.get("gzip", {})
        text = (f"{row['target']}/{row['file']}: gzip {fmt_bytes(gz.get('before'))} -> "
                f"{fmt_bytes(gz.get('after'))} ({_smaller(gz.get('reduction'))}), "
                f"int8 latency {_x(lat.get('speedup_cpu'))} (thread CPU, interleaved)")
        if acc.get("before") is not None:
            text += f", accuracy {_pct(acc['before'])} -> {_pct(acc.get('after'))}"
            if acc.get("after_without_distillation") is not None:
                text += f" ({_pct(acc['after_without_distillation'])} without distillation)"
        lines.append(text)
    pre = report.get("sparsity_preflight")
    if pre:
        lines.append(f"sparsity pre-flight: {pre.get('verdict')}")
    return lines


def _phase_rows(report: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for p in report.get("phases") or []:
        loss = p.get("loss") or []
        kd = p.get("distill_loss") or []
        rows.append([p["phase"], fmt(p.get("steps")), "yes" if p.get("fine_tuned") else "no",
                     fmt(loss[0]) if loss else "—", fmt(loss[-1]) if loss else "—",
                     f"{fmt(kd[0])} -> {fmt(kd[-1])}" if kd else "—"])
    return rows


_PHASE_HEAD = ["phase", "steps", "fine-tuned", "loss first epoch", "loss last epoch",
               "distillation loss"]


def _model_rows(report: Mapping[str, Any]) -> list[list[str]]:
    b, a = report.get("before") or {}, report.get("after") or {}

    def get(d: Mapping[str, Any], *keys: str) -> Any:
        for k in keys:
            d = (d or {}).get(k) if isinstance(d, Mapping) else None
        return d

    rows = [
        ["parameters", fmt(get(b, "parameters", "total")), fmt(get(a, "parameters", "total"))],
        ["non-zero parameters", fmt(get(b, "parameters", "nonzero")),
         fmt(get(a, "parameters", "nonzero"))],
        ["MACs", fmt(get(b, "macs", "total")), fmt(get(a, "macs", "total"))],
        ["float file", fmt_bytes(get(b, "file", "raw")), fmt_bytes(get(a, "file", "raw"))],
        ["float file gzip", fmt_bytes(get(b, "file", "gzip")), fmt_bytes(get(a, "file", "gzip"))],
        ["float file zstd", fmt_bytes(get(b, "file", "zstd")), fmt_bytes(get(a, "file", "zstd"))],
        ["float accuracy", _pct(b.get("accuracy")), _pct(a.get("accuracy"))],
    ]
    drift = a.get("float_drift_vs_original") or {}
    rows.append(["float drift vs original (SQNR dB / cosine)", "—",
                 f"{fmt(drift.get('sqnr_db'))} / {fmt(drift.get('cosine'), 6)}"])
    abl = (report.get("ablation") or {}).get("float") or {}
    if abl:
        rows.append(["float accuracy without distillation", "—", _pct(abl.get("accuracy"))])
    return rows


def _artifact_rows(report: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for r in (report.get("measured") or {}).get("artifacts", []):
        s, acc, lat = r["size"], r["accuracy"], r["latency"]
        d = (r.get("drift_vs_float_original") or {})
        rows.append([
            f"{r['target']}/{r['file']}",
            f"{fmt_bytes(s['raw']['before'])} -> {fmt_bytes(s['raw']['after'])}",
            f"{fmt_bytes(s['gzip']['before'])} -> {fmt_bytes(s['gzip']['after'])} "
            f"({_pct(s['gzip']['reduction'])})",
            f"{fmt_bytes(s['zstd']['before'])} -> {fmt_bytes(s['zstd']['after'])} "
            f"({_pct(s['zstd']['reduction'])})" if s["zstd"]["before"] is not None else "—",
            f"{fmt(lat['before']['cpu_p50_ms'])} -> {fmt(lat['after']['cpu_p50_ms'])} "
            f"({_x(lat.get('speedup_cpu'))})",
            f"{_pct(acc.get('before'))} -> {_pct(acc.get('after'))}"
            + (f" ({_pct(acc['after_without_distillation'])} w/o KD)"
               if acc.get("after_without_distillation") is not None else ""),
            f"{fmt((d.get('before') or {}).get('sqnr_db'))} -> "
            f"{fmt((d.get('after') or {}).get('sqnr_db'))}",
        ])
    return rows


_ART_HEAD = ["artifact", "size", "gzip (reduction)", "zstd (reduction)",
             "int8 CPU ms p50 (speedup)", "accuracy", "SQNR dB vs float original"]


def _layer_rows(report: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for r in report.get("layers") or []:
        shape = "x".join(map(str, r.get("shape") or []))
        before = r.get("shape_before")
        if before and before != r.get("shape"):
            shape = f"{'x'.join(map(str, before))} -> {shape}"
        rows.append([f"{r['layer']}/{r['weight']}", shape, _pct(r.get("sparsity")),
                     fmt(r.get("unique_values")), "skipped" if r.get("skipped") else ""])
    return rows


_LAYER_HEAD = ["kernel", "shape", "sparsity", "unique values", ""]


# ------------------------------------------------------------------------------ Markdown


def _md_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return out + [""]


def render_markdown(report: Mapping[str, Any]) -> str:
    settings = report.get("settings") or {}
    lines = [f"# edgeopt compress report: {Path(str(report['source']['path'])).name}", "",
             f"created {report.get('created')} · schema {report.get('schema')} · steps: "
             f"{', '.join(settings.get('steps') or [])} · output `{report['output']['path']}`",
             "", "## Summary", ""]
    lines += [f"- {s}" for s in summary_lines(report)] + [""]
    lines += [f"Next: `{report['output']['next']}`", "", "## Steps", ""]
    lines += _md_table(_PHASE_HEAD, _phase_rows(report))
    lines += ["## Model before / after", ""]
    lines += _md_table(["", "before", "after"], _model_rows(report))
    measured = report.get("measured")
    if measured:
        lines += ["## Measured through edgeopt convert", "",
                  f"Targets {', '.join(measured['targets'])}; accuracy / drift on the "
                  f"{measured['data']} data; latency: thread CPU time, 1 thread, the two int8 "
                  "models interleaved, on this host's CPU (not the target device).", ""]
        lines += _md_table(_ART_HEAD, _artifact_rows(report))
    ch = report.get("channels")
    if ch:
        lines += ["## Channel pruning", "", f"criterion: {ch.get('criterion')}", ""]
        lines += _md_table(["layer", "channels", "kept", "consumers"],
                           [[r["layer"], fmt(r["channels"]), fmt(r["kept"]),
                             ", ".join(r["consumers"])] for r in ch.get("layers", [])])
        lines += [f"- not prunable: {k}: {v}" for k, v in (ch.get("skipped") or {}).items()]
        lines.append("")
    if report.get("layers"):
        lines += ["## Kernels", ""] + _md_table(_LAYER_HEAD, _layer_rows(report))
    pre = report.get("sparsity_preflight")
    if pre:
        lines += ["## Sparsity pre-flight (XNNPACK)", "", pre.get("verdict", ""), "",
                  f"- int8: {pre.get('int8')}", ""]
    b = report.get("binarize") or {}
    lines += ["## Binarisation", "", b.get("reason", "—"), ""]
    if report.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in report["notes"]] + [""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ HTML


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _html_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def svg_before_after(labels: Sequence[str], before: Sequence[float], after: Sequence[float],
                     title: str, width: int = 640) -> str:
    """Paired horizontal bars (before grey, after blue), scaled to the largest value."""
    row, left, top = 30, 210, 24
    h = top + row * len(labels) + 10
    peak = max([*before, *after, 1e-12])
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" '
           f'role="img" aria-label="{_e(title)}"><text x="4" y="14" font-weight="600">'
           f"{_e(title)}</text>"]
    span = width - left - 70
    for i, (label, b, a) in enumerate(zip(labels, before, after, strict=True)):
        y = top + i * row
        out.append(f'<text x="{left - 6}" y="{y + 16}" text-anchor="end">{_e(label)}</text>')
        for j, (v, color) in enumerate(((b, "#9aa3b2"), (a, "#3b74c4"))):
            w = max(1.0, span * v / peak)
            out.append(f'<rect x="{left}" y="{y + 2 + j * 12}" width="{w:.1f}" height="10" '
                       f'fill="{color}"/><text x="{left + w + 4:.1f}" y="{y + 11 + j * 12}">'
                       f"{_e(fmt_bytes(v))}</text>")
    out.append("</svg>")
    return "".join(out)


def render_html(report: Mapping[str, Any]) -> str:
    name = Path(str(report["source"]["path"])).name
    parts = [f"<h1>edgeopt compress report: {_e(name)}</h1>",
             f'<div class="meta">created {_e(report.get("created"))} · schema '
             f'{_e(report.get("schema"))} · steps '
             f'{_e(", ".join((report.get("settings") or {}).get("steps") or []))} · output '
             f'<code>{_e(report["output"]["path"])}</code></div>',
             "<h2>Summary</h2><ul class=\"summary\">"
             + "".join(f"<li>{_e(s)}</li>" for s in summary_lines(report)) + "</ul>",
             f'<p class="note">Next: <code>{_e(report["output"]["next"])}</code></p>',
             "<h2>Steps</h2>" + _html_table(_PHASE_HEAD, _phase_rows(report)),
             "<h2>Model before / after</h2>" + _html_table(["", "before", "after"],
                                                           _model_rows(report))]
    measured = report.get("measured")
    if measured and measured.get("artifacts"):
        arts = measured["artifacts"]
        parts.append("<h2>Measured through edgeopt convert</h2>"
                     f'<p class="note">targets {_e(", ".join(measured["targets"]))}; '
                     f"accuracy / drift on the {_e(measured['data'])} data; latency: thread "
                     "CPU time, 1 thread, interleaved, this host's CPU (not the device)</p>"
                     + _html_table(_ART_HEAD, _artifact_rows(report)))
        labels = [f"{a['target']}/{a['file']}" for a in arts]
        parts.append(svg_before_after(labels, [a["size"]["gzip"]["before"] for a in arts],
                                      [a["size"]["gzip"]["after"] for a in arts],
                                      "gzip size of the artifacts: original (grey) vs "
                                      "compressed (blue)"))
    if report.get("layers"):
        parts.append("<h2>Kernels</h2>" + _html_table(_LAYER_HEAD, _layer_rows(report)))
    pre = report.get("sparsity_preflight")
    if pre:
        parts.append(f"<h2>Sparsity pre-flight (XNNPACK)</h2><p>{_e(pre.get('verdict'))}</p>"
                     f'<p class="note">int8: {_e(pre.get("int8"))}</p>')
    parts.append(f"<h2>Binarisation</h2><p>{_e((report.get('binarize') or {}).get('reason'))}"
                 "</p>")
    if report.get("notes"):
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>"
                                                     for n in report["notes"]) + "</ul>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>edgeopt compress report</title><style>{_CSS}</style></head><body><main>"
            + "\n".join(parts) + "</main></body></html>\n")
