"""What ``edgeopt diff`` may call a regression: artifact changes, not timing noise.

Two runs of the very same artifacts differ in latency by tens of percent on a loaded host
(measured here: "speedup -41 % WORSE" between two runs of byte-identical models), so a
tolerance alone makes CI flaky. Three rules, in order:

1. **Same bytes, no latency regression.** When the candidate and its float reference have the
   same sha256 in both reports, nothing about the artifact changed: latency differences are
   ``timing noise`` and never ``worse``. Drift and task metrics are deterministic for the same
   bytes and data: measured on other data they are ``data changed`` (not a regression of the
   artifact); on the same data a change means the engine or tools changed (``environment``)
   and keeps its verdict.
2. **Outside the noise.** A latency quantity is a regression only when, beyond the relative
   tolerance, the 95 % bootstrap intervals of its median (from the per-run ``samples_ms`` both
   reports carry; the speedup from the per-pair ratios of the interleaved runs) do not overlap.
   Overlapping intervals are ``timing noise``.
3. **The float model is the yardstick.** When the float reference is unchanged, host speed
   moves both models alike: the float latency itself is never a regression, and the quantized
   latency counts only when the speedup (measured interleaved, in the same run) got worse too.

numpy only; the bootstrap is seeded, so the same two reports always give the same verdict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95
_SEED = 0

FLOAT_MS = "latency p50 float ms"
QUANT_MS = "latency p50 quantized ms"
SPEEDUP = "speedup p50"


def entry_facts(report: Mapping[str, Any], sec: Mapping[str, Any]) -> dict[str, Any]:
    """The models' sha256, the data's, and the latency samples of one report entry (a convert
    artifact or a compare report)."""
    if "sha256" in sec and "float_sha256" in sec:  # a convert artifact
        cand, ref = sec.get("sha256"), sec.get("float_sha256")
    else:
        models = report.get("models") or {}
        cand = (models.get("candidate") or {}).get("sha256")
        ref = (models.get("reference") or {}).get("sha256")
    lat = sec.get("latency") or {}
    return {"candidate_sha256": cand, "reference_sha256": ref,
            "data_sha256": (report.get("data") or {}).get("sha256"),
            "reference_ms": _samples(lat.get("reference")),
            "candidate_ms": _samples(lat.get("candidate"))}


def _samples(stats: Mapping[str, Any] | None) -> np.ndarray | None:
    vals = (stats or {}).get("samples_ms") or []
    arr = np.asarray([v for v in vals if isinstance(v, (int, float))], dtype=np.float64)
    arr = arr[np.isfinite(arr) & (arr > 0)]
    return arr if arr.size >= 5 else None


def median_interval(samples: np.ndarray) -> tuple[float, float]:
    """The 95 % bootstrap interval of the median of ``samples`` (seeded)."""
    rng = np.random.default_rng(_SEED)
    idx = rng.integers(0, samples.size, size=(BOOTSTRAP_RESAMPLES, samples.size))
    medians = np.median(samples[idx], axis=1)
    tail = (1 - CONFIDENCE) / 2 * 100
    lo, hi = np.percentile(medians, [tail, 100 - tail])
    return float(lo), float(hi)


def _series(facts: Mapping[str, Any], what: str) -> np.ndarray | None:
    ref, cand = facts.get("reference_ms"), facts.get("candidate_ms")
    if what == FLOAT_MS:
        return ref
    if what == QUANT_MS:
        return cand
    if what == SPEEDUP and ref is not None and cand is not None and ref.size == cand.size:
        return ref / cand  # pairs were timed interleaved: each ratio shares the host's state
    return None


def beyond_noise(old: Mapping[str, Any], new: Mapping[str, Any], what: str) -> bool | None:
    """Whether the two medians' intervals are disjoint (None: no samples to tell)."""
    a, b = _series(old, what), _series(new, what)
    if a is None or b is None:
        return None
    (alo, ahi), (blo, bhi) = median_interval(a), median_interval(b)
    return bhi < alo or ahi < blo


def artifact_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool | None:
    """True / False when both reports name both models' sha256, else None (cannot tell)."""
    keys = ("candidate_sha256", "reference_sha256")
    if not all(old.get(k) and new.get(k) for k in keys):
        return None
    return any(old[k] != new[k] for k in keys)


def judge(old: Mapping[str, Any], new: Mapping[str, Any],
          changes: Sequence[dict[str, Any]]) -> tuple[bool | None, list[dict[str, Any]]]:
    """Apply the module's rules to one entry's changes (each gets a ``kind``).

    Returns:
        (whether the artifact changed — None when the reports cannot tell, the changes).
    """
    changed = artifact_changed(old, new)
    out = [dict(c) for c in changes]
    if changed is False:
        same_data = bool(old.get("data_sha256")) and old.get("data_sha256") == new.get(
            "data_sha256")
        for c in out:
            if c["what"] in (FLOAT_MS, QUANT_MS, SPEEDUP):
                c["kind"], c["worse"], c["better"] = "timing noise", False, False
            elif same_data:
                c["kind"] = "environment"  # same bytes, same data: the engine / tools moved
            else:
                c["kind"], c["worse"], c["better"] = "data changed", False, False
        return changed, out
    same_float = bool(old.get("reference_sha256")) and \
        old.get("reference_sha256") == new.get("reference_sha256")
    verdicts: dict[str, bool] = {}
    for c in out:
        c["kind"] = "artifact"
        if c["what"] not in (FLOAT_MS, QUANT_MS, SPEEDUP):
            continue
        outside = beyond_noise(old, new, c["what"])
        if outside is False or (c["what"] == FLOAT_MS and same_float):
            c["kind"] = "timing noise"
            c["worse"] = c["better"] = False
        verdicts[c["what"]] = bool(c["worse"])
    speedup_known = _series(old, SPEEDUP) is not None and _series(new, SPEEDUP) is not None
    if same_float and (SPEEDUP in verdicts or speedup_known):
        for c in out:  # host speed moves both models: the interleaved speedup decides
            if c["what"] == QUANT_MS and c["worse"] and not verdicts.get(SPEEDUP, False):
                c["kind"], c["worse"] = "timing noise", False
    return changed, out
