"""A report document -> its block list (the one description both renderers draw).

Input is the ``edgeopt.report/1`` JSON as ``edgeopt.results`` writes it (every section present;
``task``, ``latency`` and the post-build blocks may be null / absent where the schema says so).
Deep payloads owned by other modules (per-layer rows, pre-flight ops, task metric entries) are
read with ``.get`` where their own schema makes a key optional.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .blocks import Block, Bullets, Heading, Para, Plots, Verdict, table
from .format import fmt, fmt_bytes, pct, pts, speedup
from .svg import svg_bar_chart, svg_histogram, svg_scatter
from .tune import tune_blocks

Row = Callable[[Any], str]

def _worst(o: Mapping[str, Any]) -> str:
    stats = ((o.get("per_sample") or {}).get("metrics") or {}).get("cosine") or {}
    worst = stats.get("worst") or []
    return f"#{worst[0]}" if worst else "—"


DRIFT_COLUMNS: list[tuple[str, Row]] = [
    ("output", lambda o: o["name"]),
    ("kind", lambda o: o.get("kind") or "—"),
    ("shape", lambda o: "x".join(str(d) for d in o["shape"])),
    ("SQNR dB", lambda o: fmt(o["metrics"].get("sqnr_db"))),
    ("SQNR dB worst sample", lambda o: fmt(o["metrics"].get("sqnr_db_min"))),
    ("cosine mean", lambda o: fmt(o["metrics"].get("cosine_mean", o["metrics"].get("cosine")),
                                  6)),
    ("cosine p5", lambda o: fmt(o["metrics"].get("cosine_p5"), 6)),
    ("cosine min", lambda o: fmt(o["metrics"].get("cosine_min"), 6)),
    ("worst sample", _worst),
    ("max abs err", lambda o: fmt(o["metrics"].get("max_abs_error"))),
    ("rel err", lambda o: fmt(o["metrics"].get("relative_error"))),
]
# Shown only when some output is a classifier / an embedding (they mean nothing elsewhere).
CLASS_COLUMNS: list[tuple[str, Row]] = [
    ("top-1 agree", lambda o: pct(o["metrics"].get("top1_agreement"))),
    ("top-5 agree", lambda o: pct(o["metrics"].get("top5_agreement"))),
    ("KL", lambda o: fmt(o["metrics"].get("kl_divergence_mean"))),
    ("flipped", lambda o: fmt((o["classifier"] or {}).get("num_flipped"))),
]
EMBEDDING_COLUMNS: list[tuple[str, Row]] = [
    ("NN agree", lambda o: pct(o["metrics"].get("retrieval_top1_agreement"))),
    ("top-5 NN overlap", lambda o: pct(o["metrics"].get("retrieval_top5_overlap"))),
]
TASK_COLUMNS: list[tuple[str, Row]] = [
    ("metric", lambda m: m[0]),
    ("float", lambda m: pct(m[1]["float"])),
    ("quantized", lambda m: pct(m[1]["quantized"])),
    ("drop", lambda m: pts(m[1]["drop"])),
    ("95% CI of drop", lambda m: (f"[{pts(m[1]['ci_low'])}, {pts(m[1]['ci_high'])}]"
                                  if "ci_low" in m[1] else "—")),
    ("real loss?", lambda m: ("yes" if m[1].get("significant") and m[1]["drop"] > 0
                              else "no" if "significant" in m[1] else "—")),
]
LAYER_COLUMNS: list[tuple[str, Row]] = [
    ("rank", lambda e: fmt(e.get("rank"))),
    ("layer", lambda e: e.get("layer") or "—"),
    ("tensor", lambda e: e.get("tensor")),
    ("op", lambda e: e.get("op")),
    ("own SQNR dB", lambda e: fmt(e.get("sqnr_db"))),
    ("cumulative dB", lambda e: fmt(e.get("sqnr_db_cumulative"))),
    ("keep-float gain dB", lambda e: fmt(e.get("gain_db"))),
    ("NaN/inf samples", lambda e: fmt(e.get("nonfinite")) if e.get("nonfinite") else "—"),
    ("suggestion", lambda e: e.get("suggestion") or "—"),
]
LATENCY_COLUMNS = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "runs")
TARGET_COLUMNS = ["artifact", "status", "format", "precision", "size", "peak memory",
                  "p50 float ms", "p50 quant ms", "speedup", "SQNR dB", "cosine mean / min",
                  "accuracy drop"]
TOP_LAYERS = 25
COMPAT_OPS = 25
SCATTER_PLOTS = 4  # outputs whose float-vs-quantized scatter is drawn


def _rows(columns: list[tuple[str, Row]], items: Sequence[Any]) -> Any:
    return table([c[0] for c in columns], ([f(x) for _, f in columns] for x in items))


# ------------------------------------------------------------------------------ navigation


def evaluations(report: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(title, section) pairs: a compare report is one evaluation (the report itself); a
    convert report has one per artifact of each target, one per format that failed
    (``status`` failed, ``error``), and a target that failed before any format was tried is
    its own section. A section without ``status`` is a measured artifact."""
    if report["kind"] != "convert":
        return [("candidate", report)]
    out: list[tuple[str, Mapping[str, Any]]] = []
    for t in report["targets"]:
        failures = t.get("failures") or []
        if t["status"] != "ok" and not failures and not t["artifacts"]:
            out.append((t["name"], t))
        out += [(f"{t['name']} · {f['file']}", f) for f in failures]
        out += [(f"{t['name']} · {a['file']}", a) for a in t["artifacts"]]
    return out


def is_failure(section: Mapping[str, Any]) -> bool:
    """A section that holds an error instead of measurements (any status but ``ok``)."""
    return section.get("status", "ok") != "ok" and "error" in section


def latency_pair(section: Mapping[str, Any]) -> tuple[Mapping | None, Mapping | None]:
    """(reference stats, candidate stats) of a section's ``latency`` (both None without)."""
    lat = section.get("latency")
    return (lat["reference"], lat["candidate"]) if lat else (None, None)


def size_pair(section: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(reference bytes, candidate bytes) of a compare report or a convert artifact."""
    if "size_bytes" in section:
        return section.get("float_size_bytes"), section["size_bytes"]
    models = section.get("models") or {}
    return ((models.get("reference") or {}).get("size_bytes"),
            (models.get("candidate") or {}).get("size_bytes"))


# ------------------------------------------------------------------------------ the document


def report_blocks(report: Mapping[str, Any]) -> list[Block]:
    """Every block of a report, in page order."""
    kind = report["kind"]
    blocks: list[Block] = [Heading(f"edgeopt {kind} report", 1),
                           Para(f"Created {report['created']} · schema {report['schema']} · "
                                f"{_host_line(report)}", note=True)]
    if kind == "convert" and report["synthetic_calibration"]:
        blocks.append(Verdict("SYNTHETIC CALIBRATION — do not ship these artifacts", False, ()))
    blocks += _gates(report["gates"])
    blocks += _models(report)
    if kind == "convert":
        blocks += _targets(report)
        blocks += tune_blocks(report)  # edgeopt tune / convert --auto: every candidate
    level = 3 if kind == "convert" else 2
    for title, sec in evaluations(report):
        if kind == "convert":
            blocks.append(Heading(title, 2))
        blocks += section_blocks(sec, level)
    notes = [*report["notes"], *report["data"]["warnings"]]
    if notes:
        blocks += [Heading("Notes", 2), Bullets(tuple(notes))]
    return blocks


def _host_line(report: Mapping[str, Any]) -> str:
    host, tools = report["host"], report["tools"]
    versions = ", ".join(f"{k} {v}" for k, v in tools.items() if v)
    return f"{host.get('cpu') or host.get('os')} ({host.get('cpu_count')} CPUs) · {versions}"


def gates_title(gates: Mapping[str, Any]) -> str:
    """Compare gates always decide the exit code; convert's accelerator checks only with
    ``--strict`` (``gates.strict``), its budget checks (``binding``, e.g. memory_budget_mb)
    always, so say which."""
    verdict = "PASSED" if gates["passed"] else "FAILED"
    if gates["strict"] is None:
        return f"Gates: {verdict}"
    if gates["strict"]:
        return f"Accelerator checks (--strict): {verdict}"
    failed = [r for r in gates["results"] if not r["passed"]]
    if failed and any(r.get("binding") for r in failed):
        return "Checks: FAILED (a budget of the target profile is exceeded)"
    if any(r.get("binding") for r in gates["results"]) and not failed:
        return "Checks: PASSED"
    return f"Accelerator checks: {verdict} (informational; --strict makes a failure fail)"


def _gates(gates: Mapping[str, Any]) -> list[Block]:
    if not gates["results"]:
        return []
    items = tuple((bool(r["passed"]), str(r["message"])) for r in gates["results"])
    return [Verdict(gates_title(gates), bool(gates["passed"]), items)]


def _models(report: Mapping[str, Any]) -> list[Block]:
    models = report["models"]
    rows = [[role, m["path"], m["format"], m["precision"], fmt_bytes(m["size_bytes"]),
             m.get("backend") or "—"]
            for role in ("reference", "candidate", "source") if (m := models.get(role))]
    data = report["data"]
    labels = data["labels"]
    line = (f"Data: {data['source']} ({data['role']}), {fmt(data['count'])} samples"
            + (f", labels from {labels['source']}" if labels else ", no labels"))
    return [Heading("Models", 2),
            table(["role", "path", "format", "precision", "size", "backend"], rows),
            Para(line, note=True)]


def _targets(report: Mapping[str, Any]) -> list[Block]:
    rows = []
    for title, sec in evaluations(report):
        if is_failure(sec):
            rows.append([title, f"{sec['status']}: {sec['error_type']}", sec.get("format", "—"),
                         sec.get("precision", "—")] + ["—"] * 8)
            continue
        ref, cand = latency_pair(sec)
        first = sec["drift"][0]["metrics"] if sec["drift"] else {}
        acc = ((sec["task"] or {}).get("metrics") or {}).get("accuracy") or {}
        mem = (sec.get("memory") or {}).get("peak_working_set_bytes")
        status = sec.get("status") or (sec.get("validation") or {}).get("status", "ok")
        rows.append([title, status, sec["format"], sec["precision"],
                     fmt_bytes(sec["size_bytes"]), fmt_bytes(mem) if mem is not None else "—",
                     fmt((ref or {}).get("p50_ms")), fmt((cand or {}).get("p50_ms")),
                     speedup((sec["latency"] or {}).get("speedup_p50")),
                     fmt(first.get("sqnr_db")),
                     f"{fmt(first.get('cosine_mean', first.get('cosine')), 5)} / "
                     f"{fmt(first.get('cosine_min'), 5)}", pts(acc.get("drop"))])
    return [Heading("Targets", 2), table(TARGET_COLUMNS, rows)] if rows else []


# ------------------------------------------------------------------------------ one evaluation


def section_blocks(sec: Mapping[str, Any], level: int) -> list[Block]:
    """One evaluation (a compare report, a convert artifact) or a failed target / format."""
    if is_failure(sec):
        return [Verdict(f"{sec['status']} ({sec['error_type']})", False,
                        ((False, sec["error"]),))]
    out = _validation(sec.get("validation"), level)
    out += _task(sec["task"], level) + _drift(sec["drift"], level)
    if sec.get("per_layer"):  # compare reports and convert artifacts (unless disabled)
        out += _layers(sec["per_layer"], level)
    out += _latency(sec, level)
    out += _memory(sec.get("memory"), level)
    if "preflight" in sec:  # convert artifacts
        compat = compat_blocks(sec)
        if compat:
            out += [Heading("Target compatibility", level), *compat]
    return out


def _task(task: Mapping[str, Any] | None, level: int) -> list[Block]:
    if task is None:
        return []
    if "metrics" not in task:
        return [Heading("Task metrics", level),
                Para(f"Not computed: {task['skipped'].get('all', '')}", note=True)]
    ch, boot = task["changed"], task["bootstrap"]
    return [Heading(f"Task metrics — float vs quantized (n={task['num_samples']})", level),
            _rows(TASK_COLUMNS, list(task["metrics"].items())),
            Para(f"{ch['broken']} samples became wrong, {ch['fixed']} became right. Intervals: "
                 f"{boot['method']} bootstrap, {boot['resamples']} resamples, seed "
                 f"{boot['seed']}; \"real loss\" = the interval excludes 0.", note=True)]


def _validation(v: Mapping[str, Any] | None, level: int) -> list[Block]:
    if not v or v["status"] == "ok":
        return []
    items = tuple((False, f["message"]) for f in v["findings"])
    if v.get("more"):
        items += ((False, f"(+{v['more']} more findings in report.json)"),)
    return [Verdict(f"Artifact validation: {v['status'].upper()}", False, items)]


def _drift(drift: Sequence[Mapping[str, Any]], level: int) -> list[Block]:
    if not drift:
        return []
    columns = list(DRIFT_COLUMNS)
    if any(o.get("kind") in (None, "classifier") and o.get("classifier") for o in drift):
        columns += CLASS_COLUMNS
    if any(o.get("kind") == "embedding" for o in drift):
        columns += EMBEDDING_COLUMNS
    out: list[Block] = [Heading("Output drift (per sample: mean, p5, worst)", level),
                        _rows(columns, drift)]
    notes = _kind_notes(drift) + _skipped_notes(drift) + _flipped_notes(drift)
    if notes:
        out.append(Bullets(tuple(notes)))
    plots = tuple(svg_scatter(o["scatter"]["reference"], o["scatter"]["candidate"],
                              title=f"{o['name']}: quantized vs float",
                              xlabel="float (reference)", ylabel="quantized (candidate)")
                  for o in drift[:SCATTER_PLOTS] if o["scatter"])
    if plots:
        out.append(Plots(plots))
    return out


def _kind_notes(drift: Sequence[Mapping[str, Any]]) -> list[str]:
    notes = []
    for o in drift:
        if o.get("kind"):
            notes.append(f"{o['name']}: {o['kind']} ({o.get('kind_source') or 'given'})")
        if o.get("degenerate"):
            notes.append(f"{o['name']}: DEGENERATE REFERENCE — {o['degenerate']}")
        stats = ((o.get("per_sample") or {}).get("metrics") or {}).get("cosine") or {}
        if stats.get("worst"):
            worst = ", ".join(f"#{i} ({fmt(v, 5)})" for i, v in
                              zip(stats["worst"], stats["worst_values"], strict=False))
            notes.append(f"{o['name']}: worst samples by cosine: {worst}")
        if o.get("nonfinite_samples"):
            notes.append(f"{o['name']}: NaN/inf in the {o.get('nonfinite_in') or 'candidate'} "
                         f"on samples {', '.join(map(str, o['nonfinite_samples'][:20]))}")
    return notes


def _skipped_notes(drift: Sequence[Mapping[str, Any]]) -> list[str]:
    notes = []
    for o in drift:
        kind = o.get("kind")
        notes += [f"{o['name']}: {metric} skipped — {why}" for metric, why in o["skipped"].items()
                  # class metrics on a non-classifier: the kind note says it once
                  if not (kind not in (None, "classifier") and metric in
                          ("top1_agreement", "top5_agreement", "kl_divergence_mean"))]
        cls = o["classifier"] or {}
        if cls.get("kl_input"):
            notes.append(f"{o['name']}: KL divergence computed on {cls['kl_input']}")
    return notes


def _flipped_notes(drift: Sequence[Mapping[str, Any]], limit: int = 20) -> list[str]:
    notes = []
    for o in drift:
        flipped = (o["classifier"] or {}).get("flipped_top1") or []
        if flipped:
            shown = ", ".join(map(str, flipped[:limit]))
            more = f" … (+{len(flipped) - limit} more)" if len(flipped) > limit else ""
            notes.append(f"{o['name']}: top-1 flipped on samples {shown}{more}")
    return notes


def _layers(pl: Mapping[str, Any], level: int) -> list[Block]:
    if not pl["available"]:
        return [Heading("Per-layer error", level),
                Para(f"Not available: {pl['reason']}", note=True)]
    layers = pl["layers"]
    top = layers[:TOP_LAYERS]
    out: list[Block] = [Heading(f"Per-layer error, cause first ({pl['method']}, "
                                f"{fmt(pl['num_samples'])} samples)", level)]
    if pl.get("scope"):
        out.append(Para(pl["scope"], note=True))
    if pl.get("ranking"):
        out.append(Para(f"Ranking: {pl['ranking']}.", note=True))
    gain = pl.get("gain") or {}
    if gain:
        out.append(Para(f"Model output: SQNR {fmt(gain.get('base_output_sqnr_db'))} dB, worst "
                        f"cosine {fmt(gain.get('base_output_cosine_min'), 5)}; keep-float gain "
                        f"measured for {fmt(gain.get('measured'))} layer(s)"
                        + (f" ({gain['note']})" if gain.get("note") else "") + ".", note=True))
    if pl.get("nonfinite_origins"):
        out.append(Para("NaN/inf first appears at: " + ", ".join(pl["nonfinite_origins"][:5])))
    if pl.get("broken_scales"):
        out.append(Para("Broken (non-finite or absurd) quantization scales at: "
                        + ", ".join(pl["broken_scales"][:5])
                        + (f" (+{len(pl['broken_scales']) - 5} more)"
                           if len(pl["broken_scales"]) > 5 else "")))
    both = gain.get("causes_together") or {}
    if both.get("keep_float"):
        out.append(Para(f"Keeping all {len(both['tensors'])} of them float together "
                        f"(--keep-float '{both['keep_float']}'): model-output SQNR "
                        f"{fmt(both.get('output_sqnr_db'))} dB (gain {fmt(both.get('gain_db'))} "
                        f"dB), worst cosine {fmt(both.get('output_cosine_min'), 5)}"
                        + (f" — not measured: {both['why']}" if both.get("why") else "") + "."))
    if pl.get("calibration"):
        out.append(Para(f"Re-quantized with {pl['calibration']}.", note=True))
    out.append(Plots((svg_bar_chart([f"{e.get('layer') or e.get('tensor')} ({e.get('op')})"
                                     for e in top], [e.get("sqnr_db") for e in top],
                                    title="Per-layer SQNR (dB), worst first",
                                    tooltips=[str(e.get("tensor")) for e in top]),)))
    out.append(_rows(LAYER_COLUMNS, top))
    total = pl.get("rows_total", len(layers))
    if total > len(top):
        out.append(Para(f"({total - len(top)} more rows: report.json holds "
                        f"{len(layers)}; `edgeopt compare` lists all)", note=True))
    return out


def _latency(sec: Mapping[str, Any], level: int) -> list[Block]:
    lat = sec["latency"]
    if not lat:
        return []
    pairs = (("float", lat["reference"]), ("quantized", lat["candidate"]))
    out: list[Block] = [Heading(f"Latency (ms; speedup at p50 {speedup(lat['speedup_p50'])})",
                                level)]
    if any(len(s["samples_ms"]) > 1 for _, s in pairs):
        out.append(Plots((svg_histogram([(n, s["samples_ms"]) for n, s in pairs],
                                        title="Latency per run (ms)", xlabel="ms"),)))
    out.append(table(["model", *LATENCY_COLUMNS],
                     ([name] + [fmt(s[k]) for k in LATENCY_COLUMNS] for name, s in pairs)))
    out.append(Para(f"{lat['method']}; {lat['threads']} thread(s), {lat['delegate']}, "
                    f"{lat['where']}.", note=True))
    return out


def _memory(mem: Mapping[str, Any] | None, level: int) -> list[Block]:
    if not mem:
        return []
    if mem.get("peak_working_set_bytes") is None:
        return [Heading("Memory", level), Para(f"Not measured: {mem.get('error')}", note=True)]
    rows = [["peak working set", fmt_bytes(mem["peak_working_set_bytes"])],
            ["held after load", fmt_bytes(mem.get("after_load_bytes"))],
            ["model file", fmt_bytes(mem.get("model_file_bytes"))]]
    return [Heading(f"Memory (peak working set {fmt_bytes(mem['peak_working_set_bytes'])})",
                    level),
            table(["figure", "bytes"], rows),
            Para(f"{mem['method']}; {mem['where']}.", note=True)]


# ------------------------------------------------------------------------------ compatibility
# A convert artifact carries ``preflight`` (edgeopt.inspect/1, trimmed by
# edgeopt.accelerators.preflight), its accelerator's post-build block (``edgetpu_compiler``) and
# ``notes`` (incl. the runtime's host-CPU notes).


def compat_blocks(sec: Mapping[str, Any]) -> list[Block]:
    """The target-compatibility blocks of one convert artifact."""
    from edgeopt.accelerators import post_build_steps

    pf = sec["preflight"]
    summary = pf.get("summary")
    blocks: list[Block] = []
    if summary is None:
        blocks.append(Para(f"Pre-flight could not analyse the model: {pf['error']}"))
    else:
        blocks.append(Para(f"Pre-flight ({pf['delegate']}): {summary['verdict']}"))
    blocks += _partition(pf.get("partition"))
    blocks += _analyses(pf)
    off = [o for o in pf.get("ops") or [] if not o["delegated"]]
    if off:
        rows = [[fmt(o["index"]), o["op"], o["runs_on"],
                 "; ".join(r["message"] for r in o["reasons"]) or "—", o["suggestion"] or "—"]
                for o in off[:COMPAT_OPS]]
        blocks.append(table(["#", "op", "runs on", "why not", "suggestion"], rows))
        if len(off) > COMPAT_OPS:
            blocks.append(Para(f"({len(off) - COMPAT_OPS} more in report.json)", note=True))
    if pf.get("ops_note"):
        blocks.append(Para(pf["ops_note"]))
    for step in post_build_steps():
        if step.key in sec:
            blocks += step.blocks(sec[step.key])
    shown = {b.text for b in blocks if isinstance(b, Para)}
    notes = [n for n in dict.fromkeys([*pf.get("notes", []), *sec["notes"]]) if n not in shown]
    if notes:
        blocks.append(Bullets(tuple(notes)))
    return blocks


def _partition(part: Mapping[str, Any] | None) -> list[Block]:
    if part is None:
        return []
    first = part["first_unmapped_op"]
    text = (f"Edge TPU partition: {part['tpu_op_count']} ops on the TPU, "
            f"{part['cpu_op_count']} on the CPU, {part['subgraphs']} subgraph(s)")
    if first:
        why = "; ".join(r["message"] for r in first["reasons"])
        text += f"; the graph breaks at #{first['index']} {first['op']} ({why})"
    return [Para(text), Para(f"Parameters: {part['parameter_estimate']}")]


def _analyses(pf: Mapping[str, Any]) -> list[Block]:
    """The target-specific analysis blocks: GPU analyzer, XNNPACK measurement, ORT kernels."""
    out: list[Block] = []
    ana, meas, ort = pf.get("analyzer"), pf.get("measurement"), pf.get("runtime")
    if ana:
        said = ("reports the model GPU-compatible" if ana.get("compatible") else
                "reports GPU incompatibilities") if ana["available"] else (
                f"not available ({ana.get('error')})")
        out.append(Para(f"LiteRT GPU analyzer: {said}"))
    if meas:
        out.append(Para(f"XNNPACK placement: {meas.get('source')}"))
    if ort:
        kernels = ", ".join(ort.get("int8_kernels") or []) or "none"
        out.append(Para(f"ONNX Runtime providers {', '.join(ort.get('providers') or [])}; "
                        f"int8 kernels used: {kernels}"))
    return out
