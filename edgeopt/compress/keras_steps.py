"""The compression steps on a Keras model, in order, each with its fine-tuning phase.

channel pruning (one shot, then fine-tune) -> magnitude pruning (schedule during fine-tuning)
-> clustering (sparsity-preserving, centroids fine-tuned) -> QAT (fake quant, BN folded,
masks and shared weights still held). Every phase trains ``epochs`` epochs with the same loss
(hard labels and/or distillation from the untouched float original).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from edgeopt_runtime.errors import ModelLoadError

from . import channels, cluster, graph, qat, train
from .data import Dataset
from .options import CompressOptionError, CompressOptions, Criterion

Progress = Callable[[str], None]


@dataclass
class StepsResult:
    """The compressed float model and what each step did."""

    model: Any
    phases: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    channel_plan: dict[str, Any] | None = None
    qat: dict[str, Any] | None = None


def copy_model(model: Any) -> Any:
    """An independent functional copy (new variables, same weights)."""
    import keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def targets_for(teacher: Any, data: Dataset, opts: CompressOptions) -> train.Targets:
    """Labels and/or teacher outputs for fine-tuning, with the output kinds.

    Raises:
        CompressOptionError: fine-tuning without labels and without --distill.
    """
    teacher_out = train.predict(teacher, data.inputs)
    kinds = train.output_kinds(teacher, teacher_out, data.labels, opts.distill_loss.value)
    label_output = None
    if data.labels is not None:
        label_output = next((i for i, k in enumerate(kinds) if k is not train.OutputKind.VALUES),
                            None)
    if opts.fine_tunes and not opts.distill and label_output is None:
        why = ("has no labels" if data.labels is None else
               "has labels but the model has no class-score output to match them with")
        raise CompressOptionError(
            f"{data.path}: the training data {why}; pass --distill (the float original labels "
            "the data) or --epochs 0 (no fine-tuning)"
        )
    return train.Targets(kinds, data.labels, teacher_out if opts.distill else None, label_output)


def run_steps(teacher: Any, data: Dataset, opts: CompressOptions, skip: tuple[re.Pattern[str], ...],
              say: Progress) -> StepsResult:
    """Apply every requested step to a copy of ``teacher`` (which is left untouched)."""
    targets = targets_for(teacher, data, opts)
    settings = train.TrainSettings(
        epochs=opts.epochs, batch_size=opts.batch_size, learning_rate=opts.learning_rate,
        temperature=opts.temperature, alpha=opts.distill_alpha, seed=opts.seed,
        distill=opts.distill)
    steps = train.steps_for(data.count, settings)
    student = copy_model(teacher)
    result = StepsResult(student)
    masks: train.MaskConstraint | None = None
    clusters: dict[str, cluster.Clustering] = {}

    def tune(model: Any, constraints: list[Any], phase: str) -> None:
        if not opts.fine_tunes:
            result.phases.append({"phase": phase, "steps": 0, "fine_tuned": False})
            return
        history = train.fine_tune(model, data.inputs, targets, settings, constraints, phase, say)
        result.phases.append({**history.to_dict(), "fine_tuned": True})

    stem = set() if opts.prune_first else graph.first_layers(student)
    if stem and (opts.prune is not None or opts.prune_channels is not None):
        result.notes.append(
            f"first layer(s) {', '.join(sorted(stem))} not pruned (they read the raw input and "
            "have few weights; measured on the digits example: 50 % one-shot pruning of every "
            "layer left 32 % accuracy); pass --prune-first to prune them too")
    if opts.prune_channels is not None:
        say(f"channel pruning {opts.prune_channels:.0%} of the filters per layer")
        student = _prune_channels(student, data, targets, settings, opts,
                                  skip + tuple(re.compile(f"^{re.escape(n)}$") for n in stem),
                                  result)
        result.model = student
        tune(student, [], "prune_channels")
    if opts.prune is not None:
        ks = [k for k in _kernels_or_fail(student, skip, data, "--prune") if k.layer not in stem]
        if not ks:
            raise ModelLoadError("--prune: the model has no prunable layers besides its first "
                                 "layer; pass --prune-first to prune it")
        say(f"magnitude pruning to {opts.prune:.0%} sparsity per kernel ({len(ks)} kernels)")
        masks = train.MaskConstraint(ks, opts.prune, steps if opts.fine_tunes else 0)
        tune(student, [masks], "prune")
    if opts.cluster is not None:
        ks = _kernels_or_fail(student, skip, data, "--cluster")
        say(f"clustering {len(ks)} kernels into {opts.cluster} shared values each")
        constraint = _cluster(ks, opts.cluster, opts.prune is not None, clusters)
        held = train.MaskConstraint.fixed(masks.kernels) if masks is not None else None
        tune(student, [c for c in (held, constraint) if c is not None], "cluster")
    if opts.qat:
        say("quantization-aware fine-tuning (fake-quant weights and activations)")
        student = _qat(student, data, opts, skip, masks, clusters, tune, result)
        result.model = student
    if opts.distill and not (opts.prune_channels is not None or opts.prune is not None
                             or opts.cluster is not None or opts.qat):
        raise CompressOptionError("--distill applies to a compression step; add --prune, "
                                  "--prune-channels, --cluster or --qat")
    return result


def _kernels_or_fail(model: Any, skip: tuple[re.Pattern[str], ...], data: Dataset,
                     option: str) -> list[graph.Kernel]:
    ks = graph.kernels(model, skip)
    if not ks:
        raise ModelLoadError(
            f"{option}: the model has no prunable layers (Conv*/Dense/Embedding kernels"
            f"{', after --skip' if skip else ''}); nothing to compress"
        )
    return ks


def _prune_channels(student: Any, data: Dataset, targets: train.Targets,
                    settings: train.TrainSettings, opts: CompressOptions,
                    skip: tuple[re.Pattern[str], ...], result: StepsResult) -> Any:
    plan = channels.plan(student, skip)
    if not plan.groups:
        reasons = "; ".join(f"{k}: {v}" for k, v in list(plan.skipped.items())[:4])
        raise ModelLoadError(
            "--prune-channels: the model has no layer whose filters can be removed "
            f"({reasons or 'no Conv1D/Conv2D/Dense layer'})"
        )
    criterion = opts.criterion
    scores = None
    labelled = targets.labels is not None and targets.label_output is not None
    if criterion is Criterion.AUTO:
        criterion = Criterion.TAYLOR if labelled else Criterion.L1
    if criterion is Criterion.TAYLOR:
        if not labelled:
            result.notes.append("taylor criterion needs labels (the loss gradient); "
                                "ranked by L1 norm instead")
            criterion = Criterion.L1
        else:
            plain = train.TrainSettings(**{**settings.__dict__, "distill": False})
            hard = train.Targets(targets.kinds, targets.labels, None, targets.label_output)
            scores = train.taylor_scores(student, [g.producer for g in plan.groups],
                                         data.inputs, hard, plain)
    channels.rank(student, plan, opts.prune_channels or 0.0, criterion, scores)
    result.channel_plan = {**plan.to_dict(), "criterion": criterion.value}
    return channels.apply(student, plan)


def _cluster(ks: list[graph.Kernel], k: int, preserve_zeros: bool,
             clusters: dict[str, cluster.Clustering]) -> train.ClusterConstraint:
    segments, counts, zeros = [], [], []
    for kern in ks:
        c = cluster.cluster_kernel(kern.numpy(), k, preserve_zeros)
        clusters[kern.key] = c
        kern.variable.assign(c.weights())
        segments.append(c.indices)
        counts.append(int(c.centroids.size))
        zeros.append(np.array([c.zero_index] if c.zero_index is not None else [], np.int32))
    return train.ClusterConstraint(ks, segments, counts, zeros)


def _qat(student: Any, data: Dataset, opts: CompressOptions, skip: tuple[re.Pattern[str], ...],
         masks: train.MaskConstraint | None, clusters: dict[str, cluster.Clustering],
         tune: Callable[[Any, list[Any], str], None], result: StepsResult) -> Any:
    folded, bn_names = qat.fold_batchnorm(student)
    constraints: list[Any] = []
    ks = graph.kernels(folded, skip)
    if masks is not None and ks:
        constraints.append(train.MaskConstraint.fixed(ks))
    if clusters and ks:
        constraints.append(_per_channel_clusters(ks, clusters))
    q = qat.QATModel(folded, data.inputs)
    tune(q.model, constraints, "qat")
    exported = q.export()
    result.qat = {"fake_quant_points": len(q.quantizers), "folded_batchnorm": bn_names,
                  "split_activations": dict(q.split),
                  "ranges": {k: [round(lo, 6), round(hi, 6)] for k, (lo, hi) in
                             q.ranges().items()}}
    if clusters and bn_names:
        result.notes.append("QAT folded batch norm into clustered kernels: each output channel "
                            "keeps its own K shared values (the BN scale differs per channel)")
    return exported


def _per_channel_clusters(ks: list[graph.Kernel], clusters: dict[str, cluster.Clustering]
                          ) -> train.ClusterConstraint:
    """Clusters after BN folding: the same assignment, one centroid set per output channel."""
    segments, counts, zeros, kept = [], [], [], []
    for kern in ks:
        c = clusters.get(kern.key)
        if c is None or c.indices.shape != tuple(kern.variable.shape):
            continue
        k = int(c.centroids.size)
        tail = c.indices.shape[-2:] if kern.cls.startswith("Depthwise") else c.indices.shape[-1:]
        channels_ = int(np.prod(tail))
        chan = np.broadcast_to(np.arange(channels_).reshape(tail), c.indices.shape)
        segments.append(c.indices + k * chan)
        counts.append(k * channels_)
        zeros.append(np.array([c.zero_index + k * j for j in range(channels_)], np.int32)
                     if c.zero_index is not None else np.zeros(0, np.int32))
        kept.append(kern)
    return train.ClusterConstraint(kept, segments, counts, zeros)
