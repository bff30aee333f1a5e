"""Block list -> one self-contained HTML page: inline CSS and SVG, no scripts, no network.

It opens offline and in mail / CI artifact viewers. Every text is escaped here; the SVG plots
escape their own texts (``edgeopt.report.svg``).
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .blocks import Block, Bullets, Heading, Para, Plots, Table, Verdict

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
 color:#1d2330;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid
 #d9dde5;padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{padding:4px 8px;
 border-bottom:1px solid #eceef2;text-align:right;white-space:nowrap}
th{background:#f0f2f6;font-weight:600}td:first-child,th:first-child{text-align:left}
td.l{text-align:left}td.w{text-align:left;white-space:normal;word-break:break-all}
.gates{padding:10px 14px;border-radius:8px;font-weight:600;margin:12px 0}
.pass{background:#e6f6ea;color:#17602b;border:1px solid #9fd8ad}
.fail{background:#fdeaea;color:#8a1c1c;border:1px solid #f0a8a8}
.gates ul{margin:6px 0 0;font-weight:400}.note{color:#5b6475;font-size:12px}
.plots{display:flex;flex-wrap:wrap;gap:16px}svg{background:#fff}
svg text{font:11px system-ui,sans-serif;fill:#333}
"""
# Cells that read as numbers (or as missing / yes / no) are right-aligned.
_NUMERIC = re.compile(r"^[-+]?(\d|∞|—|n/a|\[|yes$|no$)")


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _table(t: Table) -> str:
    """Numbers right-aligned, text left-aligned (long text may wrap)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in t.headers)
    body = []
    for r in t.rows:
        cells = "".join(f"<td>{_e(c)}</td>" if i == 0 or _NUMERIC.match(c)
                        else f'<td class="{"w" if len(c) > 40 else "l"}">{_e(c)}</td>'
                        for i, c in enumerate(r))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _block(b: Block) -> str:
    if isinstance(b, Heading):
        return f"<h{b.level}>{_e(b.text)}</h{b.level}>"
    if isinstance(b, Para):
        return f'<p class="note">{_e(b.text)}</p>' if b.note else f"<p>{_e(b.text)}</p>"
    if isinstance(b, Table):
        return _table(b)
    if isinstance(b, Bullets):
        cls = ' class="note"' if b.note else ""
        return f"<ul{cls}>" + "".join(f"<li>{_e(i)}</li>" for i in b.items) + "</ul>"
    if isinstance(b, Verdict):
        items = "".join(f"<li>{'✔' if ok else '✘'} {_e(text)}</li>" for ok, text in b.items)
        return (f'<div class="gates {"pass" if b.passed else "fail"}">{_e(b.title)}'
                + (f"<ul>{items}</ul>" if items else "") + "</div>")
    if isinstance(b, Plots):
        return '<div class="plots">' + "".join(b.svgs) + "</div>"
    raise TypeError(f"unknown report block {type(b).__name__}")


def render_blocks(blocks: Sequence[Block], title: str) -> str:
    body = "\n".join(_block(b) for b in blocks)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head>"
            f"<body><main>\n{body}\n</main></body></html>\n")


def render_html(report: Mapping[str, Any]) -> str:
    """The report as one self-contained HTML page."""
    from .sections import report_blocks

    return render_blocks(report_blocks(report), f"edgeopt {report['kind']} report")
