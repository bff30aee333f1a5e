"""The HTML report in a real headless Chromium: the DOM holds the SVG plots, and they paint.

Needs Debian's ``chromium`` package (``apt-get install -y chromium``; ``.ci/run`` installs it).
Skipped, with the reason, when no Chromium binary is found or it cannot start here. Set
``EDGEOPT_CHROMIUM`` to a binary to use another one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edgeopt.report import render_html
from tests.test_report import _compare_report

pytestmark = pytest.mark.browser

_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# No network, no first-run UI, no background services: the page must render from itself alone.
_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--disable-extensions", "--host-resolver-rules=MAP * ~NOTFOUND"]
_BAR_GREEN = (0x3C, 0x9A, 0x5F)  # per-layer bars >= 20 dB (edgeopt.report.svg._bar)
_BAR_RED = (0xD6, 0x45, 0x45)  # per-layer bars < 10 dB


def _chromium() -> str:
    exe = os.environ.get("EDGEOPT_CHROMIUM") or next(
        (p for p in map(shutil.which, _CANDIDATES) if p), None)
    if not exe:
        pytest.skip("no Chromium found (apt-get install -y chromium, or set EDGEOPT_CHROMIUM)")
    return exe


def _run(exe: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / "profile"
    profile.mkdir(exist_ok=True)
    try:
        return subprocess.run([exe, *_FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=90)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"Chromium ({exe}) could not start here: {exc}")


def _page(tmp: Path) -> Path:
    rep = _compare_report()
    rep["per_layer"]["layers"].append({"rank": 3, "layer": "ok", "tensor": "t3", "op": "FC",
                                       "sqnr_db": 42.0})
    page = tmp / "report.html"
    page.write_text(render_html(rep), encoding="utf-8")
    return page


def test_dom_holds_the_svg_plots(tmp_path: Path) -> None:
    exe = _chromium()
    page = _page(tmp_path)
    r = _run(exe, tmp_path, "--dump-dom", page.as_uri())
    if r.returncode != 0 or "<html" not in r.stdout:
        pytest.skip(f"Chromium could not render here (exit {r.returncode}): "
                    f"{r.stderr.strip()[-300:]}")
    dom = r.stdout
    svgs = re.findall(r"<svg\b[^>]*>", dom)
    assert len(svgs) == 4  # scatter x2, per-layer bars, latency histogram
    assert len(re.findall(r'<rect class="bar"', dom)) == 3
    assert len(re.findall(r'<circle class="pt"', dom)) > 100
    assert "Per-layer SQNR (dB), worst first" in dom
    assert "<script" not in dom.lower()  # escaped layer name stayed text
    assert "&lt;script&gt;x&lt;/script&gt;" in dom


def test_screenshot_paints_the_plots(tmp_path: Path) -> None:
    from PIL import Image

    exe = _chromium()
    page = _page(tmp_path)
    shot = tmp_path / "shot.png"
    r = _run(exe, tmp_path, "--window-size=1280,2600", "--hide-scrollbars",
             f"--screenshot={shot}", page.as_uri())
    if r.returncode != 0 or not shot.exists():
        pytest.skip(f"Chromium could not take a screenshot here (exit {r.returncode}): "
                    f"{r.stderr.strip()[-300:]}")
    assert shot.stat().st_size > 10_000
    with Image.open(shot) as im:
        rgb = im.convert("RGB")
        assert rgb.size == (1280, 2600)
        colors = {c for _, c in rgb.getcolors(maxcolors=1 << 20)}
    # The bar fills are drawn only by the SVG: seeing them proves the plots painted.
    assert _BAR_GREEN in colors and _BAR_RED in colors
    assert len(colors) > 50  # text antialiasing, plots: not a blank page
