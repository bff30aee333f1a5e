"""The block list a report is made of: each section is built once as blocks, and the Markdown
and HTML renderers (``edgeopt.report.markdown`` / ``.html``) each draw every kind of block.

Cells and texts are plain strings, already formatted (``edgeopt.report.fmt``); plots are SVG
strings that only the HTML page shows (Markdown has the tables holding the same numbers).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    text: str
    note: bool = False  # a side remark: small print in HTML, italics in Markdown


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]
    note: bool = True


@dataclass(frozen=True)
class Verdict:
    """A pass / fail banner with one line per check."""

    title: str
    passed: bool
    items: tuple[tuple[bool, str], ...]


@dataclass(frozen=True)
class Plots:
    """SVG figures shown side by side (HTML only)."""

    svgs: tuple[str, ...]


Block = Heading | Para | Table | Bullets | Verdict | Plots


def table(headers: list[str] | tuple[str, ...], rows: object) -> Table:
    """A ``Table`` from any iterable of rows (cells turned into strings)."""
    return Table(tuple(headers), tuple(tuple(str(c) for c in r) for r in rows))  # type: ignore[attr-defined]
