"""Block list -> Markdown (tables, no plots: those are in the HTML page)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .blocks import Block, Bullets, Heading, Para, Plots, Table, Verdict


def _cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _table(t: Table) -> list[str]:
    lines = ["| " + " | ".join(t.headers) + " |", "|" + "---|" * len(t.headers)]
    return lines + ["| " + " | ".join(_cell(c) for c in r) + " |" for r in t.rows]


def _block(b: Block) -> list[str]:
    if isinstance(b, Heading):
        return ["#" * b.level + " " + b.text]
    if isinstance(b, Para):
        return [f"_{b.text}_" if b.note else b.text]
    if isinstance(b, Table):
        return _table(b)
    if isinstance(b, Bullets):
        return [f"- {item}" for item in b.items]
    if isinstance(b, Verdict):
        return [f"**{b.title}**"] + ([""] if b.items else []) + [
            f"- {'✅' if ok else '❌'} {text}" for ok, text in b.items]
    if isinstance(b, Plots):
        return []
    raise TypeError(f"unknown report block {type(b).__name__}")


def render_blocks(blocks: Sequence[Block]) -> str:
    lines: list[str] = []
    for b in blocks:
        part = _block(b)
        if part:
            lines += [*part, ""]
    return "\n".join(lines)


def render_markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown."""
    from .sections import report_blocks

    return render_blocks(report_blocks(report))
