"""Accuracy drift of a quantized model against its float reference: pure numpy.

Two entry points, both used by ``edgeopt compare`` and by the converter's report:

* :func:`compare_outputs` — per output tensor: SQNR, cosine, absolute / relative errors over the
  whole output and **per sample** (mean, median, p5, min and the worst samples' indices), the
  output's *kind* (classifier, embedding, regression, detection-like: inferred from shape,
  values and name, or given), and the metrics of that kind: for classifiers top-1 / top-5
  agreement, mean KL divergence and the samples whose top-1 flipped; for embeddings
  nearest-neighbour retrieval agreement across the samples. A float reference that is constant
  over the samples is flagged (``degenerate``): nothing can be measured against it.
* :func:`task_metrics` — with ground-truth labels: accuracy, macro precision / recall / F1 and
  (binary) ROC AUC for float and quantized side by side, the drop, and a paired bootstrap
  confidence interval on each drop.

Arrays are stacked over samples along axis 0 (one row per sample). A metric that does not
apply to an output's shape or values is left out of ``metrics`` and listed in ``skipped`` with
the reason — never a crash.
Non-finite floats (an exact match has SQNR ``inf``) are kept as Python floats here; the report
writer encodes them for JSON. No tensorflow import here: this module must stay cheap.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from typing import Any

import numpy as np
from edgeopt_runtime.errors import CalibrationError, EdgeOptError, InputError

# A row is read as a probability distribution when it is non-negative and sums to 1 within this.
_PROB_SUM_TOL = 1e-3
# Floor for probabilities inside KL so a zero in the candidate does not make KL infinite.
_KL_EPS = 1e-7
# Points kept per output for the report's float-vs-quantized scatter plot.
SCATTER_POINTS = 400


# --------------------------------------------------------------------------- output metrics


class OutputKind(StrEnum):
    """What an output means, which decides the metrics that apply (values as in the CLI/JSON)."""

    CLASSIFIER = "classifier"  # class scores: probabilities or logits, [N, C]
    EMBEDDING = "embedding"  # a vector compared by angle: [N, D]
    REGRESSION = "regression"  # values compared by error: [N], [N, k]
    DETECTION = "detection"  # several rows per sample (boxes, anchors, dense maps): [N, K, ...]


# Name fragments that say what an output is (the exporters keep user-given names).
_EMBEDDING_HINTS = ("embed", "pool", "feature", "hidden", "encod", "vector", "sentence", "latent")
_CLASSIFIER_HINTS = ("logit", "prob", "class", "softmax", "score", "pred", "label")
_REGRESSION_HINTS = ("regress", "bbox", "box", "coord", "depth", "value", "offset")
UNIT_NORM_TOL = 1e-3  # rows whose L2 norm is 1 within this read as normalised embeddings
WORST_SAMPLES = 5  # worst samples named per metric
# Relative spread over the samples below which the reference counts as constant.
DEGENERATE_SPREAD = 1e-6
RETRIEVAL_MAX = 2048  # samples used for retrieval agreement (an N x N similarity matrix)
# Per-sample metrics: name -> whether higher is better.
SAMPLE_METRICS = {"sqnr_db": True, "cosine": True, "max_abs_error": False,
                  "mean_abs_error": False, "rmse": False, "relative_error": False}
GATE_ON = ("min", "p5", "mean")  # the per-sample statistic a gate compares (worst sample first)


def parse_output_kinds(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``--output-kind NAME=KIND`` (or ``KIND`` for every output) -> ``((name, kind), ...)``;
    ``"*"`` stands for every output.

    Raises:
        EdgeOptError: an item is not ``[NAME=]KIND`` with a known kind.
    """
    kinds = [k.value for k in OutputKind]
    out = []
    for item in items:
        name, sep, kind = item.rpartition("=")
        name = name.strip() if sep else "*"
        kind = kind.strip().lower()
        if kind not in kinds or (sep and not name):
            raise EdgeOptError(f"--output-kind {item!r}: expected NAME=KIND or KIND with KIND one "
                               f"of {', '.join(kinds)}")
        out.append((name, kind))
    return tuple(out)


def _given_kind(name: str, kinds: Mapping[str, str] | None) -> str | None:
    if not kinds:
        return None
    return kinds.get(name, kinds.get("*"))


def infer_kind(name: str, ref: np.ndarray) -> tuple[OutputKind, str]:
    """The kind of an output from its reference values (rows = samples), and why.

    Probabilities (rows >= 0 summing to 1) are a classifier; otherwise the output's name
    decides when it says what the output is (``sentence_embedding``, ``logits``, ``bbox``);
    rows of unit L2 norm are an embedding; ``[N, C]`` is read as classifier logits; one value
    per sample is a regression; several rows per sample are detection-like.
    """
    lower = name.lower()
    per_sample = [d for d in ref.shape[1:] if d != 1]
    if not per_sample:
        return OutputKind.REGRESSION, "one value per sample"
    if len(per_sample) >= 2:
        return OutputKind.DETECTION, f"several rows per sample (shape {list(ref.shape)})"
    view = ref.reshape(ref.shape[0], -1)
    if view.shape[1] >= 2 and view.size and is_probability_rows(view):
        return OutputKind.CLASSIFIER, "rows are probabilities (>= 0, sum to 1)"
    for kind, hints in ((OutputKind.EMBEDDING, _EMBEDDING_HINTS),
                        (OutputKind.CLASSIFIER, _CLASSIFIER_HINTS),
                        (OutputKind.REGRESSION, _REGRESSION_HINTS)):
        hit = next((h for h in hints if h in lower), None)
        if hit:
            return kind, f"output name contains {hit!r}"
    norms = np.linalg.norm(view, axis=1)
    if view.shape[1] >= 2 and norms.size and np.all(np.abs(norms - 1.0) <= UNIT_NORM_TOL):
        return OutputKind.EMBEDDING, "rows have unit L2 norm"
    return OutputKind.CLASSIFIER, (f"shape {list(ref.shape)} read as class logits (pass "
                                   f"--output-kind {name}=embedding|regression if it is not)")


def compare_outputs(
    reference: Sequence[np.ndarray],
    candidate: Sequence[np.ndarray],
    names: Sequence[str],
    *,
    scatter_points: int = SCATTER_POINTS,
    kinds: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """Drift metrics of each candidate output against the matching reference output.

    Args:
        reference: one array per output (float model), samples stacked along axis 0.
        candidate: the same outputs of the quantized model, dequantized to float.
        names: output names, in the same order.
        scatter_points: how many (reference, candidate) value pairs to keep for plotting.
        kinds: output name (or ``"*"``) -> :class:`OutputKind` value, overriding inference.

    Returns:
        One dict per output: ``name``, ``shape``, ``kind``, ``kind_source``, ``metrics``
        (name -> float: over the whole output, plus per-sample summaries such as
        ``cosine_min``), ``per_sample`` (per metric: mean / median / p5 / p95 / min / max and
        the worst samples), ``skipped`` (metric -> reason), ``classifier`` (None, or
        ``num_classes``, ``kl_input``, ``num_samples``, ``num_flipped``, ``flipped_top1``),
        ``degenerate`` (None or why the reference cannot be compared against),
        ``nonfinite_samples`` and ``scatter``.

    Raises:
        InputError: the lists differ in length, an output's shapes differ, or ``kinds`` names
            an output that does not exist.
    """
    if not (len(reference) == len(candidate) == len(names)):
        raise InputError(
            f"compare_outputs: expected as many candidate outputs and names as reference "
            f"outputs ({len(reference)}), got {len(candidate)} outputs and {len(names)} names"
        )
    given = dict(kinds or {})
    unknown = sorted(set(given) - set(map(str, names)) - {"*"})
    if unknown:
        raise InputError(f"--output-kind: no output named {', '.join(map(repr, unknown))}; the "
                         f"outputs are {', '.join(map(str, names))}")
    return [
        _compare_one(str(n), np.asarray(r), np.asarray(c), scatter_points,
                     _given_kind(str(n), given))
        for r, c, n in zip(reference, candidate, names, strict=True)
    ]


def _compare_one(name: str, ref: np.ndarray, cand: np.ndarray, scatter_points: int,
                 kind: str | None = None) -> dict:
    if ref.shape != cand.shape:
        raise InputError(
            f"output {name!r}: reference shape {list(ref.shape)} differs from candidate "
            f"shape {list(cand.shape)}"
        )
    result: dict[str, Any] = {
        "name": name,
        "shape": list(ref.shape),
        "kind": kind,
        "kind_source": "--output-kind" if kind else None,
        "metrics": {},
        "skipped": {},
        "classifier": None,
        "per_sample": None,
        "degenerate": None,
        "nonfinite_samples": [],
        "scatter": None,
    }
    if not (_is_numeric(ref) and _is_numeric(cand)):
        result["skipped"]["all"] = f"non-numeric dtype {ref.dtype}/{cand.dtype}"
        return result
    ref64, cand64 = ref.astype(np.float64), cand.astype(np.float64)
    if ref64.ndim == 0:
        ref64, cand64 = ref64.reshape(1), cand64.reshape(1)
    if ref64.size == 0:
        result["skipped"]["all"] = "output is empty"
        return result
    rows = ref64.shape[0]
    bad_rows = ~(np.isfinite(ref64.reshape(rows, -1)).all(axis=1)
                 & np.isfinite(cand64.reshape(rows, -1)).all(axis=1))
    if bad_rows.any():
        bad = int(np.count_nonzero(~np.isfinite(ref64)) + np.count_nonzero(~np.isfinite(cand64)))
        result["nonfinite"] = bad
        result["nonfinite_samples"] = np.flatnonzero(bad_rows).tolist()
        result["nonfinite_in"] = ("reference" if not np.isfinite(ref64).all() else "candidate")
        if bad_rows.all():
            result["skipped"]["all"] = f"{bad} non-finite values (NaN/inf) in the outputs"
            return result
        ref64, cand64 = ref64[~bad_rows], cand64[~bad_rows]
        result["skipped"]["nonfinite"] = (
            f"{int(bad_rows.sum())} of {rows} samples hold NaN/inf; metrics cover the others")
    if result["kind"] is None:
        inferred, why = infer_kind(name, ref64)
        result["kind"], result["kind_source"] = inferred.value, f"inferred: {why}"
    result["degenerate"] = degenerate_reason(ref64)
    _error_metrics(ref64, cand64, result["metrics"], result["skipped"])
    result["per_sample"] = per_sample_metrics(ref64, cand64)
    for metric, stats in result["per_sample"]["metrics"].items():
        if metric in ("sqnr_db", "cosine"):
            for stat in ("mean", "median", "p5", "min"):
                if stats.get(stat) is not None:
                    result["metrics"][f"{metric}_{stat}"] = stats[stat]
    if "cosine_min" in result["metrics"]:
        result["metrics"]["cosine_min_sample"] = result["metrics"]["cosine_min"]
    if result["kind"] == OutputKind.CLASSIFIER:
        _classifier_metrics(ref64, cand64, result)
    else:
        why = f"output kind {result['kind']}: class metrics apply to classifiers only"
        if classifier_view(ref64) is None:
            why = (f"not classifier-shaped ([N, C] with C >= 2): shape {list(ref.shape)} "
                   f"(output kind {result['kind']})")
        result["skipped"].update(top1_agreement=why, top5_agreement=why,
                                 kl_divergence_mean=why)
    if result["kind"] == OutputKind.EMBEDDING:
        _retrieval_metrics(ref64, cand64, result["metrics"], result["skipped"])
    result["scatter"] = scatter_sample(ref64, cand64, scatter_points)
    if bad_rows.any():
        _reindex(result, np.flatnonzero(~bad_rows), rows)
    return result


def _reindex(result: dict[str, Any], kept: np.ndarray, rows: int) -> None:
    """Sample indices of metrics computed on the finite rows only -> indices of all samples
    (the NaN/inf rows hold None in the per-sample values)."""
    ps = result["per_sample"]
    ps["count"] = rows
    for stats in ps["metrics"].values():
        stats["worst"] = [int(kept[i]) for i in stats["worst"]]
    for key, vals in ps["values"].items():
        full: list[float | None] = [None] * rows
        for i, v in zip(kept.tolist(), vals, strict=True):
            full[i] = v
        ps["values"][key] = full
    cls = result["classifier"]
    if cls:
        cls["flipped_top1"] = [int(kept[i]) for i in cls["flipped_top1"]]


def degenerate_reason(ref: np.ndarray) -> str | None:
    """Why the reference output cannot be compared against, or None.

    All zeros, or the same output for every sample (a float model with random or dead weights,
    or data that does not vary): every candidate error is then measured against nothing.
    """
    n = ref.shape[0]
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    if scale == 0.0:
        return f"the float reference output is all zeros on all {n} samples"
    if n < 2:
        return None
    rows = ref.reshape(n, -1)
    spread = float(np.max(np.abs(rows - rows[:1])))
    if spread <= DEGENERATE_SPREAD * scale:
        return (f"the float reference output is the same for all {n} samples (spread "
                f"{spread:.3g} of magnitude {scale:.3g}): the float model or the data is "
                "degenerate (random weights? constant inputs?)")
    return None


def per_sample_metrics(ref: np.ndarray, cand: np.ndarray) -> dict[str, Any]:
    """SQNR, cosine and errors of each sample (row), summarised.

    Returns:
        ``{"count", "metrics": {metric: {"mean", "median", "p5", "p95", "min", "max",
        "undefined", "worst": [sample indices, worst first], "worst_values"}}, "values":
        {"sqnr_db": [...], "cosine": [...]}}``. A sample whose reference is all zeros has no
        SQNR / cosine / relative error (``undefined`` counts them; ``values`` holds None).
    """
    n = ref.shape[0]
    r = ref.reshape(n, -1)
    c = cand.reshape(n, -1)
    diff = c - r
    signal = np.sum(r * r, axis=1)
    noise = np.sum(diff * diff, axis=1)
    nr, nc = np.sqrt(signal), np.linalg.norm(c, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        sqnr = np.where(noise == 0, np.inf, 10.0 * np.log10(signal / noise))
        # A zero candidate row against a non-zero reference is orthogonal (cosine 0), not
        # undefined: the quantized model lost that sample's signal entirely.
        cos = np.where(nc > 0, np.sum(r * c, axis=1) / (nr * nc), 0.0)
        rel = np.sqrt(noise) / nr
    undefined = nr == 0
    sqnr[undefined], cos[undefined], rel[undefined] = np.nan, np.nan, np.nan
    values = {
        "sqnr_db": sqnr, "cosine": np.clip(cos, -1.0, 1.0),
        "max_abs_error": np.max(np.abs(diff), axis=1),
        "mean_abs_error": np.mean(np.abs(diff), axis=1),
        "rmse": np.sqrt(noise / r.shape[1]), "relative_error": rel,
    }
    return {
        "count": int(n),
        "metrics": {k: summarize(v, higher_is_better=SAMPLE_METRICS[k]) for k, v in values.items()},
        "values": {k: [None if math.isnan(x) else float(x) for x in values[k]]
                   for k in ("sqnr_db", "cosine")},
    }


def summarize(values: np.ndarray, *, higher_is_better: bool,
              worst: int = WORST_SAMPLES) -> dict[str, Any]:
    """mean / median / p5 / p95 / min / max of per-sample values (NaN = undefined, left out)
    and the indices of the ``worst`` worst samples, worst first."""
    v = np.asarray(values, dtype=np.float64)
    ok = ~np.isnan(v)
    out: dict[str, Any] = {"undefined": int(np.count_nonzero(~ok))}
    if not ok.any():
        out.update(mean=None, median=None, p5=None, p95=None, min=None, max=None, worst=[],
                   worst_values=[])
        return out
    d = v[ok]
    with np.errstate(invalid="ignore"):  # inf - inf inside the percentile interpolation
        p5, p95 = (float(x) for x in np.percentile(d, [5, 95], method="lower"
                                                   if higher_is_better else "higher"))
    out.update(mean=float(np.mean(d)), median=float(np.median(d)), p5=p5, p95=p95,
               min=float(np.min(d)), max=float(np.max(d)))
    idx = np.flatnonzero(ok)
    order = idx[np.argsort(d if higher_is_better else -d, kind="stable")][:worst]
    out["worst"] = order.tolist()
    out["worst_values"] = [float(v[i]) for i in order]
    return out


def _retrieval_metrics(ref: np.ndarray, cand: np.ndarray, out: dict, skipped: dict) -> None:
    """Nearest-neighbour agreement of an embedding across the samples.

    For every sample, its neighbours among the other samples by cosine similarity, in the float
    and in the quantized embedding: ``retrieval_top1_agreement`` (same nearest neighbour),
    ``retrieval_top5_overlap`` (shared fraction of the 5 nearest) and
    ``retrieval_rank_correlation`` (mean Spearman correlation of each sample's similarity
    ranking) — what a search or clustering app built on the embedding would notice.
    """
    n = ref.shape[0]
    if n < 3:
        why = f"needs at least 3 samples, got {n}"
        skipped.update(retrieval_top1_agreement=why, retrieval_top5_overlap=why)
        return
    if n > RETRIEVAL_MAX:
        ref, cand, n = ref[:RETRIEVAL_MAX], cand[:RETRIEVAL_MAX], RETRIEVAL_MAX
        skipped["retrieval_samples"] = f"computed on the first {RETRIEVAL_MAX} samples"
    sims = []
    for a in (ref, cand):
        rows = a.reshape(n, -1)
        norm = np.linalg.norm(rows, axis=1, keepdims=True)
        unit = np.divide(rows, norm, out=np.zeros_like(rows), where=norm > 0)
        s = unit @ unit.T
        np.fill_diagonal(s, -np.inf)
        sims.append(s)
    s_ref, s_cand = sims
    out["retrieval_top1_agreement"] = float(np.mean(np.argmax(s_ref, 1) == np.argmax(s_cand, 1)))
    k = min(5, n - 1)
    top_ref = np.argsort(-s_ref, axis=1, kind="stable")[:, :k]
    top_cand = np.argsort(-s_cand, axis=1, kind="stable")[:, :k]
    shared = [len(set(a) & set(b))
              for a, b in zip(top_ref.tolist(), top_cand.tolist(), strict=True)]
    out["retrieval_top5_overlap"] = float(np.mean(shared) / k)
    off = ~np.eye(n, dtype=bool)
    ranks = [np.argsort(np.argsort(s[off].reshape(n, n - 1), axis=1), axis=1).astype(np.float64)
             for s in (s_ref, s_cand)]
    a, b = (x - x.mean(axis=1, keepdims=True) for x in ranks)
    denom = np.sqrt(np.sum(a * a, axis=1) * np.sum(b * b, axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(denom > 0, np.sum(a * b, axis=1) / denom, np.nan)
    if np.isfinite(rho).any():
        out["retrieval_rank_correlation"] = float(np.nanmean(rho))


def _is_numeric(a: np.ndarray) -> bool:
    return a.dtype.kind in "fiub"


def sqnr_db(ref: np.ndarray, cand: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio ``10 log10(sum ref^2 / sum (ref - cand)^2)`` in dB.

    ``inf`` when the outputs are identical; ``nan`` when the reference is all zeros (undefined).
    """
    signal = float(np.sum(np.square(ref, dtype=np.float64)))
    noise = float(np.sum(np.square(np.subtract(ref, cand, dtype=np.float64))))
    if signal == 0.0:
        return float("nan")
    if noise == 0.0:
        return float("inf")
    return 10.0 * float(np.log10(signal / noise))


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the angle between two flattened arrays; ``nan`` when either is all zeros."""
    a = np.ravel(a).astype(np.float64)
    b = np.ravel(b).astype(np.float64)
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return float("nan")
    return float(np.clip(np.dot(a, b) / (na * nb), -1.0, 1.0))


def _error_metrics(ref: np.ndarray, cand: np.ndarray, out: dict, skipped: dict) -> None:
    diff = cand - ref
    absdiff = np.abs(diff)
    out["max_abs_error"] = float(absdiff.max())
    out["mean_abs_error"] = float(absdiff.mean())
    out["rmse"] = float(np.sqrt(np.mean(np.square(diff))))
    ref_norm = float(np.linalg.norm(ref))
    if ref_norm == 0.0:
        why = "reference output is all zeros"
        skipped.update(sqnr_db=why, relative_error=why, cosine=why)
        return
    out["sqnr_db"] = sqnr_db(ref, cand)
    # Relative L2 error; SQNR = -20 log10(relative_error), reported because it reads as a percent.
    out["relative_error"] = float(np.linalg.norm(diff) / ref_norm)
    cos = cosine_similarity(ref, cand)
    if np.isnan(cos):
        skipped["cosine"] = "candidate output is all zeros"
    else:
        out["cosine"] = cos


def scatter_sample(ref: np.ndarray, cand: np.ndarray, points: int) -> dict[str, list[float]]:
    """Evenly spaced (reference, candidate) value pairs, always including the worst one."""
    r, c = np.ravel(ref), np.ravel(cand)
    if points <= 0 or r.size == 0:
        return {"reference": [], "candidate": []}
    if points == 1:
        worst = int(np.argmax(np.abs(c - r)))
        return {"reference": [float(r[worst])], "candidate": [float(c[worst])]}
    if r.size <= points:
        idx = np.arange(r.size)
    else:
        idx = np.unique(
            np.concatenate([np.linspace(0, r.size - 1, points - 1).astype(np.int64),
                            [int(np.argmax(np.abs(c - r)))]])
        )
    return {"reference": r[idx].tolist(), "candidate": c[idx].tolist()}


# --------------------------------------------------------------------------- classifier outputs


def classifier_view(a: np.ndarray) -> np.ndarray | None:
    """``a`` as ``[N, C]`` when it is classifier-shaped (``[N, 1, ..., 1, C]``, ``C >= 2``)."""
    if a.ndim < 2 or a.shape[-1] < 2 or any(d != 1 for d in a.shape[1:-1]):
        return None
    return a.reshape(a.shape[0], a.shape[-1])


def _classifier_metrics(ref: np.ndarray, cand: np.ndarray, result: dict) -> None:
    skipped, out = result["skipped"], result["metrics"]
    r, c = classifier_view(ref), classifier_view(cand)
    if r is None or c is None:
        why = f"not classifier-shaped ([N, C] with C >= 2): shape {list(ref.shape)}"
        skipped.update(top1_agreement=why, top5_agreement=why, kl_divergence_mean=why)
        return
    agree = top1_agree(r, c)
    out["top1_agreement"] = float(agree.mean())
    if r.shape[1] > 5:
        out["top5_agreement"] = float(topk_contains(c, _argmax_first(r), 5).mean())
    else:
        skipped["top5_agreement"] = f"needs more than 5 classes, output has {r.shape[1]}"
    kl, kl_input = mean_kl_divergence(r, c)
    out["kl_divergence_mean"] = kl
    flipped = np.flatnonzero(~agree)
    result["classifier"] = {
        "num_classes": int(r.shape[1]),
        "num_samples": int(r.shape[0]),
        "kl_input": kl_input,
        "num_flipped": int(flipped.size),
        "flipped_top1": flipped.tolist(),
    }


def _argmax_first(a: np.ndarray) -> np.ndarray:
    return np.argmax(a, axis=1)


def top1_agree(ref: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Per row: do the reference and candidate share a top-1 class?

    Ties count as agreement when some class is maximal in both rows: int8 outputs tie often,
    and ``argmax`` picking the first of equal values is not a flip the model made.
    """
    ref_max = ref == ref.max(axis=1, keepdims=True)
    cand_max = cand == cand.max(axis=1, keepdims=True)
    return np.any(ref_max & cand_max, axis=1)


def topk_contains(scores: np.ndarray, cls: np.ndarray, k: int) -> np.ndarray:
    """Per row: is class ``cls[i]`` among the top ``k`` of ``scores[i]`` (ties included)?"""
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1]
    return scores[np.arange(scores.shape[0]), cls] >= kth


def is_probability_rows(a: np.ndarray, tol: float = _PROB_SUM_TOL) -> bool:
    """True when every row is non-negative and sums to 1 within ``tol``."""
    return bool(np.all(a >= 0) and np.all(np.abs(a.sum(axis=1) - 1.0) <= tol))


def softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by the row max so it cannot overflow."""
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def mean_kl_divergence(ref: np.ndarray, cand: np.ndarray) -> tuple[float, str]:
    """Mean over rows of KL(reference || candidate) in nats, and how the rows were read.

    When the reference rows are probability distributions both sides are used as they are
    (the candidate's negatives clipped and its row renormalised, since a dequantized softmax
    does not sum to exactly 1); otherwise both are treated as logits and softmaxed. Candidate
    probabilities are floored at 1e-7 inside the log so one zero cannot make KL infinite.

    Returns:
        ``(kl, kl_input)`` with ``kl_input`` ``"probabilities"`` or ``"softmax(logits)"``.
    """
    if is_probability_rows(ref):
        p = ref
        q = np.maximum(cand, 0.0)
        total = q.sum(axis=1, keepdims=True)
        q = np.divide(q, total, out=np.zeros_like(q), where=total > 0)
        how = "probabilities"
    else:
        p, q = softmax(ref), softmax(cand)
        how = "softmax(logits)"
    # 0 * log(0 / q) is 0 by convention: only positive p terms contribute.
    safe_p = np.where(p > 0, p, 1.0)
    terms = np.where(p > 0, p * (np.log(safe_p) - np.log(np.maximum(q, _KL_EPS))), 0.0)
    return float(np.mean(np.sum(terms, axis=1))), how


# --------------------------------------------------------------------------- task metrics

MetricFn = Callable[[np.ndarray, np.ndarray], float]


def accuracy(labels: np.ndarray, pred: np.ndarray) -> float:
    """Fraction of samples with ``pred == labels``."""
    return float(np.mean(labels == pred))


def confusion(labels: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    """``[n, n]`` confusion matrix, rows = true class, columns = predicted class."""
    return np.bincount(labels * n + pred, minlength=n * n).reshape(n, n)


def macro_prf(labels: np.ndarray, pred: np.ndarray) -> tuple[float, float, float]:
    """Macro precision, recall and F1 over the classes present in labels or predictions.

    Same definition as scikit-learn's ``average="macro"`` with ``zero_division=0``: per-class
    values, a 0/0 counted as 0, then the unweighted mean; F1 is averaged per class.
    """
    n = int(max(labels.max(initial=0), pred.max(initial=0))) + 1
    cm = confusion(labels, pred, n)
    present = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
    tp = np.diag(cm).astype(np.float64)[present]
    predicted = cm.sum(axis=0)[present]
    actual = cm.sum(axis=1)[present]
    prec = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    rec = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = prec + rec
    f1 = np.divide(2 * prec * rec, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(prec.mean()), float(rec.mean()), float(f1.mean())


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Binary ROC AUC (probability a positive outranks a negative, ties count half).

    Computed from average ranks (Mann-Whitney U), exact for any ties. ``nan`` when the labels
    hold only one class.
    """
    pos = labels == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(scores.size, dtype=np.float64)
    # Average rank of each run of equal scores (1-based).
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _metric_fns() -> dict[str, MetricFn]:
    return {
        "accuracy": accuracy,
        "precision_macro": lambda y, p: macro_prf(y, p)[0],
        "recall_macro": lambda y, p: macro_prf(y, p)[1],
        "f1_macro": lambda y, p: macro_prf(y, p)[2],
    }


def task_metrics(
    ref_outputs: Sequence[np.ndarray] | np.ndarray,
    cand_outputs: Sequence[np.ndarray] | np.ndarray,
    labels: np.ndarray,
    *,
    output_index: int | None = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Task metrics of float and quantized predictions against labels, with the drop.

    Args:
        ref_outputs: float model outputs (one array per output, or a single array).
        cand_outputs: quantized model outputs, same layout.
        labels: class indices ``[N]`` (or one-hot ``[N, C]``).
        output_index: which output holds the class scores; default the first classifier-shaped
            output (``[N, C]``; ``[N, 1]`` is read as a binary score).
        n_boot: bootstrap resamples for the confidence intervals (0 disables them).
        confidence: two-sided confidence level of the intervals.
        seed: bootstrap RNG seed, so a report is reproducible.

    Returns:
        ``{"output", "num_samples", "num_classes", "metrics": {name: {"float", "quantized",
        "drop", "drop_relative", "ci_low", "ci_high", "significant"}}, "bootstrap": {...},
        "changed": {"fixed", "broken"}, "skipped": {name: reason}}``; drop = float - quantized,
        so a positive drop is a loss. When no output can be read as class scores the dict has
        only ``skipped`` with the reason.

    Raises:
        CalibrationError: labels are not integer class ids or their count does not match.
    """
    refs, cands = _as_list(ref_outputs), _as_list(cand_outputs)
    y = _labels_1d(labels)
    idx = _pick_output(refs, y.size, output_index)
    if isinstance(idx, str):
        return {"skipped": {"all": idx}}
    ref_scores, cand_scores = _scores(refs[idx]), _scores(cands[idx])
    binary = ref_scores.shape[1] <= 2
    pred_f, pred_q = _predict(ref_scores), _predict(cand_scores)
    n_classes = max(2, ref_scores.shape[1])
    if int(y.max(initial=0)) >= n_classes:
        raise CalibrationError(
            f"labels: class id {int(y.max())} is out of range for an output with "
            f"{n_classes} classes"
        )
    fns = _metric_fns()
    pairs: dict[str, tuple[np.ndarray, np.ndarray, MetricFn]] = {
        name: (pred_f, pred_q, fn) for name, fn in fns.items()
    }
    skipped: dict[str, str] = {}
    if binary:
        if np.unique(y).size < 2:
            skipped["roc_auc"] = "labels hold a single class"
        else:
            pairs["roc_auc"] = (_binary_score(ref_scores), _binary_score(cand_scores), roc_auc)
    else:
        skipped["roc_auc"] = f"not a binary classifier ({ref_scores.shape[1]} classes)"
    metrics = {
        name: _side_by_side(y, a, b, fn, n_boot, confidence, seed)
        for name, (a, b, fn) in pairs.items()
    }
    right_f, right_q = pred_f == y, pred_q == y
    return {
        "output": idx,
        "num_samples": int(y.size),
        "num_classes": int(n_classes),
        "metrics": metrics,
        "bootstrap": {"resamples": n_boot, "confidence": confidence, "seed": seed,
                      "method": "paired percentile"},
        # Samples the quantized model got right that float got wrong, and the reverse.
        "changed": {"fixed": int(np.sum(right_q & ~right_f)),
                    "broken": int(np.sum(right_f & ~right_q))},
        "skipped": skipped,
    }


def _as_list(x: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
    if isinstance(x, np.ndarray):
        return [x]
    return [np.asarray(a) for a in x]


def _labels_1d(labels: np.ndarray) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] > 1:
        y = np.argmax(y, axis=1)  # one-hot
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if y.ndim != 1:
        raise CalibrationError(f"labels: expected class ids [N] or one-hot [N, C], got shape "
                               f"{list(np.shape(labels))}")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise CalibrationError("labels: expected integer class ids, got non-integer floats")
    elif y.dtype.kind not in "iub":
        raise CalibrationError(f"labels: expected integer class ids, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise CalibrationError(f"labels: class ids must be >= 0, got {int(y.min())}")
    return y


def _pick_output(refs: list[np.ndarray], n: int, output_index: int | None) -> int | str:
    """Index of the output holding class scores, or a reason string when none does."""
    candidates = range(len(refs)) if output_index is None else [output_index]
    reasons = []
    for i in candidates:
        if i >= len(refs):
            return f"output index {i} out of range ({len(refs)} outputs)"
        a = refs[i]
        if a.ndim < 1 or a.shape[0] != n:
            if output_index is not None or len(refs) == 1:
                raise CalibrationError(
                    f"labels: {n} labels but output {i} has {a.shape[0] if a.ndim else 0} samples"
                )
            reasons.append(f"output {i} has {a.shape[0] if a.ndim else 0} samples")
            continue
        if _scores_or_none(a) is not None:
            return i
        reasons.append(f"output {i} shape {list(a.shape)} is not [N, C] class scores")
    return "no classifier-shaped output: " + "; ".join(reasons)


def _scores_or_none(a: np.ndarray) -> np.ndarray | None:
    if a.dtype.kind not in "fiub":
        return None
    if a.ndim >= 2 and all(d == 1 for d in a.shape[1:]):
        return a.reshape(a.shape[0], 1).astype(np.float64)  # one binary score per sample
    view = classifier_view(a)
    return None if view is None else view.astype(np.float64)


def _scores(a: np.ndarray) -> np.ndarray:
    s = _scores_or_none(a)
    assert s is not None  # _pick_output checked it
    return s


def _single_threshold(scores: np.ndarray) -> float:
    """0.5 for probabilities in [0, 1], 0 for logits."""
    return 0.5 if scores.min() >= 0 and scores.max() <= 1 else 0.0


def _predict(scores: np.ndarray) -> np.ndarray:
    if scores.shape[1] == 1:
        return (scores[:, 0] > _single_threshold(scores)).astype(np.int64)
    return np.argmax(scores, axis=1)


def _binary_score(scores: np.ndarray) -> np.ndarray:
    """A score increasing with the positive class; rank-equivalent to softmax(.)[:, 1]."""
    if scores.shape[1] == 1:
        return scores[:, 0]
    return scores[:, 1] - scores[:, 0]


def _side_by_side(
    y: np.ndarray, a: np.ndarray, b: np.ndarray, fn: MetricFn,
    n_boot: int, confidence: float, seed: int,
) -> dict[str, Any]:
    fa, fb = fn(y, a), fn(y, b)
    drop = fa - fb
    entry: dict[str, Any] = {
        "float": fa,
        "quantized": fb,
        "drop": drop,
        "drop_relative": drop / fa if fa else float("nan"),
    }
    if n_boot > 0:
        lo, hi = bootstrap_drop_ci(y, a, b, fn, n_boot, confidence, seed)
        entry.update(ci_low=lo, ci_high=hi, significant=bool(lo > 0 or hi < 0))
    return entry


def bootstrap_drop_ci(
    y: np.ndarray, a: np.ndarray, b: np.ndarray, fn: MetricFn,
    n_boot: int = 1000, confidence: float = 0.95, seed: int = 0,
) -> tuple[float, float]:
    """Paired percentile bootstrap interval of ``fn(y, a) - fn(y, b)``.

    Both predictions are resampled with the same indices, so the interval reflects how much the
    drop itself varies, not the two metrics' separate noise. Resamples where the metric is
    undefined (e.g. AUC with one class) are left out.

    Returns:
        ``(low, high)``; ``nan`` when no resample is usable.
    """
    rng = np.random.default_rng(seed)
    n = y.size
    drops = np.empty(n_boot)
    for i in range(n_boot):
        idx = rng.integers(0, n, n)
        drops[i] = fn(y[idx], a[idx]) - fn(y[idx], b[idx])
    drops = drops[np.isfinite(drops)]
    if drops.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(drops, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


# --------------------------------------------------------------------------- gates


def parse_max_drop(text: str) -> tuple[float, bool]:
    """``"1.5"`` -> (1.5, False) accuracy points; ``"2%"`` -> (2.0, True) percent of float.

    Raises:
        EdgeOptError: not a non-negative number, optionally followed by ``%``.
    """
    raw = text.strip()
    relative = raw.endswith("%")
    try:
        value = float(raw[:-1] if relative else raw)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value < 0:
        raise EdgeOptError(f"--max-drop: expected a number of accuracy points (e.g. 1.5) or a "
                           f"percentage of the float metric (e.g. 2%), got {text!r}")
    return value, relative


def evaluate_gates(
    drift: Sequence[Mapping[str, Any]],
    task: Mapping[str, Any] | None,
    *,
    max_drop: tuple[float, bool] | None = None,
    drop_metric: str = "accuracy",
    min_sqnr: float | None = None,
    min_cosine: float | None = None,
    gate_on: str = "min",
) -> dict[str, Any]:
    """Check drift and task metrics against budgets; a gate that cannot be evaluated fails.

    Args:
        drift: ``compare_outputs`` results.
        task: ``task_metrics`` result, or None without labels.
        max_drop: ``parse_max_drop`` result: points (percentage points) or percent of float.
        drop_metric: the task metric the drop budget applies to.
        min_sqnr: every output's per-sample SQNR statistic must be at least this (dB).
        min_cosine: every output's per-sample cosine statistic must be at least this.
        gate_on: which per-sample statistic the drift gates compare: ``min`` (the worst
            sample, default), ``p5`` or ``mean``. The failing samples are named either way.

    Returns:
        ``{"passed": bool, "results": [{"gate", "threshold", "value", "passed", "message",
        ...}]}``. A degenerate reference or NaN/inf outputs fail every drift gate.

    Raises:
        EdgeOptError: ``gate_on`` is not one of ``min``, ``p5``, ``mean``.
    """
    if gate_on not in GATE_ON:
        raise EdgeOptError(f"--gate-on {gate_on!r}: use one of {', '.join(GATE_ON)}")
    results: list[dict[str, Any]] = []
    if max_drop is not None:
        results.append(_drop_gate(task, max_drop, drop_metric))
    for key, gate, unit, threshold in (("sqnr_db", "min-sqnr", " dB", min_sqnr),
                                       ("cosine", "min-cosine", "", min_cosine)):
        if threshold is not None:
            results.extend(_output_gate(drift, key, gate, unit, threshold, gate_on))
    return {"passed": all(r["passed"] for r in results), "results": results}


VALIDITY_GATES = ("valid-reference", "finite-outputs", "artifact-validation")  # --allow-invalid


def validity_gates(drift: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Checks that hold with or without budgets: a reference that can be compared against
    (not constant / all zeros) and finite outputs. One failed entry per problem, else none."""
    out = []
    for o in drift:
        if o.get("degenerate"):
            out.append({"gate": "valid-reference", "output": o["name"], "passed": False,
                        "message": f"valid-reference: output {o['name']!r}: {o['degenerate']}; "
                                   "drift against it means nothing"})
        bad = o.get("nonfinite_samples") or []
        if bad:
            where = o.get("nonfinite_in") or "candidate"
            out.append({"gate": "finite-outputs", "output": o["name"], "passed": False,
                        "samples": list(bad),
                        "message": f"finite-outputs: output {o['name']!r}: the {where} gives "
                                   f"NaN/inf on {len(bad)} sample(s) ({_sample_list(bad)})"})
    return out


def sample_stat(o: Mapping[str, Any], metric: str, on: str = "min") -> float | None:
    """One per-sample statistic of one output's drift (``cosine`` / ``sqnr_db`` with ``on``
    ``min`` / ``p5`` / ``mean`` / ``median``); the whole-output value for records without
    per-sample data; None when it cannot be computed."""
    stats = ((o.get("per_sample") or {}).get("metrics") or {}).get(metric)
    if stats is not None:
        return stats.get(on)
    return (o.get("metrics") or {}).get(metric)


def _sample_list(indices: Sequence[int], limit: int = 12) -> str:
    shown = ", ".join(map(str, indices[:limit]))
    return shown + (f", … (+{len(indices) - limit} more)" if len(indices) > limit else "")


def _drop_gate(task: Mapping[str, Any] | None, max_drop: tuple[float, bool],
               metric: str) -> dict[str, Any]:
    budget, relative = max_drop
    unit = "% of float" if relative else " points"
    gate = {"gate": "max-drop", "metric": metric, "threshold": budget,
            "relative": relative, "value": None, "passed": False}
    entry = ((task or {}).get("metrics") or {}).get(metric)
    if entry is None:
        why = ((task or {}).get("skipped") or {}).get("all") or f"no {metric!r} task metric"
        gate["message"] = f"max-drop: could not be evaluated ({why})"
        return gate
    drop = float(entry["drop"])
    if relative:
        value = 100.0 * drop / entry["float"] if entry["float"] else float("inf")
    else:
        value = 100.0 * drop  # metrics are fractions; the budget is in points
    gate["value"] = value
    gate["passed"] = value <= budget
    verdict = "<=" if gate["passed"] else ">"
    gate["message"] = (f"max-drop: {metric} drop {value:.2f}{unit} {verdict} {budget:g}{unit}"
                       + ("" if gate["passed"] else f" (over by {value - budget:.2f}{unit})"))
    return gate


def _output_gate(drift: Sequence[Mapping[str, Any]], key: str, gate: str, unit: str,
                 threshold: float, on: str = "min") -> list[dict[str, Any]]:
    out = []
    for o in drift:
        value = sample_stat(o, key, on)
        values = ((o.get("per_sample") or {}).get("values") or {}).get(key)
        label = f"{key} {on}" if values is not None else key
        r: dict[str, Any] = {"gate": gate, "output": o["name"], "threshold": threshold,
                             "value": value, "on": on if values is not None else "output"}
        failing = ([i for i, v in enumerate(values) if v is not None and v < threshold]
                   if values is not None else [])
        bad = list(o.get("nonfinite_samples") or [])
        r["failing_samples"] = sorted(set(failing) | set(bad))
        if o.get("degenerate"):
            r.update(passed=False, message=f"{gate}: output {o['name']!r}: could not be "
                     f"evaluated ({o['degenerate']})")
        elif value is None or (isinstance(value, float) and math.isnan(value)):
            why = (o.get("skipped") or {}).get(key) or (o.get("skipped") or {}).get("all")
            r.update(passed=False, message=f"{gate}: output {o['name']!r}: could not be "
                     f"evaluated ({why or 'no value'})")
        else:
            r["passed"] = value >= threshold and not bad
            verdict = ">=" if value >= threshold else "<"
            msg = (f"{gate}: output {o['name']!r} {label} {value:.4g}{unit} {verdict} "
                   f"{threshold:g}{unit}"
                   + ("" if value >= threshold else f" (short by {threshold - value:.4g}{unit})"))
            if values is not None and failing:
                msg += (f"; {len(failing)} of {len(values)} samples below {threshold:g}{unit}: "
                        f"{_sample_list(failing)}")
            if bad:
                msg += f"; {len(bad)} sample(s) with NaN/inf outputs: {_sample_list(bad)}"
            r["message"] = msg
        out.append(r)
    return out
