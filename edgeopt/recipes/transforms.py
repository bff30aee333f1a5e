"""Float-equivalent ONNX graph rewrites that make transformers quantizable.

Each transform changes *where* numbers live, not what the model computes; ``check_float`` runs
the original and the rewritten model in float on calibration samples and refuses the rewrite
unless the outputs agree to float rounding (cosine >= 1 - 1e-6 per sample, max abs error
<= 1e-3 of the output's magnitude).

* ``smooth`` (SmoothQuant, Xiao et al. 2023, alpha = 0.5): a LayerNorm's output X feeds weight
  MatMuls W_i; per input channel j, ``s_j = max|X_j|^a / max_i max|W_i[j, :]|^(1-a)``; the
  MatMuls read ``X / s`` and use ``diag(s) W_i``, so activation outlier channels move into the
  (per-channel quantized) weights. ``X / s`` is folded into a *duplicated* LayerNorm (gamma / s,
  beta / s): in post-LN models (BERT, MPNet) the same X also feeds the residual Add, which must
  keep the original.
* ``outlier-split``: the input channels of an FFN output projection whose calibration max
  exceeds ``ratio`` x the median channel max (5 channels in MiniLM-L6, 34 in MPNet-base at
  ratio 6) go through a small float MatMul; the int8 MatMul sees the rest (``X * mask``, the
  outlier rows of W zeroed), and an Add joins them. Per-tensor activation scales then fit the
  ordinary channels instead of a |x| ~ 98 outlier.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from edgeopt_runtime.errors import EdgeOptError
from onnx import helper, numpy_helper

from ..targets import TransformName
from .graph import GraphView, ffn_outputs, layer_norms
from .recipe import TransformSpec

Feeds = dict[str, np.ndarray]
SCALE_CLIP = (1e-3, 1e3)  # smoothing factors outside this are clipped (dead or huge channels)
COSINE_TOL = 1e-6
ABS_TOL = 1e-3  # relative to the reference output's max magnitude


class TransformError(EdgeOptError):
    """A transform could not be applied, or its result is not float-equivalent."""


@dataclass
class TransformResult:
    """The rewritten model, the nodes that must stay float, and what was done."""

    model: onnx.ModelProto
    float_nodes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: list[dict[str, Any]] = field(default_factory=list)


def session(model: onnx.ModelProto, outputs: Sequence[str] = ()) -> Any:
    """A 1-thread ORT session of ``model`` with extra float ``outputs`` exposed."""
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for name in outputs:
        if name not in have:
            m.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # Basic graph optimizations only: extended fusions could merge the tensors we read out.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def channel_max(model: onnx.ModelProto, tensors: Sequence[str],
                samples: Sequence[Feeds]) -> dict[str, np.ndarray]:
    """Per last-axis channel max of |x| of each tensor over every sample and position."""
    if not tensors:
        return {}
    sess = session(model, tensors)
    names = [o.name for o in sess.get_outputs()]
    idx = [names.index(t) for t in tensors]
    out: dict[str, np.ndarray] = {}
    for feeds in samples:
        values = sess.run(None, feeds)
        for t, i in zip(tensors, idx, strict=True):
            a = np.abs(np.asarray(values[i], dtype=np.float32))
            m = a.reshape(-1, a.shape[-1]).max(axis=0) if a.ndim > 1 else a
            out[t] = m if t not in out else np.maximum(out[t], m)
    return out


def _add_init(model: onnx.ModelProto, name: str, value: np.ndarray) -> str:
    model.graph.initializer.append(numpy_helper.from_array(value, name))
    return name


def _unique(view: GraphView, base: str) -> str:
    taken = set(view.init) | set(view.producer) | {n.name for n in view.graph.node}
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name


def smooth(model: onnx.ModelProto, samples: Sequence[Feeds], alpha: float) -> TransformResult:
    """SmoothQuant into duplicated LayerNorms (see the module docstring)."""
    view = GraphView(model)
    targets = []
    for ln in layer_norms(view):
        mms = [c for c in view.consumers.get(ln.output, [])
               if c.op_type == "MatMul" and c.input[0] == ln.output and view.weight(c) is not None]
        if mms:
            targets.append((ln, mms))
    stats = channel_max(model, [ln.output for ln, _ in targets], samples)
    result = TransformResult(model)
    new_nodes: dict[str, list[onnx.NodeProto]] = {}  # inserted after the node of that name
    for ln, mms in targets:
        act = stats[ln.output]
        weights = [view.weight(m) for m in mms]
        wmax = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.power(act, alpha) / np.power(wmax, 1.0 - alpha)
        s = np.where((act > 0) & (wmax > 0) & np.isfinite(s), s, 1.0)
        s = np.clip(s, *SCALE_CLIP).astype(np.float32)
        gamma = view.const(ln.scale).astype(np.float32)
        out = _unique(view, f"{ln.output}_smooth")
        g = _add_init(model, _unique(view, f"{ln.scale}_smooth"), gamma / s)
        b = None
        if ln.bias is not None:
            b = _add_init(model, _unique(view, f"{ln.bias}_smooth"),
                          view.const(ln.bias).astype(np.float32) / s)
        if ln.mul is None:  # LayerNormalization op: a second one with the scaled affine part
            dup = onnx.NodeProto()
            dup.CopyFrom(ln.node)
            dup.name = _unique(view, f"{ln.node.name}_smooth")
            dup.input[1] = g
            if b is not None:
                dup.input[2] = b
            del dup.output[1:]
            dup.output[0] = out
            added = [dup]
        else:  # decomposed: share the normalized tensor, duplicate Mul(gamma) and Add(beta)
            mid = _unique(view, f"{ln.mul.output[0]}_smooth")
            norm = next(i for i in ln.mul.input if i != ln.scale)
            added = [
                helper.make_node("Mul", [norm, g], [mid],
                                 name=_unique(view, f"{ln.mul.name}_smooth")),
                helper.make_node("Add", [mid, b], [out],
                                 name=_unique(view, f"{ln.node.name}_smooth")),
            ]
        new_nodes[ln.node.name] = added
        for m, w in zip(mms, weights, strict=True):
            m.input[0] = out
            m.input[1] = _add_init(model, _unique(view, f"{m.input[1]}_smooth"),
                                   (w * s[:, None]).astype(np.float32))
        result.details.append({"layer_norm": ln.node.name, "matmuls": [m.name for m in mms],
                               "act_max": float(act.max()), "scale_range":
                               [float(s.min()), float(s.max())]})
    _insert_after(model, new_nodes)
    _prune(model)
    result.notes.append(f"smooth(alpha={alpha:g}): {len(targets)} LayerNorm(s) duplicated, "
                        f"{sum(len(m) for _, m in targets)} MatMul weight(s) rescaled")
    return result


def outlier_split(model: onnx.ModelProto, samples: Sequence[Feeds],
                  ratio: float) -> TransformResult:
    """Outlier input channels of FFN output projections through a float MatMul."""
    view = GraphView(model)
    mms = ffn_outputs(view)
    stats = channel_max(model, [m.input[0] for m in mms], samples)
    result = TransformResult(model)
    before: dict[str, list[onnx.NodeProto]] = {}
    after: dict[str, list[onnx.NodeProto]] = {}
    total = 0
    for m in mms:
        act = stats[m.input[0]]
        med = float(np.median(act))
        idx = np.flatnonzero(act > ratio * med) if med > 0 else np.array([], dtype=np.int64)
        if idx.size == 0 or idx.size == act.size:
            continue
        w = view.weight(m)
        layer = view.layer_name(m)
        x = m.input[0]
        mask = np.ones(act.size, np.float32)
        mask[idx] = 0.0
        w_main = w.copy()
        w_main[idx, :] = 0.0
        base = m.name or m.output[0]
        masked = _unique(view, f"{x}_inliers")
        picked = _unique(view, f"{x}_outliers")
        y_main = _unique(view, f"{m.output[0]}_inliers")
        y_out = _unique(view, f"{m.output[0]}_outliers")
        mask_name = _add_init(model, _unique(view, f"{base}_outlier_mask"), mask)
        idx_name = _add_init(model, _unique(view, f"{base}_outlier_index"), idx.astype(np.int64))
        w_out = _add_init(model, _unique(view, f"{base}_outlier_weight"),
                          np.ascontiguousarray(w[idx, :]).astype(np.float32))
        float_mm = _unique(view, f"{base}_outlier_matmul")
        before[m.name] = [helper.make_node("Mul", [x, mask_name], [masked],
                                           name=_unique(view, f"{base}_outlier_mask_mul"))]
        after[m.name] = [
            helper.make_node("Gather", [x, idx_name], [picked], axis=-1,
                             name=_unique(view, f"{base}_outlier_gather")),
            helper.make_node("MatMul", [picked, w_out], [y_out], name=float_mm),
            helper.make_node("Add", [y_main, y_out], [m.output[0]],
                             name=_unique(view, f"{base}_outlier_add")),
        ]
        m.input[0] = masked
        m.input[1] = _add_init(model, _unique(view, f"{m.input[1]}_inliers"),
                               w_main.astype(np.float32))
        m.output[0] = y_main
        result.float_nodes += [float_mm, after[m.name][0].name]
        result.details.append({"matmul": m.name, "layer": layer,
                               "outlier_channels": [int(i) for i in idx],
                               "max": float(act.max()), "median": med})
        total += idx.size
    _insert_after(model, after, before)
    _prune(model)
    result.notes.append(f"outlier-split(ratio={ratio:g}): {total} outlier channel(s) in "
                        f"{len(result.details)} of {len(mms)} FFN output projection(s) kept float")
    return result


_TRANSFORMS = {
    TransformName.SMOOTH: lambda m, s, spec: smooth(m, s, spec.get("alpha")),
    TransformName.OUTLIER_SPLIT: lambda m, s, spec: outlier_split(m, s, spec.get("ratio")),
}


def apply(model: onnx.ModelProto, specs: Sequence[TransformSpec],
          samples: Sequence[Feeds], check: Sequence[Feeds] | None = None) -> TransformResult:
    """Apply ``specs`` in order to a copy of ``model``, then prove float equivalence.

    Args:
        model: the float model (not modified).
        specs: transforms to apply.
        samples: calibration feeds for the statistics (dtypes as the model's inputs).
        check: feeds for the float-equivalence check (default: up to 8 of ``samples``).

    Returns:
        The result; ``details[-1]`` is the float check (``cosine_min``, ``max_abs_error``).

    Raises:
        TransformError: the rewritten model disagrees with the original in float.
    """
    work = onnx.ModelProto()
    work.CopyFrom(model)
    total = TransformResult(work)
    for spec in specs:
        step = _TRANSFORMS[spec.name](work, samples, spec)
        total.float_nodes += step.float_nodes
        total.notes += step.notes
        total.details.append({"transform": spec.to_dict(), "changes": step.details})
    if specs:
        verdict = check_float(model, work, list(check or samples[:8]))
        total.details.append({"float_check": verdict})
    return total


def check_float(reference: onnx.ModelProto, rewritten: onnx.ModelProto,
                samples: Sequence[Feeds]) -> dict[str, float]:
    """Compare the two models' outputs in float; raise unless equal to float rounding.

    Raises:
        TransformError: some output's per-sample cosine < 1 - 1e-6 or its max abs error
            > 1e-3 of the reference output's magnitude.
    """
    a, b = session(reference), session(rewritten)
    worst_cos, worst_err, worst_rel = 1.0, 0.0, 0.0
    for feeds in samples:
        for ra, rb in zip(a.run(None, feeds), b.run(None, feeds), strict=True):
            x = np.asarray(ra, np.float64).reshape(len(ra) if np.ndim(ra) else 1, -1)
            y = np.asarray(rb, np.float64).reshape(x.shape)
            den = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
            cos = np.where(den > 0, (x * y).sum(axis=1) / np.where(den > 0, den, 1), 1.0)
            err = float(np.abs(x - y).max()) if x.size else 0.0
            scale = float(np.abs(x).max()) if x.size else 0.0
            worst_cos = min(worst_cos, float(cos.min()) if cos.size else 1.0)
            worst_err = max(worst_err, err)
            worst_rel = max(worst_rel, err / scale if scale > 0 else err)
    verdict = {"cosine_min": worst_cos, "max_abs_error": worst_err, "max_rel_error": worst_rel,
               "samples": len(samples)}
    if worst_cos < 1 - COSINE_TOL or worst_rel > ABS_TOL:
        raise TransformError(
            f"graph transform changed the float model's outputs (cosine {worst_cos:.7f}, "
            f"max abs error {worst_err:.3g} = {worst_rel:.2e} of the output scale): refused"
        )
    return verdict


def _insert_after(model: onnx.ModelProto, after: dict[str, list[onnx.NodeProto]],
                  before: dict[str, list[onnx.NodeProto]] | None = None) -> None:
    """Rebuild the node list with new nodes placed around the named nodes (keeps topo order)."""
    before = before or {}
    nodes = list(model.graph.node)
    del model.graph.node[:]
    for n in nodes:
        model.graph.node.extend(before.get(n.name, []))
        model.graph.node.append(n)
        model.graph.node.extend(after.get(n.name, []))


def _prune(model: onnx.ModelProto) -> None:
    """Drop nodes whose outputs nobody reads (the original LayerNorm when only MatMuls read it)
    and initializers no node reads."""
    outputs = {o.name for o in model.graph.output}
    changed = True
    while changed:
        used = _used(model.graph) | outputs
        keep = [n for n in model.graph.node if any(o in used for o in n.output if o)]
        changed = len(keep) != len(model.graph.node)
        if changed:
            del model.graph.node[:]
            model.graph.node.extend(keep)
    used = _used(model.graph)
    inits = [t for t in model.graph.initializer if t.name in used]
    if len(inits) != len(model.graph.initializer):
        del model.graph.initializer[:]
        model.graph.initializer.extend(inits)


def _used(graph: onnx.GraphProto) -> set[str]:
    """Tensor names read by the graph's nodes, including nodes of subgraphs (If / Loop bodies
    read outer-scope names)."""
    used: set[str] = set()
    for n in graph.node:
        used.update(i for i in n.input if i)
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                used |= _used(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for g in a.graphs:
                    used |= _used(g)
    return used
