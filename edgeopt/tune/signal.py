"""The ranking signal: how much each layer group of a candidate loses, from per-layer analysis.

The one place the tuning loop uses ``edgeopt.layers`` (its public entry points
``onnx_layer_report`` and ``tflite_layer_report``), so improvements there (NaN-first ranking,
dynamic-quantization support, bounded memory) reach the search unchanged. Analysis runs on a
*ranking subset*: the validation samples with the worst output error of this candidate.

Scores are sensitivities, larger = worse: the noise-to-signal ratio ``10^(-SQNR/10)`` of the
worse of a group's weight quantization and the error its op adds on top of its inputs (the
local SQNR of its output; where ORT fused the op with its bias Add and activation, the first
analysed tensor downstream). A NaN or infinite error (a broken scale) scores ``inf`` and ranks
first. (The Q/DQ-pair SQNR of an input is not used: after ORT folds a Relu into the
quantizer, it compares the pre-Relu with the post-Relu tensor.)

Where per-layer analysis has nothing to say about a candidate (``available: false``, e.g. ONNX
dynamic quantization until ``edgeopt.layers`` supports it), the signal falls back to the
activation-outlier ratio of each group's input — max over channels of the calibration |x|
divided by the median channel's — which is what per-tensor dynamic activation quantization
loses to (an FFN output projection at 98 vs a median 1.7 on a 12-layer transformer). The
section says which signal was used.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..recipes.groups import LayerGroup

log = logging.getLogger(__name__)
Feeds = Mapping[str, np.ndarray]


def _noise(sqnr: Any) -> float | None:
    """Noise / signal power from an SQNR in dB; NaN / -inf (broken) -> inf; None unknown."""
    if sqnr is None:
        return None
    s = float(sqnr)
    if math.isnan(s) or s == -math.inf:
        return math.inf
    if s == math.inf:
        return 0.0
    return 10.0 ** (-s / 10.0)


def _worst(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def onnx_scores(float_model: Path, candidate: Path, groups: Sequence[LayerGroup],
                samples: Sequence[Feeds]) -> tuple[dict[str, float], dict[str, Any]]:
    """Group scores of an ONNX candidate against the float model it was quantized from.

    Returns:
        (group name -> score, a description of the signal for the record).
    """
    from .. import layers

    section = layers.onnx_layer_report(float_model, candidate, samples)
    if section.get("available"):
        return _onnx_from_section(section, float_model, groups), {
            "signal": "per-layer", "method": section.get("method"),
            "samples": section.get("num_samples")}
    scores = _outlier_ratios(float_model, groups, samples)
    return scores, {"signal": "activation-outlier-ratio", "samples": len(samples),
                    "why": f"per-layer analysis unavailable: {section.get('reason')}"}


def _group_nodes(model: Any, groups: Sequence[LayerGroup]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for g in groups:
        pats = [re.compile(p) for p in g.patterns]
        out[g.name] = [n for n in model.graph.node if any(p.search(n.name) for p in pats)]
    return out


def _onnx_from_section(section: Mapping[str, Any], float_model: Path,
                       groups: Sequence[LayerGroup]) -> dict[str, float]:
    import onnx

    model = onnx.load(str(float_model), load_external_data=False)
    acts = {e["tensor"]: e for e in section.get("layers") or []}
    weights = {e["tensor"]: e for e in section.get("weights") or []}
    consumers: dict[str, list[Any]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    scores: dict[str, float] = {}
    for name, nodes in _group_nodes(model, groups).items():
        parts: list[float | None] = []
        for node in nodes:
            parts += [_noise(acts[t].get("sqnr_db")) for t in _analysed(node, acts, consumers)]
            parts += [_noise(weights[t].get("sqnr_db")) for t in node.input if t in weights]
        score = _worst(parts)
        if score is not None:
            scores[name] = score
    return scores


# Ops that pass a layer's output on without weights of their own (bias Add, activation):
# ORT's QDQ graph fuses them with the layer, so the analysed tensor may be theirs.
_FOLLOW = {"Add", "Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid", "Gelu",
           "Mul", "BatchNormalization", "Identity"}


def _analysed(node: Any, acts: Mapping[str, Any], consumers: Mapping[str, list[Any]],
              depth: int = 4) -> list[str]:
    """The node's outputs that have per-layer entries, else the first analysed tensors down a
    chain of single-consumer ``_FOLLOW`` ops."""
    found, frontier = [], list(node.output)
    for _ in range(depth + 1):
        hit = [t for t in frontier if t in acts]
        if hit:
            return hit
        nxt = []
        for t in frontier:
            users = consumers.get(t, [])
            if len(users) == 1 and users[0].op_type in _FOLLOW:
                nxt += list(users[0].output)
        frontier = nxt
    return found


def _outlier_ratios(float_model: Path, groups: Sequence[LayerGroup],
                    samples: Sequence[Feeds]) -> dict[str, float]:
    import onnx

    from ..recipes.transforms import channel_max

    model = onnx.load(str(float_model))
    const = {i.name for i in model.graph.initializer}
    first: dict[str, str] = {}
    for name, nodes in _group_nodes(model, groups).items():
        ins = [i for n in nodes for i in n.input[:1] if i and i not in const]
        if ins:
            first[name] = ins[0]
    stats = channel_max(model, sorted(set(first.values())), list(samples))
    out = {}
    for name, tensor in first.items():
        a = stats.get(tensor)
        if a is None or not a.size:
            continue
        med = float(np.median(a))
        peak = float(a.max())
        out[name] = math.inf if not math.isfinite(peak) else (peak / med if med > 0 else 0.0)
    return out


def tflite_scores(source: Any, groups: Sequence[LayerGroup], samples: Sequence[Feeds],
                  calibration: Sequence[Feeds], cache: Path | None = None,
                  ) -> tuple[dict[str, float], dict[str, Any]]:
    """Group scores of full-int8 TFLite quantization of the source (QuantizationDebugger: each
    op against its float twin on the same inputs, so the same for every int8 candidate; kept
    in ``cache`` when given)."""
    if cache is not None and cache.is_file():
        saved = json.loads(cache.read_text())
        return {k: (math.inf if v is None else v) for k, v in saved["scores"].items()}, \
            saved["info"]
    from .. import layers

    model = source.handle if source.format in ("keras", "h5") else source.path
    section = layers.tflite_layer_report(model, list(samples), calibration=list(calibration))
    scores: dict[str, float] = {}
    compiled = [(g.name, [re.compile(p) for p in g.patterns]) for g in groups]
    for e in section.get("layers") or []:
        tensor = str(e.get("tensor") or "")
        for name, pats in compiled:
            if any(p.search(tensor) for p in pats):
                n = _noise(e.get("sqnr_db"))
                if n is not None:
                    scores[name] = max(scores.get(name, 0.0), n)
    info = {"signal": "per-layer", "method": section.get("method"), "samples": len(samples)}
    if cache is not None:
        tmp = cache.with_name(f".{cache.name}.tmp")
        tmp.write_text(json.dumps({"scores": {k: (None if math.isinf(v) else v)
                                              for k, v in scores.items()}, "info": info}))
        tmp.replace(cache)
    return scores, info
