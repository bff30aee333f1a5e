"""Per-layer localisation of quantization error: the cause first, then what to keep float.

Entry points (all return the report's ``per_layer`` section, see docs/report-schema.md):

* :func:`layer_report` — a float model and its quantized artifact, same format: dispatches to
* :func:`onnx_layer_report` — ONNX static QDQ, dynamic (``MatMulInteger`` /
  ``DynamicQuantizeLinear``) and weight-only artifacts: tensors matched by name, streamed one
  tensor group and one sample at a time (bounded memory), and for the worst rows the measured
  gain in model-output SQNR of keeping that layer float (``layers.onnx_graph``);
* :func:`tflite_artifact_layer_report` — a float ``.tflite`` and its quantized twin, matched by
  tensor name (``layers.tflite_tensors``);
* :func:`tflite_layer_report` — the float Keras / SavedModel source re-quantized by
  ``tf.lite.experimental.QuantizationDebugger`` (each op's own error; ``layers.tflite_debugger``).

Every row carries ``rank`` (cause first: NaN/inf origins, then measured keep-float gain, then
own error; ``layers.stats.rank_rows``), ``rank_local`` / ``rank_gain``, ``sqnr_db`` (the layer's
own error), ``keep_float`` (the ``--keep-float`` regex for that layer) and ``suggestion``.
:func:`group_scores` turns a section into the per-group sensitivity the tuning search ranks
layer groups by. tensorflow / onnx / onnxruntime are imported inside the functions.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .names import keras_layer_names, map_to_source, suggestion
from .stats import rank_gain, rank_local, rank_rows
from .tflite_debugger import TFLITE_METHOD, tflite_layer_report

__all__ = [
    "DEFAULT_GAIN_TOP", "ONNX_METHOD", "REPORT_ROWS", "TFLITE_ARTIFACT_METHOD", "TFLITE_METHOD",
    "bounded", "first_nonfinite", "group_scores", "keras_layer_names", "layer_report",
    "map_to_source", "onnx_layer_report", "rank_layers", "tflite_artifact_layer_report",
    "tflite_layer_report", "unavailable",
]

ONNX_METHOD = "onnx-activation-matching"
TFLITE_ARTIFACT_METHOD = "tflite-tensor-matching"
DEFAULT_GAIN_TOP = 8  # rows whose keep-float gain is measured (each: one edited model run)
REPORT_ROWS = 20  # rows a convert report keeps per artifact (the rest are counted)
Sample = Mapping[str, np.ndarray]
_RANKING = ("NaN/inf origins and broken (non-finite or absurd) quantization scales first (graph "
            "order), then measured keep-float gain in model-output "
            "SQNR (largest first), then own error (lowest SQNR first); tensors that only "
            "inherit NaN/inf and rows without a defined error last")


def unavailable(reason: str, method: str | None = None) -> dict[str, Any]:
    """The ``per_layer`` section when localisation could not run, with the reason."""
    return {"available": False, "method": method, "reason": reason, "layers": []}


def rank_layers(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rank rows cause-first and number them (``stats.rank_rows``; kept for callers)."""
    return rank_rows(entries)


def layer_report(reference: str | Path, candidate: str | Path, samples: Sequence[Sample], *,
                 source_layers: Sequence[str] = (), gain_top: int = DEFAULT_GAIN_TOP,
                 max_rows: int | None = None) -> dict[str, Any]:
    """Per-layer section of ``candidate`` (quantized) against ``reference`` (its float model).

    Both files must be ONNX or both TFLite; otherwise the section says why not.
    """
    ref, cand = Path(reference), Path(candidate)
    if ref.suffix == cand.suffix == ".onnx":
        return onnx_layer_report(ref, cand, samples, source_layers=source_layers,
                                 gain_top=gain_top, max_rows=max_rows)
    if ref.suffix == cand.suffix == ".tflite":
        return tflite_artifact_layer_report(ref, cand, samples, source_layers=source_layers,
                                            max_rows=max_rows)
    return unavailable(f"per-layer analysis matches a float model and its quantized twin of the "
                       f"same format; got {ref.suffix or ref.name} and {cand.suffix or cand.name}")


# ------------------------------------------------------------------------------ ONNX


def onnx_layer_report(
    float_model: str | Path,
    qdq_model: str | Path,
    samples: Sequence[Sample],
    *,
    source_layers: Sequence[str] = (),
    gain_top: int = DEFAULT_GAIN_TOP,
    max_rows: int | None = None,
    pass_bytes: int | None = None,
) -> dict[str, Any]:
    """Per-tensor error of a quantized ONNX model against its float original, cause first.

    Args:
        float_model: the float .onnx file.
        qdq_model: its quantized version (static QDQ, dynamic or weight-only).
        samples: input dicts (input name -> array shaped as the model input).
        source_layers: names of the source model's layers, to map tensor names back.
        gain_top: how many rows get their keep-float gain measured (0: none).
        max_rows: keep only the first rows (``rows_total`` says how many there were).
        pass_bytes: intermediate bytes per sample one pass may expose (default
            ``onnx_graph.PASS_BYTES``); more tensors take more passes.

    Returns:
        The ``per_layer`` section. Rows: ``sqnr_db`` (noise this tensor adds on top of its
        noisiest input), ``sqnr_db_cumulative`` (float vs quantized model at the tensor),
        ``sqnr_db_qdq`` (across its Q/DQ pair alone), ``nonfinite`` / ``origin`` / ``cause``,
        ``gain_db`` (keep-float gain in model-output SQNR, where measured). Quantized weights
        are listed under ``weights``. ``available`` is False with a reason when the candidate
        holds no quantized op.
    """
    from . import onnx_graph as og

    samples = list(samples)
    if not samples:
        return unavailable("no samples to run", ONNX_METHOD)
    with og.scratch_dir() as tmp:
        q = og.Graph(Path(qdq_model), Path(tmp))
        if not og.is_quantized(q.graph):
            return unavailable(f"{Path(qdq_model).name} has no quantized ops (no Q/DQ, "
                               "MatMulInteger or MatMulNBits nodes): nothing to localise",
                               ONNX_METHOD)
        f = og.Graph(Path(float_model), Path(tmp))
        scheme = og.scheme_of(q.graph)
        found = og.matches(f, q)
        if not found:
            return unavailable("no tensor of the float model is found by name in the quantized "
                               "one (was it quantized from another export?)", ONNX_METHOD)
        measured = og.measure(f, q, found, samples, pass_bytes or og.PASS_BYTES)
        rows = og.rows(f, q, found, measured, source_layers)
        _scale_causes(q, rows)
        picks = _gain_candidates(rows, gain_top)
        gains = og.keep_float_gains(f, q, found, [r["tensor"] for r in picks], measured,
                                    samples) if picks else {}
        base = gains.pop("__base__", None) or og.output_quality(measured.reference_outputs,
                                                                 measured.candidate_outputs)
        for r in rows:
            if r["tensor"] in gains:
                r.update(gains[r["tensor"]])
        causes = _causes(rows) if gain_top > 0 else []
        together = None
        if len(causes) > 1:  # one fix for all of them, measured as one edit
            by_tensor = {m.tensor: m for m in found}
            together = {"tensors": [r["tensor"] for r in causes],
                        "keep_float": _union_regex([r["keep_float"] for r in causes]),
                        **og.variant_gain(f, q, [by_tensor[r["tensor"]] for r in causes],
                                          measured, samples, base)}
        weights = og.weights(f, q, source_layers)
    section = _finish(rows, fmt="onnx", scheme=scheme, method=ONNX_METHOD,
                      num_samples=len(samples), max_rows=max_rows, base=base,
                      measured=len(picks), scope=(
                          "per tensor: SQNR this tensor adds on top of its inputs (from the "
                          "float-vs-quantized SQNR at the tensor and at its inputs); "
                          "sqnr_db_cumulative is the float vs quantized model SQNR at the "
                          "tensor; gain_db the model-output SQNR gained by running that layer "
                          "in float"))
    section.update(passes=measured.passes, group_bytes=measured.group_bytes,
                   weights=rank_rows(weights))
    if together is not None:
        section["gain"]["causes_together"] = together
    return section


def _scale_causes(q: Any, rows: list[dict[str, Any]]) -> None:
    """Mark every row whose own Q/DQ scale is non-finite or absurd (``broken_scale``, with the
    reason in ``scale_problem``): it is a cause whether or not NaN reaches it first — a tensor
    downstream of a -inf mask inherits NaN *and* gets an infinite scale of its own."""
    from onnx import numpy_helper

    from ..validation import scale_problem

    inits = {i.name: i for i in q.graph.initializer}
    for r in rows:
        for node in q.consumers.get(r["tensor"], []):
            if node.op_type == "QuantizeLinear" and len(node.input) > 1 \
                    and node.input[1] in inits:
                why = scale_problem(numpy_helper.to_array(inits[node.input[1]]))
                if why:
                    r["scale_problem"] = f"its quantization scale {why}"
                    r["broken_scale"] = True
                    if r.get("nonfinite"):
                        r["origin"] = True  # NaN/inf (re)starts here too
                    break


def _causes(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows that break the model by themselves: NaN/inf origins and broken scales."""
    return sorted((r for r in rows if r.get("broken_scale")
                   or (r.get("nonfinite") and r.get("origin"))),
                  key=lambda r: r.get("order") or 0)


def _union_regex(patterns: Sequence[str]) -> str:
    """One ``--keep-float`` regex matching what each of ``patterns`` matches."""
    parts: list[str] = []
    for p in patterns:  # each is names.onnx_regex's ^name(/|$) or ^(a|b)(/|$)
        inner = (p or "").removeprefix("^").removesuffix("(/|$)")
        if inner.startswith("(") and inner.endswith(")"):
            inner = inner[1:-1]
        parts += [n for n in re.split(r"(?<!\\)\|", inner) if n]
    return "^(" + "|".join(dict.fromkeys(parts)) + ")(/|$)"


def _gain_candidates(rows: Sequence[dict[str, Any]], top: int) -> list[dict[str, Any]]:
    """Causes first (NaN/inf origins, broken scales), then the lowest own SQNR of ops that
    compute something."""
    if top <= 0:
        return []
    origins = _causes(rows)
    finite = [r for r in rows if not r.get("nonfinite") and not r.get("broken_scale")
              and r.get("quantized") is not False
              and r.get("sqnr_db") is not None and math.isfinite(r["sqnr_db"])]
    finite.sort(key=lambda r: r["sqnr_db"])
    return (origins + finite)[:top]


# ------------------------------------------------------------------------------ TFLite


def tflite_artifact_layer_report(float_model: str | Path, quant_model: str | Path,
                                 samples: Sequence[Sample], *,
                                 source_layers: Sequence[str] = (),
                                 max_rows: int | None = None) -> dict[str, Any]:
    """Per-tensor error of a quantized ``.tflite`` against its float ``.tflite`` twin.

    The keep-float gain is not measured for TFLite (it needs a re-quantization: ``edgeopt tune``
    measures it); rows rank by NaN/inf origin, then own error.
    """
    from . import onnx_graph as og
    from .tflite_tensors import tflite_artifact_rows

    samples = list(samples)
    if not samples:
        return unavailable("no samples to run", TFLITE_ARTIFACT_METHOD)
    rows, (ref, cand) = tflite_artifact_rows(Path(float_model), Path(quant_model), samples,
                                             source_layers)
    if not rows:
        return unavailable("no tensor of the float model is found by name in the quantized one",
                           TFLITE_ARTIFACT_METHOD)
    scheme = "static" if any(r.get("scale") for r in rows) else "dynamic"
    return _finish(rows, fmt="tflite", scheme=scheme, method=TFLITE_ARTIFACT_METHOD,
                   num_samples=len(samples), max_rows=max_rows,
                   base=og.output_quality(ref, cand), measured=0,
                   gain_note="not measured for TFLite artifacts (needs re-quantization; "
                             "`edgeopt tune` measures it)",
                   scope="per tensor: SQNR this tensor adds on top of its inputs, float vs "
                         "quantized .tflite matched by tensor name; sqnr_db_cumulative is the "
                         "float vs quantized model SQNR at the tensor")


# ------------------------------------------------------------------------------ shared


def _finish(rows: list[dict[str, Any]], *, fmt: str, scheme: str, method: str,
            num_samples: int, max_rows: int | None, base: Mapping[str, Any], measured: int,
            scope: str, gain_note: str | None = None) -> dict[str, Any]:
    rank_local(rows)
    rank_gain(rows)
    ranked = rank_rows(rows)
    for r in ranked:
        r["suggestion"] = suggestion(r, fmt=fmt, scheme=scheme)
    total = len(ranked)
    section = {
        "available": True, "method": method, "metric": "sqnr_db", "scope": scope,
        "ranking": _RANKING, "scheme": scheme, "num_samples": num_samples,
        "rows_total": total, "nonfinite_origins": [r["tensor"] for r in ranked
                                                   if r.get("nonfinite") and r.get("origin")],
        "broken_scales": [r["tensor"] for r in ranked if r.get("broken_scale")],
        "gain": {"measured": measured, "metric": "model-output SQNR dB (mean over outputs)",
                 "base_output_sqnr_db": base.get("sqnr_db"),
                 "base_output_cosine_min": base.get("cosine_min"),
                 "base_output_nonfinite": bool(base.get("nonfinite")),
                 **({"note": gain_note} if gain_note else {})},
        "layers": ranked if max_rows is None else ranked[:max_rows],
    }
    return section


def bounded(section: Mapping[str, Any], rows: int = REPORT_ROWS) -> dict[str, Any]:
    """The section with at most ``rows`` layer rows and weight rows (``rows_total`` keeps the
    count): what a convert report stores per artifact."""
    out = dict(section)
    out["layers"] = list(section.get("layers") or [])[:rows]
    if "weights" in section:
        out["weights"] = list(section["weights"] or [])[:rows]
    out.setdefault("rows_total", len(section.get("layers") or []))
    return out


def first_nonfinite(section: Mapping[str, Any]) -> str | None:
    """The first tensor where NaN/inf appears, if the analysis saw one."""
    origins = section.get("nonfinite_origins") or []
    return origins[0] if origins else None


def group_scores(section: Mapping[str, Any], groups: Iterable[Any]) -> dict[str, float]:
    """Sensitivity of each layer group (``edgeopt.recipes.groups.LayerGroup``: ``name`` and
    keep-float ``patterns``) from a per-layer section, for the tuning search's ranking.

    A group's score is the highest of the rows whose ``node`` its patterns match: a NaN/inf
    origin scores ``1e9``; a measured keep-float gain ``1e6 + gain_db``; otherwise the row's
    own noise-to-signal ratio ``10^(-sqnr_db/10)``. Scores only order groups (higher: revert
    first); groups no row matches are left out.
    """
    rows = [r for r in section.get("layers") or [] if r.get("node")]
    out: dict[str, float] = {}
    for g in groups:
        pats = [re.compile(p) for p in getattr(g, "patterns", ())]
        best = None
        for r in rows:
            if not any(p.search(r["node"]) for p in pats):
                continue
            score = _score(r)
            best = score if best is None else max(best, score)
        if best is not None:
            out[g.name] = best
    return out


def _score(r: Mapping[str, Any]) -> float:
    if r.get("nonfinite"):
        return 1e9 if r.get("origin") else 0.0
    gain = r.get("gain_db")
    if gain is not None and not math.isnan(gain) and gain > 0:
        return 1e6 + min(gain, 1e5)
    s = r.get("sqnr_db")
    if s is None or math.isnan(s):
        return 0.0
    return 0.0 if math.isinf(s) else 10.0 ** (-s / 10.0)
