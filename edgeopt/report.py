"""Reports: the ``edgeopt.report/1`` JSON document, and its Markdown and HTML renderings.

One schema for ``compare`` and ``convert`` reports (see docs/report-schema.md). The renderers
take the parsed JSON only, so a report can be re-rendered from its file, and they tolerate
missing sections (a convert report without labels has no task metrics, a compare report without
a source model has no per-layer table).

The HTML page is self-contained: inline CSS and inline SVG plots drawn here, no JavaScript, no
external fonts or images, so it opens offline and in mail / CI artifact viewers.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from edgeopt_runtime.errors import EdgeOptError

from .results import SCHEMA, ReportHeader

# Non-finite floats are not JSON: they are written as these strings and read back as floats.
_NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


class ReportError(EdgeOptError):
    """A report file cannot be read, is not an edgeopt report, or has an unsupported schema."""


# --------------------------------------------------------------------------- building / IO


def new_report(kind: str) -> dict[str, Any]:
    """A report skeleton: schema, kind, created, host and tool versions filled in.

    Raises:
        ValueError: ``kind`` is not ``compare`` or ``convert`` (a programming error).
    """
    return ReportHeader.now(kind).to_dict()


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types: numpy scalars/arrays unwrapped, non-finite floats as strings."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return to_jsonable(obj.tolist())  # numpy array or scalar
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    raise TypeError(f"report: cannot encode {type(obj).__name__} as JSON")


def from_jsonable(obj: Any) -> Any:
    """Inverse of :func:`to_jsonable` for the non-finite float strings."""
    if isinstance(obj, dict):
        return {k: from_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_jsonable(v) for v in obj]
    if isinstance(obj, str) and obj in _NONFINITE:
        return _NONFINITE[obj]
    return obj


def dumps(report: Mapping[str, Any]) -> str:
    """The report as strict JSON text (no NaN/Infinity literals)."""
    return json.dumps(to_jsonable(report), indent=2, allow_nan=False) + "\n"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_report(
    report: Mapping[str, Any], out_dir: str | os.PathLike[str], stem: str = "report",
) -> dict[str, Path]:
    """Write ``<stem>.json``, ``<stem>.md`` and ``<stem>.html`` atomically into ``out_dir``.

    Returns:
        ``{"json": path, "md": path, "html": path}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = dumps(report)
    plain = from_jsonable(json.loads(text))  # render what the JSON says, not the live objects
    paths = {"json": out / f"{stem}.json", "md": out / f"{stem}.md", "html": out / f"{stem}.html"}
    _atomic_write(paths["json"], text)
    _atomic_write(paths["md"], render_markdown(plain))
    _atomic_write(paths["html"], render_html(plain))
    return paths


def load_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check an ``edgeopt.report/1`` file (a report directory finds its report.json).

    Raises:
        ReportError: missing, not JSON, not an edgeopt report, or a different major schema.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{p}: no such report file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{p}: cannot read: {exc}") from None
    except ValueError as exc:
        raise ReportError(f"{p}: not JSON ({exc})") from None
    schema = data.get("schema") if isinstance(data, dict) else None
    if not isinstance(schema, str) or not schema.startswith("edgeopt.report/"):
        raise ReportError(f"{p}: expected an edgeopt report (schema {SCHEMA!r}), got "
                          f"schema {schema!r}")
    if schema.split("/", 1)[1].split(".")[0] != SCHEMA.split("/", 1)[1]:
        raise ReportError(f"{p}: schema {schema!r} is not supported (this edgeopt reads {SCHEMA})")
    return from_jsonable(data)


# --------------------------------------------------------------------------- normalising


def evaluations(report: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(title, section) pairs holding drift / task / per_layer / latency / size / gates.

    A compare report is one evaluation (the report itself); a convert report has one per
    artifact of each target (``targets[].artifacts[]``, or a target without artifacts).
    """
    if report.get("kind") != "convert":
        return [("candidate", dict(report))]
    out = []
    for t in report.get("targets") or []:
        name = str(t.get("name") or t.get("target") or "target")
        arts = t.get("artifacts")
        if not arts:
            out.append((name, dict(t)))
            continue
        for a in arts:
            label = a.get("file") or a.get("precision") or a.get("format") or "artifact"
            out.append((f"{name} · {label}", dict(a)))
    return out


def latency_pair(section: Mapping[str, Any]) -> tuple[dict | None, dict | None]:
    """(reference stats, candidate stats) of a section's ``latency`` (both None without one)."""
    lat = section.get("latency")
    if not lat:
        return None, None
    return lat["reference"], lat["candidate"]


def _size(section: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(reference bytes, candidate bytes) from ``models`` or ``size_bytes`` fields."""
    models = section.get("models")
    models = models if isinstance(models, Mapping) else {}
    ref = (models.get("reference") or {}).get("size_bytes")
    cand = (models.get("candidate") or {}).get("size_bytes")
    cand = section.get("size_bytes", cand)
    ref = section.get("float_size_bytes", ref)
    return ref, cand


# --------------------------------------------------------------------------- formatting


def fmt(v: Any, digits: int = 4) -> str:
    """Compact human formatting of a number (``∞`` for inf, ``—`` for missing)."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        if math.isinf(v):
            return "∞" if v > 0 else "-∞"
        return f"{v:.{digits}g}"
    return str(v)


def fmt_bytes(n: Any) -> str:
    """Bytes as B / KiB / MiB."""
    if not isinstance(n, (int, float)) or n < 0:
        return "—"
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def _pct(v: Any) -> str:
    return "—" if not isinstance(v, (int, float)) else f"{100 * v:.2f}%"


def _pts(v: Any) -> str:
    return "—" if not isinstance(v, (int, float)) else f"{100 * v:+.2f} pts"


def _speedup(ref: Mapping | None, cand: Mapping | None) -> str:
    try:
        return f"{ref['p50_ms'] / cand['p50_ms']:.2f}x"  # type: ignore[index]
    except (TypeError, KeyError, ZeroDivisionError):
        return "—"


# Column sets shared by Markdown and HTML: (header, function of the row dict -> text).
_DRIFT_COLS: list[tuple[str, Any]] = [
    ("output", lambda o: o.get("name")),
    ("shape", lambda o: "x".join(str(d) for d in o.get("shape") or [])),
    ("SQNR dB", lambda o: fmt(o["metrics"].get("sqnr_db"))),
    ("cosine", lambda o: fmt(o["metrics"].get("cosine"), 6)),
    ("max abs err", lambda o: fmt(o["metrics"].get("max_abs_error"))),
    ("mean abs err", lambda o: fmt(o["metrics"].get("mean_abs_error"))),
    ("RMSE", lambda o: fmt(o["metrics"].get("rmse"))),
    ("rel err", lambda o: fmt(o["metrics"].get("relative_error"))),
    ("top-1 agree", lambda o: _pct(o["metrics"].get("top1_agreement"))),
    ("top-5 agree", lambda o: _pct(o["metrics"].get("top5_agreement"))),
    ("KL", lambda o: fmt(o["metrics"].get("kl_divergence_mean"))),
    ("flipped", lambda o: fmt((o.get("classifier") or {}).get("num_flipped"))),
]
_TASK_COLS: list[tuple[str, Any]] = [
    ("metric", lambda m: m[0]),
    ("float", lambda m: _pct(m[1].get("float"))),
    ("quantized", lambda m: _pct(m[1].get("quantized"))),
    ("drop", lambda m: _pts(m[1].get("drop"))),
    ("95% CI of drop", lambda m: (f"[{_pts(m[1]['ci_low'])}, {_pts(m[1]['ci_high'])}]"
                                  if "ci_low" in m[1] else "—")),
    ("real loss?", lambda m: ("yes" if m[1].get("significant") and m[1].get("drop", 0) > 0
                              else "no" if "significant" in m[1] else "—")),
]
_LAYER_COLS: list[tuple[str, Any]] = [
    ("rank", lambda e: fmt(e.get("rank"))),
    ("layer", lambda e: e.get("layer") or "—"),
    ("tensor", lambda e: e.get("tensor")),
    ("op", lambda e: e.get("op")),
    ("SQNR dB", lambda e: fmt(e.get("sqnr_db"))),
    ("cumulative dB", lambda e: fmt(e.get("sqnr_db_cumulative"))),
    ("max abs err", lambda e: fmt(e.get("max_abs_error"))),
]
_LAT_COLS = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "runs")
_TOP_LAYERS = 25


def _skipped_notes(drift: Sequence[Mapping[str, Any]]) -> list[str]:
    notes = []
    for o in drift:
        for metric, why in (o.get("skipped") or {}).items():
            notes.append(f"{o.get('name')}: {metric} skipped — {why}")
        cls = o.get("classifier") or {}
        if cls.get("kl_input"):
            notes.append(f"{o.get('name')}: KL divergence computed on {cls['kl_input']}")
    return notes


def _flipped_note(drift: Sequence[Mapping[str, Any]], limit: int = 20) -> list[str]:
    notes = []
    for o in drift:
        flipped = (o.get("classifier") or {}).get("flipped_top1") or []
        if flipped:
            shown = ", ".join(map(str, flipped[:limit]))
            more = f" … (+{len(flipped) - limit} more)" if len(flipped) > limit else ""
            notes.append(f"{o.get('name')}: top-1 flipped on samples {shown}{more}")
    return notes


# --------------------------------------------------------------------------- compatibility
# A convert artifact carries ``preflight`` (edgeopt.inspect/1, trimmed by edgeopt.accelerator),
# an optional ``edgetpu_compiler`` block and ``notes`` (incl. the runtime's host-CPU notes).
# Both renderers draw the same blocks: ("p", text), ("table", (headers, rows)), ("ul", items).

_COMPAT_OPS = 25


def compat_blocks(sec: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The target-compatibility blocks of one artifact (empty without a pre-flight)."""
    pf = sec.get("preflight")
    if not isinstance(pf, Mapping):
        return []
    blocks: list[tuple[str, Any]] = []
    summary = pf.get("summary") or {}
    if pf.get("error") and not summary:
        blocks.append(("p", f"Pre-flight could not analyse the model: {pf['error']}"))
    if summary.get("verdict"):
        blocks.append(("p", f"Pre-flight ({pf.get('delegate')}): {summary['verdict']}"))
    blocks += _partition_blocks(pf.get("partition"))
    ana, meas, ort = pf.get("analyzer") or {}, pf.get("measurement") or {}, pf.get("runtime") or {}
    if ana:
        said = ("reports the model GPU-compatible" if ana.get("compatible") else
                "reports GPU incompatibilities") if ana.get("available") else (
                f"not available ({ana.get('error')})")
        blocks.append(("p", f"LiteRT GPU analyzer: {said}"))
    if meas:
        blocks.append(("p", f"XNNPACK placement: {meas.get('source')}"))
    if ort:
        kernels = ", ".join(ort.get("int8_kernels") or []) or "none"
        blocks.append(("p", f"ONNX Runtime providers {', '.join(ort.get('providers') or [])}; "
                            f"int8 kernels used: {kernels}"))
    off = [o for o in pf.get("ops") or [] if not o.get("delegated")]
    if off:
        rows = [[fmt(o.get("index")), o.get("op"), o.get("runs_on"),
                 "; ".join(r.get("message", "") for r in o.get("reasons") or []) or "—",
                 o.get("suggestion") or "—"] for o in off[:_COMPAT_OPS]]
        blocks.append(("table", (["#", "op", "runs on", "why not", "suggestion"], rows)))
        if len(off) > _COMPAT_OPS:
            blocks.append(("p", f"({len(off) - _COMPAT_OPS} more in report.json)"))
    if pf.get("ops_note"):
        blocks.append(("p", pf["ops_note"]))
    blocks += _compiler_blocks(sec.get("edgetpu_compiler"))
    shown = {body for kind, body in blocks if kind == "p"}
    notes = [n for n in dict.fromkeys([*(pf.get("notes") or []), *(sec.get("notes") or [])])
             if n not in shown]
    if notes:
        blocks.append(("ul", notes))
    return blocks


def _partition_blocks(part: Mapping[str, Any] | None) -> list[tuple[str, Any]]:
    if not isinstance(part, Mapping):
        return []
    n_tpu = part.get("tpu_op_count", len(part.get("tpu_ops") or []))
    n_cpu = part.get("cpu_op_count", len(part.get("cpu_ops") or []))
    first = part.get("first_unmapped_op")
    text = (f"Edge TPU partition: {n_tpu} ops on the TPU, {n_cpu} on the CPU, "
            f"{part.get('subgraphs')} subgraph(s)")
    if first:
        why = "; ".join(r.get("message", "") for r in first.get("reasons") or [])
        text += f"; the graph breaks at #{first.get('index')} {first.get('op')} ({why})"
    return [("p", text), ("p", f"Parameters: {part.get('parameter_estimate')}")]


def _compiler_blocks(comp: Mapping[str, Any] | None) -> list[tuple[str, Any]]:
    if not isinstance(comp, Mapping):
        return []
    if comp.get("status") == "not_available":
        return [("p", str(comp.get("message")))]
    version = comp.get("version") or ""
    if comp.get("status") != "compiled":
        return [("p", f"edgetpu_compiler {version} failed: {comp.get('error')} "
                      "(its output is in report.json)")]
    model = comp.get("model") or {}
    blocks: list[tuple[str, Any]] = [("p", (
        f"edgetpu_compiler {version}: {fmt(comp.get('ops_tpu'))} of "
        f"{fmt(comp.get('total_ops'))} ops mapped to the Edge TPU, {fmt(comp.get('ops_cpu'))} on "
        f"the CPU, {fmt(comp.get('subgraphs'))} subgraph(s); on-chip parameter memory "
        f"{fmt_bytes(comp.get('on_chip_bytes'))} used, "
        f"{fmt_bytes(comp.get('on_chip_remaining_bytes'))} free; off-chip "
        f"{fmt_bytes(comp.get('off_chip_bytes'))}. Compiled model {model.get('path')}, log "
        f"{comp.get('log') or '—'}."))]
    rows = [[r.get("op"), fmt(r.get("count")), r.get("status")]
            for r in comp.get("operators") or []]
    if rows:
        blocks.append(("table", (["op", "count", "compiler status"], rows)))
    diffs = comp.get("differences") or []
    if diffs:
        blocks += [("p", "Differences from the pre-flight prediction:"), ("ul", diffs)]
    else:
        blocks.append(("p", "The compiler's result agrees with the pre-flight prediction."))
    return blocks


def _md_compat(sec: Mapping[str, Any], head: str) -> list[str]:
    blocks = compat_blocks(sec)
    if not blocks:
        return []
    lines = [f"{head} Target compatibility", ""]
    for kind, body in blocks:
        if kind == "table":
            lines += _md_table(*body) + [""]
        elif kind == "ul":
            lines += [f"- {n}" for n in body] + [""]
        else:
            lines += [str(body), ""]
    return lines


# --------------------------------------------------------------------------- Markdown


def _md_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    def cell(s: Any) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return lines


def render_markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown (tables, no plots: those are in the HTML page)."""
    kind = report.get("kind", "report")
    lines = [f"# edgeopt {kind} report", "",
             f"Created {report.get('created', '—')} · schema `{report.get('schema', '—')}`", ""]
    lines += _md_gates(report.get("gates"))
    lines += _md_models(report)
    if kind == "convert":
        lines += _md_targets(report)
    for title, sec in evaluations(report):
        head = "##" if kind != "convert" else f"## {title} —"
        lines += _md_section(sec, head)
    lines += _md_notes(report)
    return "\n".join(lines) + "\n"


def _gates_title(gates: Mapping[str, Any]) -> str:
    """Compare gates always decide the exit code; convert's accelerator checks only with
    ``--strict`` (``gates.strict``), so say which."""
    verdict = "PASSED" if gates.get("passed") else "FAILED"
    if gates.get("strict") is None:
        return f"Gates: {verdict}"
    if gates["strict"]:
        return f"Accelerator checks (--strict): {verdict}"
    return f"Accelerator checks: {verdict} (informational; --strict makes a failure fail)"


def _md_gates(gates: Mapping[str, Any] | None) -> list[str]:
    if not gates or not gates.get("results"):
        return []
    lines = [f"**{_gates_title(gates)}**", ""]
    lines += [f"- {'✅' if r.get('passed') else '❌'} {r.get('message', r.get('gate'))}"
              for r in gates["results"]]
    return lines + [""]


def _md_models(report: Mapping[str, Any]) -> list[str]:
    models = report.get("models") or {}
    rows = []
    for role in ("reference", "candidate", "source"):
        m = models.get(role) if isinstance(models, Mapping) else None
        if isinstance(m, Mapping):
            rows.append([role, m.get("path", "—"), m.get("format", "—"),
                         m.get("precision", "—"), fmt_bytes(m.get("size_bytes")),
                         m.get("backend", "—")])
    data = report.get("data") or {}
    lines = []
    if rows:
        lines += ["## Models", ""]
        lines += _md_table(["role", "path", "format", "precision", "size", "backend"], rows)
        lines.append("")
    if data:
        labels = data.get("labels") or {}
        lines += [f"Data: `{data.get('source', '—')}`, {fmt(data.get('count'))} samples"
                  + (f", labels from `{labels.get('source')}`" if labels else ", no labels"), ""]
    return lines


_TARGET_COLUMNS = ["artifact", "format", "precision", "size", "p50 float ms", "p50 quant ms",
                   "speedup", "SQNR dB", "accuracy drop"]


def _target_rows(report: Mapping[str, Any]) -> list[list[str]]:
    """One summary row per evaluated artifact (shared by the Markdown and HTML renderers)."""
    rows = []
    for title, sec in evaluations(report):
        ref, cand = latency_pair(sec)
        first = (sec.get("drift") or [{}])[0]
        acc = ((sec.get("task") or {}).get("metrics") or {}).get("accuracy") or {}
        rows.append([title, sec.get("format", "—"), sec.get("precision", "—"),
                     fmt_bytes(_size(sec)[1]), fmt((ref or {}).get("p50_ms")),
                     fmt((cand or {}).get("p50_ms")), _speedup(ref, cand),
                     fmt((first.get("metrics") or {}).get("sqnr_db")), _pts(acc.get("drop"))])
    return rows


def _md_targets(report: Mapping[str, Any]) -> list[str]:
    rows = _target_rows(report)
    if not rows:
        return []
    return ["## Targets", ""] + _md_table(_TARGET_COLUMNS, rows) + [""]


def _md_section(sec: Mapping[str, Any], head: str) -> list[str]:
    lines: list[str] = []
    if sec.get("status") == "failed" or sec.get("error"):
        return [f"{head} failed", "", str(sec.get("error", "")), ""]
    task = sec.get("task") or {}
    if task.get("metrics"):
        lines += [f"{head} Task metrics (float vs quantized, n={task.get('num_samples')})", ""]
        lines += _md_table([c[0] for c in _TASK_COLS],
                           ([f(m) for _, f in _TASK_COLS] for m in task["metrics"].items()))
        ch = task.get("changed") or {}
        lines += ["", f"{ch.get('broken', 0)} samples became wrong, {ch.get('fixed', 0)} became "
                  "right.", ""]
    drift = sec.get("drift") or []
    if drift:
        lines += [f"{head} Output drift", ""]
        lines += _md_table([c[0] for c in _DRIFT_COLS], ([f(o) for _, f in _DRIFT_COLS]
                                                         for o in drift))
        lines += [""] + [f"- {n}" for n in _skipped_notes(drift) + _flipped_note(drift)] + [""]
    lines += _md_layers(sec.get("per_layer"), head)
    lines += _md_latency(sec, head)
    lines += _md_compat(sec, head)
    return lines


def _md_layers(pl: Mapping[str, Any] | None, head: str) -> list[str]:
    if not pl:
        return []
    if not pl.get("available"):
        return [f"{head} Per-layer", "", f"Not available: {pl.get('reason', 'unknown')}", ""]
    layers = pl.get("layers") or []
    lines = [f"{head} Per-layer error, worst first ({pl.get('method')}, "
             f"{fmt(pl.get('num_samples'))} samples)", ""]
    if pl.get("scope"):
        lines += [f"_{pl['scope']}_", ""]
    if pl.get("calibration"):
        lines += [f"_Re-quantized with {pl['calibration']}._", ""]
    lines += _md_table([c[0] for c in _LAYER_COLS],
                       ([f(e) for _, f in _LAYER_COLS] for e in layers[:_TOP_LAYERS]))
    if len(layers) > _TOP_LAYERS:
        lines.append(f"\n({len(layers) - _TOP_LAYERS} more in report.json)")
    return lines + [""]


def _md_latency(sec: Mapping[str, Any], head: str) -> list[str]:
    ref, cand = latency_pair(sec)
    if not ref and not cand:
        return []
    rows = [[name] + [fmt((s or {}).get(k)) for k in _LAT_COLS]
            for name, s in (("float", ref), ("quantized", cand)) if s]
    lines = [f"{head} Latency (ms; speedup at p50 {_speedup(ref, cand)})", ""]
    return lines + _md_table(["model", *_LAT_COLS], rows) + [""]


def _md_notes(report: Mapping[str, Any]) -> list[str]:
    notes = list(report.get("notes") or [])
    notes += list((report.get("data") or {}).get("warnings") or [])
    return (["## Notes", ""] + [f"- {n}" for n in notes] + [""]) if notes else []


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
 color:#1d2330;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid
 #d9dde5;padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}
.meta{color:#5b6475;font-size:12px}.card{background:#fff;border:1px solid #dfe3ea;
 border-radius:8px;padding:14px 16px;margin:12px 0}
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


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


_NUMERIC = re.compile(r"^[-+]?(\d|∞|—|n/a|\[|yes$|no$)")


def _html_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A table; numbers are right-aligned, text left-aligned (and allowed to wrap)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for r in rows:
        cells = "".join(f"<td>{_e(c)}</td>" if i == 0 or _NUMERIC.match(str(c))
                        else f'<td class="{"w" if len(str(c)) > 40 else "l"}">{_e(c)}</td>'
                        for i, c in enumerate(r))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_html(report: Mapping[str, Any]) -> str:
    """The report as one self-contained HTML page (inline CSS and SVG, no scripts)."""
    kind = report.get("kind", "report")
    parts = [f"<h1>edgeopt {_e(kind)} report</h1>",
             f'<div class="meta">created {_e(report.get("created", "—"))} · '
             f'schema {_e(report.get("schema", "—"))} · {_e(_host_line(report))}</div>']
    parts.append(_html_gates(report.get("gates")))
    parts.append(_html_models(report))
    if kind == "convert":
        parts.append(_html_targets(report))
    for title, sec in evaluations(report):
        if kind == "convert":
            parts.append(f"<h2>{_e(title)}</h2>")
        parts.append(_html_section(sec))
    parts.append(_html_notes(report))
    body = "\n".join(p for p in parts if p)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>edgeopt {_e(kind)} report</title><style>{_CSS}</style></head>"
            f"<body><main>\n{body}\n</main></body></html>\n")


def _host_line(report: Mapping[str, Any]) -> str:
    host = report.get("host") or {}
    tools = report.get("tools") or {}
    versions = ", ".join(f"{k} {v}" for k, v in tools.items() if v)
    where = host.get("cpu") or host.get("os", "")
    return f"{where} ({host.get('cpu_count', '?')} CPUs) · {versions}"


def _html_gates(gates: Mapping[str, Any] | None) -> str:
    if not gates or not gates.get("results"):
        return ""
    ok = bool(gates.get("passed"))
    items = "".join(f"<li>{'✔' if r.get('passed') else '✘'} {_e(r.get('message', ''))}</li>"
                    for r in gates["results"])
    title = (_gates_title(gates) if gates.get("strict") is not None
             else f"Gates {'passed' if ok else 'FAILED'}")
    return f'<div class="gates {"pass" if ok else "fail"}">{_e(title)}<ul>{items}</ul></div>'


def _html_models(report: Mapping[str, Any]) -> str:
    models = report.get("models") or {}
    rows = []
    for role in ("reference", "candidate", "source"):
        m = models.get(role) if isinstance(models, Mapping) else None
        if isinstance(m, Mapping):
            rows.append([role, m.get("path", "—"), m.get("format", "—"), m.get("precision", "—"),
                         fmt_bytes(m.get("size_bytes")), m.get("backend", "—")])
    data = report.get("data") or {}
    out = ""
    if rows:
        out += "<h2>Models</h2>" + _html_table(
            ["role", "path", "format", "precision", "size", "backend"], rows)
    if data:
        labels = data.get("labels") or {}
        out += (f'<p class="note">Data {_e(data.get("source", "—"))}: '
                f'{_e(fmt(data.get("count")))} samples; '
                + (f'labels from {_e(labels.get("source"))}' if labels else "no labels") + "</p>")
    return out


def _html_targets(report: Mapping[str, Any]) -> str:
    rows = _target_rows(report)
    if not rows:
        return ""
    return "<h2>Targets</h2>" + _html_table(_TARGET_COLUMNS, rows)


def _html_section(sec: Mapping[str, Any]) -> str:
    if sec.get("status") == "failed" or sec.get("error"):
        return f'<div class="card fail">failed: {_e(sec.get("error", ""))}</div>'
    parts = [_html_task(sec.get("task")), _html_drift(sec.get("drift") or []),
             _html_layers(sec.get("per_layer")), _html_latency(sec), _html_compat(sec)]
    return "\n".join(p for p in parts if p)


def _html_task(task: Mapping[str, Any] | None) -> str:
    if not task:
        return ""
    if not task.get("metrics"):
        why = (task.get("skipped") or {}).get("all", "")
        return f'<h3>Task metrics</h3><p class="note">Not computed: {_e(why)}</p>'
    ch = task.get("changed") or {}
    boot = task.get("bootstrap") or {}
    rows = [[f(m) for _, f in _TASK_COLS] for m in task["metrics"].items()]
    return (f'<h3>Task metrics — float vs quantized (n={_e(task.get("num_samples"))})</h3>'
            + _html_table([c[0] for c in _TASK_COLS], rows)
            + f'<p class="note">{_e(ch.get("broken", 0))} samples became wrong, '
            f'{_e(ch.get("fixed", 0))} became right. Intervals: {_e(boot.get("method", ""))} '
            f'bootstrap, {_e(boot.get("resamples", ""))} resamples, seed '
            f'{_e(boot.get("seed", ""))}; "real loss" = the interval excludes 0.</p>')


def _html_drift(drift: Sequence[Mapping[str, Any]]) -> str:
    if not drift:
        return ""
    rows = [[f(o) for _, f in _DRIFT_COLS] for o in drift]
    notes = "".join(f"<li>{_e(n)}</li>" for n in _skipped_notes(drift) + _flipped_note(drift))
    plots = "".join(
        svg_scatter(o["scatter"]["reference"], o["scatter"]["candidate"],
                    title=f"{o.get('name')}: quantized vs float",
                    xlabel="float (reference)", ylabel="quantized (candidate)")
        for o in drift[:4] if o.get("scatter")
    )
    return ("<h3>Output drift</h3>" + _html_table([c[0] for c in _DRIFT_COLS], rows)
            + (f'<ul class="note">{notes}</ul>' if notes else "")
            + (f'<div class="plots">{plots}</div>' if plots else ""))


def _html_layers(pl: Mapping[str, Any] | None) -> str:
    if not pl:
        return ""
    if not pl.get("available"):
        return (f'<h3>Per-layer error</h3><p class="note">Not available: '
                f'{_e(pl.get("reason", "unknown"))}</p>')
    layers = (pl.get("layers") or [])[:_TOP_LAYERS]
    labels = [f"{e.get('layer') or e.get('tensor')} ({e.get('op')})" for e in layers]
    chart = svg_bar_chart(labels, [e.get("sqnr_db") for e in layers],
                          title="Per-layer SQNR (dB), worst first",
                          tooltips=[str(e.get("tensor")) for e in layers])
    rows = [[f(e) for _, f in _LAYER_COLS] for e in layers]
    return (f'<h3>Per-layer error ({_e(pl.get("method"))}, {_e(fmt(pl.get("num_samples")))} '
            f'samples)</h3><p class="note">{_e(pl.get("scope", ""))}'
            + (f' Re-quantized with {_e(pl["calibration"])}.' if pl.get("calibration") else "")
            + f"</p>{chart}"
            + _html_table([c[0] for c in _LAYER_COLS], rows))


def _html_latency(sec: Mapping[str, Any]) -> str:
    ref, cand = latency_pair(sec)
    if not ref and not cand:
        return ""
    series = [(name, s.get("samples_ms") or []) for name, s in (("float", ref), ("quantized", cand))
              if s]
    chart = ""
    if any(len(v) > 1 for _, v in series):
        chart = svg_histogram(series, title="Latency per run (ms)", xlabel="ms")
    rows = [[name] + [fmt((s or {}).get(k)) for k in _LAT_COLS]
            for name, s in (("float", ref), ("quantized", cand)) if s]
    return (f"<h3>Latency — speedup at p50 {_e(_speedup(ref, cand))}</h3>" + chart
            + _html_table(["model", *_LAT_COLS], rows))


def _html_compat(sec: Mapping[str, Any]) -> str:
    blocks = compat_blocks(sec)
    if not blocks:
        return ""
    parts = ["<h3>Target compatibility</h3>"]
    for kind, body in blocks:
        if kind == "table":
            parts.append(_html_table(*body))
        elif kind == "ul":
            parts.append('<ul class="note">' + "".join(f"<li>{_e(n)}</li>" for n in body)
                         + "</ul>")
        else:
            parts.append(f"<p>{_e(body)}</p>")
    return "".join(parts)


def _html_notes(report: Mapping[str, Any]) -> str:
    notes = list(report.get("notes") or []) + list((report.get("data") or {}).get("warnings")
                                                   or [])
    if not notes:
        return ""
    return "<h2>Notes</h2><ul class=\"note\">" + "".join(f"<li>{_e(n)}</li>" for n in notes) + (
        "</ul>")


def print_summary(report: Mapping[str, Any], file: Any = sys.stdout) -> None:
    """A few human lines for the terminal: gates, task metrics, worst output and layer."""
    for title, sec in evaluations(report):
        acc = ((sec.get("task") or {}).get("metrics") or {}).get("accuracy")
        if acc:
            ci = (f" (95% CI of drop [{_pts(acc['ci_low'])}, {_pts(acc['ci_high'])}])"
                  if "ci_low" in acc else "")
            print(f"{title}: accuracy float {_pct(acc['float'])}, quantized "
                  f"{_pct(acc['quantized'])}, drop {_pts(acc['drop'])}{ci}", file=file)
        for o in sec.get("drift") or []:
            m = o.get("metrics") or {}
            print(f"{title}: output {o.get('name')}: SQNR {fmt(m.get('sqnr_db'))} dB, cosine "
                  f"{fmt(m.get('cosine'), 6)}, top-1 agreement {_pct(m.get('top1_agreement'))}",
                  file=file)
        pl = sec.get("per_layer") or {}
        if pl.get("available") and pl.get("layers"):
            w = pl["layers"][0]
            print(f"{title}: worst layer {w.get('layer') or w.get('tensor')} ({w.get('op')}): "
                  f"SQNR {fmt(w.get('sqnr_db'))} dB", file=file)
        elif pl:
            print(f"{title}: per-layer: not available ({pl.get('reason')})", file=file)


# --------------------------------------------------------------------------- SVG plots
# Hand-drawn SVG keeps the page self-contained: no plotting library, no scripts, no network.

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
