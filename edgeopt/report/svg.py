"""Hand-drawn SVG plots for the HTML page: no plotting library, no scripts, no network.

Every text is escaped here, so the SVG strings can be embedded in the page as they are.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from typing import Any

from .format import fmt


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


_BLUE, _ORANGE = "#3b6fd8", "#e07b28"
_FONT_W = 6.2  # approximate width of one 11px character, for label truncation


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values (1, 2, 5 x 10^k steps) covering ``[lo, hi]``."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else [0.0]
    raw = (hi - lo) / max(1, n - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    ticks, t = [], first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    return ticks


def _scale(lo: float, hi: float, a: float, b: float) -> Any:
    span = (hi - lo) or 1.0
    return lambda v: a + (v - lo) / span * (b - a)


def _svg_open(w: int, h: int, title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
            f'viewBox="0 0 {w} {h}" role="img" aria-label="{_e(title)}">'
            f'<title>{_e(title)}</title>'
            f'<text x="{w / 2:.0f}" y="16" text-anchor="middle" font-weight="600">'
            f"{_e(title)}</text>")


def plot_frame(title: str, width: int, height: int, margins: tuple[int, int, int, int],
               x_range: tuple[float, float], y_range: tuple[float, float], *,
               x_digits: int = 3, y_digits: int = 4, clamp_y: bool = False,
               ) -> tuple[Any, Any, list[str]]:
    """An x/y plot's frame: ``(px, py, parts)``, the data-to-pixel maps and the SVG opening
    with the title and the grid lines with their tick labels. ``margins`` is (left, right,
    top, bottom); ``clamp_y`` pins out-of-range y values to the frame's edge. Used by the
    plots that draw their own marks (tune's Pareto plot, sweep's accuracy-latency plot)."""
    left, right, top, bottom = margins
    (x_lo, x_hi), (y_lo, y_hi) = x_range, y_range

    def px(v: float) -> float:
        return left + (v - x_lo) / ((x_hi - x_lo) or 1.0) * (width - left - right)

    def py(v: float) -> float:
        if clamp_y:
            v = min(max(v, y_lo), y_hi)
        return height - bottom - (v - y_lo) / ((y_hi - y_lo) or 1.0) * (height - top - bottom)

    out = [_svg_open(width, height, title)]
    for t in nice_ticks(x_lo, x_hi, 6):
        out.append(f'<line x1="{px(t):.1f}" y1="{top}" x2="{px(t):.1f}" y2="{height - bottom}" '
                   f'stroke="#eceef2"/><text x="{px(t):.1f}" y="{height - bottom + 14}" '
                   f'text-anchor="middle">{fmt(t, x_digits)}</text>')
    for t in nice_ticks(y_lo, y_hi, 5):
        out.append(f'<line x1="{left}" y1="{py(t):.1f}" x2="{width - right}" y2="{py(t):.1f}" '
                   f'stroke="#eceef2"/><text x="{left - 4}" y="{py(t) + 4:.1f}" '
                   f'text-anchor="end">{fmt(t, y_digits)}</text>')
    return px, py, out


def _finite(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def svg_bar_chart(labels: Sequence[str], values: Sequence[Any], *, title: str,
                  tooltips: Sequence[str] | None = None, width: int = 760) -> str:
    """Horizontal bars, one row per label, in the given order (red < 10 dB < amber < 20 dB)."""
    row, top, left, right = 18, 28, 250, 60
    h = top + row * len(labels) + 26
    fin = _finite(values)
    lo = min([0.0, *fin])
    hi = max([1.0, *fin])
    x = _scale(lo, hi, left, width - right)
    out = [_svg_open(width, h, title)]
    for t in nice_ticks(lo, hi, 6):
        xs = x(t)
        out.append(f'<line x1="{xs:.1f}" y1="{top - 4}" x2="{xs:.1f}" y2="{h - 22}" '
                   f'stroke="#e3e6ec"/><text x="{xs:.1f}" y="{h - 8}" '
                   f'text-anchor="middle">{fmt(t)}</text>')
    for i, (label, v) in enumerate(zip(labels, values, strict=True)):
        y = top + i * row
        out.append(_bar(label, v, y, row, x, lo, hi, left, tooltips[i] if tooltips else label))
    out.append(f'<line x1="{x(0):.1f}" y1="{top - 4}" x2="{x(0):.1f}" y2="{h - 22}" '
               'stroke="#777"/></svg>')
    return "".join(out)


def _bar(label: str, v: Any, y: float, row: int, x: Any, lo: float, hi: float,
         left: int, tip: str) -> str:
    max_chars = int((left - 10) / _FONT_W)
    shown = label if len(label) <= max_chars else label[: max_chars - 1] + "…"
    text = (f'<text x="{left - 6}" y="{y + row * 0.7:.1f}" text-anchor="end">'
            f"<title>{_e(tip)}</title>{_e(shown)}</text>")
    if not isinstance(v, (int, float)) or math.isnan(v):
        return text + f'<text x="{left + 4}" y="{y + row * 0.7:.1f}" fill="#888">n/a</text>'
    end = hi if math.isinf(v) and v > 0 else max(lo, min(hi, float(v)))
    x0, x1 = sorted((x(0), x(end)))
    color = "#d64545" if v < 10 else "#e0a030" if v < 20 else "#3c9a5f"
    return (text + f'<rect class="bar" x="{x0:.1f}" y="{y + 2}" width="{max(x1 - x0, 1):.1f}" '
            f'height="{row - 5}" fill="{color}"><title>{_e(tip)}: {fmt(v)}</title></rect>'
            f'<text x="{x1 + 4:.1f}" y="{y + row * 0.7:.1f}">{fmt(v)}</text>')


def svg_scatter(xs: Sequence[float], ys: Sequence[float], *, title: str, xlabel: str,
                ylabel: str, size: int = 340) -> str:
    """Scatter of candidate vs reference values with the y = x line."""
    pad, top = 48, 26
    fin = _finite(list(xs) + list(ys))
    lo, hi = (min(fin), max(fin)) if fin else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 1, hi + 1
    px = _scale(lo, hi, pad, size - 12)
    py = _scale(lo, hi, size - pad + top - 10, top + 4)
    out = [_svg_open(size, size + top - 10, title)]
    for t in nice_ticks(lo, hi, 5):
        out.append(f'<text x="{px(t):.1f}" y="{size + top - 10 - pad + 16}" '
                   f'text-anchor="middle">{fmt(t, 3)}</text>'
                   f'<text x="{pad - 4}" y="{py(t) + 4:.1f}" text-anchor="end">{fmt(t, 3)}</text>')
    out.append(f'<rect x="{pad}" y="{top + 4}" width="{size - 12 - pad}" '
               f'height="{size - pad - 14}" fill="none" stroke="#ccc"/>'
               f'<line x1="{px(lo):.1f}" y1="{py(lo):.1f}" x2="{px(hi):.1f}" y2="{py(hi):.1f}" '
               'stroke="#999" stroke-dasharray="4 3"/>')
    pts = "".join(f'<circle class="pt" cx="{px(a):.1f}" cy="{py(b):.1f}" r="2"/>'
                  for a, b in zip(xs, ys, strict=True)
                  if math.isfinite(a) and math.isfinite(b))
    out.append(f'<g fill="{_BLUE}" fill-opacity="0.55">{pts}</g>')
    out.append(f'<text x="{(pad + size) / 2:.0f}" y="{size + top - 12}" '
               f'text-anchor="middle">{_e(xlabel)}</text>'
               f'<text transform="translate(12 {(size + top) / 2:.0f}) rotate(-90)" '
               f'text-anchor="middle">{_e(ylabel)}</text></svg>')
    return "".join(out)


def svg_histogram(series: Sequence[tuple[str, Sequence[float]]], *, title: str, xlabel: str,
                  width: int = 760, height: int = 230, bins: int = 40) -> str:
    """Overlaid histograms on shared bins, a dashed line at each series' median."""
    pad_l, pad_r, top, bottom = 44, 16, 40, 34
    fin = _finite(v for _, vals in series for v in vals)
    lo, hi = (min(fin), max(fin)) if fin else (0.0, 1.0)
    # A few slow outliers (scheduler hiccups) would squash the distribution into one bin:
    # the axis ends at the largest per-series 99th percentile, and the clipped count is shown.
    tails = [_percentile(_finite(vals), 0.99) for _, vals in series if vals]
    clip = max(t for t in tails if t is not None) if any(t is not None for t in tails) else hi
    clipped = sum(v > clip for v in fin) if clip < hi else 0
    hi = clip if clipped else hi
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = [lo + (hi - lo) * i / bins for i in range(bins + 1)]
    counts = [_bin_counts([v for v in _finite(vals) if v <= hi], lo, hi, bins)
              for _, vals in series]
    cmax = max([1, *(c for cs in counts for c in cs)])
    x = _scale(lo, hi, pad_l, width - pad_r)
    y = _scale(0, cmax, height - bottom, top)
    out = [_svg_open(width, height, title)]
    for t in nice_ticks(lo, hi, 7):
        out.append(f'<text x="{x(t):.1f}" y="{height - bottom + 14}" '
                   f'text-anchor="middle">{fmt(t, 3)}</text>')
    more = f" ({clipped} runs above {fmt(hi, 3)} not shown)" if clipped else ""
    out.append(f'<text x="{width / 2:.0f}" y="{height - 4}" text-anchor="middle">'
               f"{_e(xlabel)}{_e(more)}</text>")
    for k, ((name, vals), cs) in enumerate(zip(series, counts, strict=True)):
        color = (_BLUE, _ORANGE)[k % 2]
        for i, c in enumerate(cs):
            if c:
                out.append(f'<rect class="hist" x="{x(edges[i]):.1f}" y="{y(c):.1f}" '
                           f'width="{max(x(edges[i + 1]) - x(edges[i]) - 1, 1):.1f}" '
                           f'height="{y(0) - y(c):.1f}" fill="{color}" fill-opacity="0.5"/>')
        med = _median(_finite(vals))
        if med is not None:
            out.append(f'<line x1="{x(med):.1f}" y1="{top}" x2="{x(med):.1f}" '
                       f'y2="{height - bottom}" stroke="{color}" stroke-dasharray="5 3"/>')
        out.append(f'<rect x="{pad_l + 140 * k}" y="24" width="10" height="10" fill="{color}"/>'
                   f'<text x="{pad_l + 14 + 140 * k}" y="33">{_e(name)} p50 {fmt(med, 3)}</text>')
    out.append(f'<line x1="{pad_l}" y1="{height - bottom}" x2="{width - pad_r}" '
               f'y2="{height - bottom}" stroke="#777"/></svg>')
    return "".join(out)


def _bin_counts(vals: Sequence[float], lo: float, hi: float, bins: int) -> list[int]:
    counts = [0] * bins
    for v in vals:
        i = min(bins - 1, max(0, int((v - lo) / (hi - lo) * bins)))
        counts[i] += 1
    return counts


def _percentile(vals: Sequence[float], q: float) -> float | None:
    """Linear-interpolated quantile ``q`` in [0, 1] (numpy's default method)."""
    if not vals:
        return None
    s = sorted(vals)
    pos = q * (len(s) - 1)
    i = int(pos)
    return s[i] if i + 1 >= len(s) else s[i] + (s[i + 1] - s[i]) * (pos - i)


def _median(vals: Sequence[float]) -> float | None:
    if not vals:
        return None
    s = sorted(vals)
    m = len(s) // 2
    return s[m] if len(s) % 2 else (s[m - 1] + s[m]) / 2
