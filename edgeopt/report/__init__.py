"""Reports: the ``edgeopt.report/1`` document on disk, and its Markdown and HTML renderings.

The JSON is written by the records of ``edgeopt.results`` (one place); this package reads it.
Data flows top to bottom::

    io.py         strict JSON, atomic write of report.json / .md / .html, load_report
    sections.py   the document -> ONE block list (gates, models, targets, each evaluation:
                  task, drift, per-layer, latency, target compatibility; notes)
    blocks.py     the block kinds (Heading, Para, Table, Bullets, Verdict, Plots)
    markdown.py   blocks -> Markdown          html.py   blocks -> self-contained HTML page
    svg.py        the plots (inline SVG)      format.py how numbers read
    terminal.py   the lines commands print about a report
"""

from __future__ import annotations

from edgeopt.results import SCHEMA

from .format import fmt, fmt_bytes
from .html import render_html
from .io import (
    ReportError,
    dumps,
    from_jsonable,
    load_report,
    to_jsonable,
    write_report,
)
from .markdown import render_markdown
from .sections import evaluations, latency_pair, report_blocks, size_pair
from .svg import nice_ticks, svg_bar_chart, svg_histogram, svg_scatter
from .terminal import convert_summary_lines, print_summary

__all__ = [
    "SCHEMA",
    "ReportError",
    "convert_summary_lines",
    "dumps",
    "evaluations",
    "fmt",
    "fmt_bytes",
    "from_jsonable",
    "latency_pair",
    "load_report",
    "nice_ticks",
    "print_summary",
    "render_html",
    "render_markdown",
    "report_blocks",
    "size_pair",
    "svg_bar_chart",
    "svg_histogram",
    "svg_scatter",
    "to_jsonable",
    "write_report",
]
