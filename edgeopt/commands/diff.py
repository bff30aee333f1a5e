"""``edgeopt diff OLD_REPORT NEW_REPORT``: what changed in latency, size and drift.

Works on any two ``edgeopt.report/1`` files (compare or convert, or one of each: entries are
matched by key — ``candidate`` for a compare report, ``<target> · <file>`` for a convert
report's artifacts), and on two sweeps (``edgeopt.sweep/1`` results: entries are
``<model> · <target> · <recipe> · <file>``). A change counts as a regression when it moves
the wrong way by more than the quantity's tolerance (latency is noisy, so it gets a relative
tolerance; sizes and drift are deterministic for the same data and get small absolute ones).

Noise (``edgeopt.diffnoise``): latency is compared with the per-run samples both reports carry,
and an entry whose models are byte-identical in both reports (sha256 of the candidate and of its
float reference) never regresses: whatever moved is timing noise or the host / data, and says
so. For a changed artifact a latency change is a regression only when it is beyond the relative
tolerance (``--latency-tolerance``, default 10 %) *and* outside the run-to-run noise the samples
show (95 % bootstrap intervals of the median that do not overlap).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

DIFF_SCHEMA = "edgeopt.diff/1"
# what -> (direction: +1 higher is better / -1 lower is better, absolute tol, relative tol)
_TOLERANCE: dict[str, tuple[int, float, float]] = {
    "size bytes": (-1, 0.0, 0.005),
    "latency p50 float ms": (-1, 0.0, 0.10),
    "latency p50 quantized ms": (-1, 0.0, 0.10),
    "speedup p50": (+1, 0.0, 0.10),
    "SQNR dB": (+1, 0.5, 0.0),
    "cosine": (+1, 1e-4, 0.0),
    "top-1 agreement": (+1, 0.0, 0.0),
    "max abs error": (-1, 0.0, 0.05),
    "quantized": (+1, 0.0, 0.0),
    "drop": (-1, 0.0, 0.0),
    "worst layer SQNR dB": (+1, 0.5, 0.0),
    "gates passed": (+1, 0.0, 0.0),
    "ok": (+1, 0.0, 0.0),
}


_SWEEP_QUANTITIES = (("size bytes", "size_bytes"), ("latency p50 float ms", "float_latency_p50_ms"),
                     ("latency p50 quantized ms", "latency_p50_ms"),
                     ("speedup p50", "speedup_p50"), ("SQNR dB", "sqnr_db"),
                     ("cosine", "cosine"), ("top-1 agreement", "top1_agreement"),
                     ("accuracy: quantized", "accuracy"), ("accuracy: drop", "accuracy_drop"))


def _sweep_entries(doc: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """key -> quantities for every artifact of a sweep (a failed job: ``ok`` = 0)."""
    out: dict[str, dict[str, float]] = {}
    for job in doc.get("jobs") or []:
        head = f"{job['model']} · {job['target']} · {job['recipe']}"
        if job.get("status") != "ok" or not job.get("artifacts"):
            out[head] = {"ok": 0.0}
            continue
        for art in job["artifacts"]:
            q = {label: art.get(key) for label, key in _SWEEP_QUANTITIES}
            out[f"{head} · {art['file']}"] = {
                k: v for k, v in q.items() if isinstance(v, (int, float))}
    return out


def _entries(report: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """key -> {quantity: value} for every evaluation in a report (or artifact of a sweep)."""
    return {k: q for k, (q, _facts) in _entries_with_facts(report).items()}


def _entries_with_facts(report: Mapping[str, Any],
                        ) -> dict[str, tuple[dict[str, float], dict[str, Any]]]:
    """key -> (quantities, facts: the models' sha256 and the latency samples)."""
    from edgeopt.diffnoise import entry_facts
    from edgeopt.report import evaluations, latency_pair, size_pair

    if str(report.get("schema", "")).startswith("edgeopt.sweep/"):
        return {k: (q, {}) for k, q in _sweep_entries(report).items()}

    out: dict[str, tuple[dict[str, float], dict[str, Any]]] = {}
    for title, sec in evaluations(report):
        q: dict[str, Any] = {"size bytes": size_pair(sec)[1]}
        ref, cand = latency_pair(sec)
        q["latency p50 float ms"] = (ref or {}).get("p50_ms")
        q["latency p50 quantized ms"] = (cand or {}).get("p50_ms")
        if q["latency p50 float ms"] and q["latency p50 quantized ms"]:
            q["speedup p50"] = q["latency p50 float ms"] / q["latency p50 quantized ms"]
        for o in sec.get("drift") or []:
            m = o.get("metrics") or {}
            for label, key in (("SQNR dB", "sqnr_db"), ("cosine", "cosine"),
                               ("top-1 agreement", "top1_agreement"),
                               ("max abs error", "max_abs_error")):
                q[f"{o.get('name')}: {label}"] = m.get(key)
        for name, t in (((sec.get("task") or {}).get("metrics")) or {}).items():
            q[f"{name}: quantized"] = t.get("quantized")
            q[f"{name}: drop"] = t.get("drop")
        layers = (sec.get("per_layer") or {}).get("layers") or []
        if layers:
            q["worst layer SQNR dB"] = layers[0].get("sqnr_db")
        gates = sec.get("gates") or report.get("gates")
        if gates and gates.get("results"):
            q["gates passed"] = 1.0 if gates.get("passed") else 0.0
        out[title] = ({k: v for k, v in q.items() if isinstance(v, (int, float))},
                      entry_facts(report, sec))
    return out


def _rule(what: str) -> tuple[int, float, float]:
    base = what.rsplit(": ", 1)[-1]
    return _TOLERANCE.get(what) or _TOLERANCE.get(base) or (0, 0.0, 0.0)


def _change(what: str, old: float, new: float, latency_tolerance: float | None = None,
            ) -> dict[str, Any] | None:
    if old == new or (math.isnan(old) and math.isnan(new)):
        return None
    direction, abs_tol, rel_tol = _rule(what)
    if latency_tolerance is not None and what in _LATENCY:
        rel_tol = latency_tolerance
    delta = new - old
    rel = delta / abs(old) if old and math.isfinite(old) else None
    tol = max(abs_tol, rel_tol * abs(old) if math.isfinite(old) else 0.0)
    worse = direction != 0 and direction * delta < 0 and abs(delta) > tol
    better = direction != 0 and direction * delta > 0 and abs(delta) > tol
    return {"what": what, "old": old, "new": new, "delta": delta, "relative": rel,
            "worse": bool(worse), "better": bool(better)}


_LATENCY = ("latency p50 float ms", "latency p50 quantized ms", "speedup p50")
DEFAULT_LATENCY_TOLERANCE = 0.10


def diff_reports(old: Mapping[str, Any], new: Mapping[str, Any], *,
                 latency_tolerance: float = DEFAULT_LATENCY_TOLERANCE) -> dict[str, Any]:
    """Compare two parsed reports.

    Args:
        latency_tolerance: relative latency / speedup change that counts at all (0.10: 10 %).

    Returns:
        ``{"schema": "edgeopt.diff/1", "entries": [{"key", "status", "artifact_changed",
        "changes": [...]}], "regressions": int}``; each change ``{"what", "old", "new",
        "delta", "relative", "worse", "better", "kind"}`` (``kind``: ``artifact`` — the models
        changed or the reports cannot tell; ``timing noise`` — within the run-to-run noise or
        the same bytes; ``data changed`` / ``environment`` — the same bytes measured on other
        data / with other tools; see ``edgeopt.diffnoise``).
    """
    from edgeopt.diffnoise import judge

    fa, fb = _entries_with_facts(old), _entries_with_facts(new)
    a = {k: q for k, (q, _f) in fa.items()}
    b = {k: q for k, (q, _f) in fb.items()}
    facts_a = {k: f for k, (_q, f) in fa.items()}
    facts_b = {k: f for k, (_q, f) in fb.items()}
    if len(a) == len(b) == 1 and set(a) != set(b):
        # One evaluation each under different keys (compare vs one-artifact convert): pair them.
        (ka, va), (kb, vb) = next(iter(a.items())), next(iter(b.items()))
        key = f"{ka} -> {kb}"
        a, b = {key: va}, {key: vb}
        facts_a, facts_b = {key: facts_a[ka]}, {key: facts_b[kb]}
    entries = []
    for key in list(a) + [k for k in b if k not in a]:
        if key not in b or key not in a:
            entries.append({"key": key, "status": "removed" if key not in b else "added",
                            "changes": []})
            continue
        changes = [c for what in a[key] if what in b[key]
                   and (c := _change(what, float(a[key][what]), float(b[key][what]),
                                     latency_tolerance))]
        changed, changes = judge(facts_a[key], facts_b[key], changes)
        # A quantity that disappeared (e.g. per-layer not run this time) is worth a line.
        changes += [{"what": what, "old": a[key][what], "new": None, "delta": None,
                     "relative": None, "worse": False, "better": False}
                    for what in a[key] if what not in b[key]]
        entries.append({"key": key, "status": "changed" if changes else "same",
                        "artifact_changed": changed, "changes": changes})
    regressions = sum(c["worse"] for e in entries for c in e["changes"])
    return {"schema": DIFF_SCHEMA, "entries": entries, "regressions": regressions}


def _fmt_delta(c: Mapping[str, Any]) -> str:
    if c["delta"] is None:
        return "(no longer reported)"
    rel = f" ({100 * c['relative']:+.1f}%)" if c.get("relative") is not None else ""
    return f"{c['delta']:+.4g}{rel}"


def render_diff(d: Mapping[str, Any]) -> str:
    """Human-readable text of :func:`diff_reports`."""
    from edgeopt.report import fmt

    lines = []
    for e in d["entries"]:
        if e["status"] in ("added", "removed"):
            lines.append(f"{e['key']}: {e['status']}")
            continue
        same = (" (same artifact, sha256: latency differences are timing noise)"
                if e.get("artifact_changed") is False else "")
        if not e["changes"]:
            lines.append(f"{e['key']}: no change{same}")
            continue
        lines.append(f"{e['key']}:{same}")
        width = max(len(c["what"]) for c in e["changes"])
        for c in e["changes"]:
            flag = ("  WORSE" if c["worse"] else "  better" if c["better"] else
                    f"  ({c['kind']})" if c.get("kind") in ("timing noise", "data changed")
                    else "")
            lines.append(f"  {c['what']:<{width}}  {fmt(c['old']):>10} -> {fmt(c['new']):>10}  "
                         f"{_fmt_delta(c)}{flag}")
    lines.append(f"{d['regressions']} regression(s)")
    return "\n".join(lines)


def _load(path: Path, load_report: Any) -> dict[str, Any]:
    """A report, or a sweep's results (``results.json`` or the sweep folder)."""
    import json

    from edgeopt.report import ReportError, from_jsonable

    p = path / "results.json" if path.is_dir() and not (path / "report.json").exists() else path
    if p.name == "results.json" and p.is_file():
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ReportError(f"{p}: cannot read sweep results: {exc}") from None
        if str(data.get("schema", "")).startswith("edgeopt.sweep/"):
            return from_jsonable(data)
    return load_report(p)


@click.command("diff")
@click.argument("old_report", type=click.Path(path_type=Path))
@click.argument("new_report", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the diff as JSON on stdout.")
@click.option("--fail-on-regression", is_flag=True,
              help="Exit 1 when anything got worse beyond its tolerance (for CI). Byte-identical "
              "artifacts never fail; latency must also be outside the run-to-run noise.")
@click.option("--latency-tolerance", type=click.FloatRange(min=0, max=10), metavar="FRACTION",
              default=DEFAULT_LATENCY_TOLERANCE, show_default=True,
              help="Relative latency / speedup change that counts (0.1 = 10 %).")
def command(old_report: Path, new_report: Path, as_json: bool, fail_on_regression: bool,
            latency_tolerance: float) -> None:
    """Show what changed in latency, size and drift between two edgeopt reports.

    OLD_REPORT and NEW_REPORT are report.json files (or the folders holding them), or two
    sweeps' results.json (or sweep folders).
    """
    import sys

    from edgeopt.report import dumps, load_report

    d = diff_reports(_load(old_report, load_report), _load(new_report, load_report),
                     latency_tolerance=latency_tolerance)
    d = {**d, "old": str(old_report), "new": str(new_report)}
    click.echo(dumps(d) if as_json else render_diff(d), nl=not as_json)
    if fail_on_regression and d["regressions"]:
        sys.exit(1)
