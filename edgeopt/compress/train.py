"""Fine-tuning with the compression constraints held, optionally distilled from the float
original.

One loop (``fine_tune``) for every step: a ``tf.GradientTape`` step on the student, then each
constraint projects the weights back onto its set — pruning masks multiply the kernels (so
zeros stay zeros whatever the optimizer's momentum says), clustering moves every centroid by
the mean update of its members and writes the centroids back. The projection runs inside the
compiled step, right after the optimizer, so no step ever sees an unconstrained weight.

Losses (per output, ``OutputKind``):

* class scores (``probabilities`` — a softmax output — or ``logits``): the hard-label cross
  entropy when labels exist, and for distillation ``T^2 * KL(softmax(t/T) || softmax(s/T))``
  (Hinton et al. 2015); a probability output is turned back into logits with ``log``, which
  softmax maps back to the same distribution;
* other outputs (``values``: embeddings, regression): MSE to the teacher.

With labels and distillation the loss is ``alpha * hard + (1 - alpha) * distill``; without
labels distillation alone (unlabelled data is enough: the teacher labels it).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from .graph import Kernel
from .magnitude import Schedule, magnitude_mask

Progress = Callable[[str], None]
PROB_TOL = 1e-3


class OutputKind(StrEnum):
    PROBABILITIES = "probabilities"
    LOGITS = "logits"
    VALUES = "values"


@dataclass
class Targets:
    """What the student learns from: labels and/or the teacher's outputs on the same inputs."""

    kinds: list[OutputKind]
    labels: np.ndarray | None = None
    teacher: list[np.ndarray] | None = None  # one array per output, aligned with the inputs
    label_output: int | None = None  # which output the labels belong to


@dataclass
class History:
    """Mean losses per epoch of one fine-tuning phase."""

    phase: str
    loss: list[float] = field(default_factory=list)
    distill: list[float] = field(default_factory=list)
    hard: list[float] = field(default_factory=list)
    steps: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "steps": self.steps,
                "loss": [round(v, 6) for v in self.loss],
                "distill_loss": [round(v, 6) for v in self.distill] or None,
                "hard_loss": [round(v, 6) for v in self.hard] or None}


def call_model(model: Any, xs: list[Any], training: bool) -> list[Any]:
    """``model`` on positional inputs, outputs as a list.

    Rebuilt functional models record a list input structure even for one input; Keras then
    warns on every call with a plain tensor although the result is the same, so that one
    warning is silenced here.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The structure of `inputs`")
        out = model(xs if len(xs) > 1 else xs[0], training=training)
    return list(out) if isinstance(out, (list, tuple)) else [out]


# ------------------------------------------------------------------------------ constraints


class MaskConstraint:
    """Magnitude-pruning masks on kernels, recomputed along a sparsity schedule."""

    def __init__(self, kernels: list[Kernel], target: float, steps: int) -> None:
        import tensorflow as tf

        self.kernels = kernels
        self.schedule: Schedule | None = Schedule.for_steps(target, steps)
        self.masks = [tf.Variable(np.ones(k.variable.shape, np.float32), trainable=False)
                      for k in kernels]
        if steps == 0:
            self.update(self.schedule.end_step)

    @classmethod
    def fixed(cls, kernels: list[Kernel]) -> MaskConstraint:
        """Hold the zeros the kernels have now (no schedule): pruning kept through QAT."""
        self = cls(kernels, 0.0, 1)
        self.schedule = None
        for k, m in zip(kernels, self.masks, strict=True):
            m.assign((k.numpy() != 0).astype(np.float32))
        return self

    def update(self, step: int) -> None:
        if self.schedule is None:
            return
        sparsity = self.schedule.sparsity(step)
        for k, m in zip(self.kernels, self.masks, strict=True):
            new = magnitude_mask(k.numpy(), sparsity, keep_zero=m.numpy())
            m.assign(new)
            k.variable.assign(k.numpy() * new)

    def before_step(self, step: int) -> None:
        if self.schedule is not None and self.schedule.updates_at(step):
            self.update(step)

    def project(self) -> None:
        for k, m in zip(self.kernels, self.masks, strict=True):
            k.variable.assign(k.variable * m)


class ClusterConstraint:
    """Shared weights: fixed assignments, centroids moved by their members' mean update."""

    def __init__(self, kernels: list[Kernel], segments: list[np.ndarray], counts: list[int],
                 zero_segments: list[np.ndarray]) -> None:
        import tensorflow as tf

        self.kernels = kernels
        self.segments = [tf.constant(s.reshape(-1), tf.int32) for s in segments]
        self.counts = counts
        self.zero = [tf.constant(z.reshape(-1, 1), tf.int32) for z in zero_segments]

    def before_step(self, step: int) -> None:
        return None

    def project(self) -> None:
        import tensorflow as tf

        for k, seg, n, zero in zip(self.kernels, self.segments, self.counts, self.zero,
                                   strict=True):
            flat = tf.reshape(k.variable, [-1])
            c = tf.math.unsorted_segment_mean(flat, seg, n)
            if zero.shape[0]:
                c = tf.tensor_scatter_nd_update(c, zero, tf.zeros([zero.shape[0]], c.dtype))
            k.variable.assign(tf.reshape(tf.gather(c, seg), k.variable.shape))


# ------------------------------------------------------------------------------ targets


def output_kinds(model: Any, outputs: list[np.ndarray], labels: np.ndarray | None,
                 forced: str) -> list[OutputKind]:
    """How each output is read: class probabilities, logits, or plain values.

    ``forced`` is the ``--distill-loss`` choice: ``mse`` reads every output as values, ``kl``
    reads rank-2 outputs as class scores even without labels.
    """
    kinds = []
    for i, out in enumerate(outputs):
        if forced == "mse" or out.ndim != 2 or out.shape[1] < 2:
            kinds.append(OutputKind.VALUES)
        elif _ends_in_softmax(model, i) or _probability_rows(out):
            kinds.append(OutputKind.PROBABILITIES)
        elif forced == "kl" or (labels is not None and int(labels.max(initial=0)) < out.shape[1]):
            kinds.append(OutputKind.LOGITS)
        else:
            kinds.append(OutputKind.VALUES)
    return kinds


def _probability_rows(a: np.ndarray) -> bool:
    return bool(a.size and a.min() >= 0 and np.all(np.abs(a.sum(axis=1) - 1) < PROB_TOL))


def _ends_in_softmax(model: Any, index: int) -> bool:
    try:
        layer = model.outputs[index]._keras_history[0]  # noqa: SLF001
    except (AttributeError, IndexError):
        return False
    conf = layer.get_config() if hasattr(layer, "get_config") else {}
    return type(layer).__name__ == "Softmax" or conf.get("activation") == "softmax"


# ------------------------------------------------------------------------------ the loop


@dataclass(frozen=True)
class TrainSettings:
    epochs: int
    batch_size: int
    learning_rate: float
    temperature: float
    alpha: float
    seed: int
    distill: bool


def steps_for(n_samples: int, settings: TrainSettings) -> int:
    return settings.epochs * math.ceil(n_samples / settings.batch_size)


def fine_tune(model: Any, inputs: list[np.ndarray], targets: Targets, settings: TrainSettings,
              constraints: list[Any], phase: str, say: Progress) -> History:
    """Train ``model`` for ``settings.epochs`` with every constraint held after each step.

    Args:
        model: the student (a Keras model; its variables are updated in place).
        inputs: one array per model input, all with the same number of samples.
        targets: labels and/or teacher outputs aligned with ``inputs``.
        settings: epochs, batch size, optimizer and distillation settings.
        constraints: objects with ``before_step(step)`` (Python side, e.g. a mask schedule)
            and ``project()`` (graph side, after every optimizer step).
        phase: name for the progress lines and the history.
        say: progress callback.
    """
    import keras
    import tensorflow as tf

    history = History(phase)
    n = int(inputs[0].shape[0])
    optimizer = keras.optimizers.Adam(settings.learning_rate)
    optimizer.build(model.trainable_variables)
    loss_fn = _loss(targets, settings)

    @tf.function(reduce_retracing=True)
    def train_step(xs: list[Any], labels: Any, teacher: list[Any]) -> tuple[Any, Any, Any]:
        with tf.GradientTape() as tape:
            outs = call_model(model, xs, training=True)
            total, hard, distill = loss_fn(outs, labels, teacher)
        grads = tape.gradient(total, model.trainable_variables)
        optimizer.apply_gradients(
            [(g, v) for g, v in zip(grads, model.trainable_variables, strict=True)
             if g is not None])
        for c in constraints:
            c.project()
        return total, hard, distill

    rng = np.random.default_rng(settings.seed)
    step = 0
    labels_all = targets.labels
    for epoch in range(settings.epochs):
        order = rng.permutation(n)
        sums = np.zeros(3)
        batches = 0
        for start in range(0, n, settings.batch_size):
            idx = order[start:start + settings.batch_size]
            for c in constraints:
                c.before_step(step)
            xs = [tf.constant(x[idx]) for x in inputs]
            lab = tf.constant(labels_all[idx]) if labels_all is not None else tf.zeros([0])
            teach = [tf.constant(t[idx]) for t in targets.teacher] if targets.teacher else []
            values = train_step(xs, lab, teach)
            sums += [float(v) for v in values]
            batches += 1
            step += 1
        mean = sums / max(batches, 1)
        history.loss.append(float(mean[0]))
        if targets.labels is not None and targets.label_output is not None:
            history.hard.append(float(mean[1]))
        if settings.distill:
            history.distill.append(float(mean[2]))
        say(f"{phase}: epoch {epoch + 1}/{settings.epochs} loss {mean[0]:.4f}")
    for c in constraints:  # a schedule that ended exactly at the last step still applies
        c.before_step(step)
        c.project()
    history.steps = step
    return history


def _loss(targets: Targets, settings: TrainSettings) -> Callable[..., tuple[Any, Any, Any]]:
    import tensorflow as tf

    t = settings.temperature
    kinds = targets.kinds
    use_hard = targets.labels is not None and targets.label_output is not None
    alpha = settings.alpha if (use_hard and settings.distill) else (1.0 if use_hard else 0.0)

    def as_logits(x: Any, kind: OutputKind) -> Any:
        if kind is OutputKind.PROBABILITIES:
            return tf.math.log(tf.clip_by_value(x, 1e-7, 1.0))
        return x

    def loss(outs: list[Any], labels: Any, teacher: list[Any]) -> tuple[Any, Any, Any]:
        zero = tf.constant(0.0)
        hard = distill = zero
        if use_hard:
            i = targets.label_output
            logits = as_logits(outs[i], kinds[i])
            hard = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tf.cast(tf.reshape(labels, [-1]), tf.int32), logits=logits))
        if settings.distill:
            parts = []
            for s, te, kind in zip(outs, teacher, kinds, strict=True):
                if kind is OutputKind.VALUES:
                    parts.append(tf.reduce_mean(tf.square(tf.cast(s, tf.float32) - te)))
                else:
                    p_t = tf.nn.softmax(as_logits(te, kind) / t)
                    log_s = tf.nn.log_softmax(as_logits(s, kind) / t)
                    log_t = tf.math.log(tf.clip_by_value(p_t, 1e-12, 1.0))
                    parts.append(t * t * tf.reduce_mean(tf.reduce_sum(p_t * (log_t - log_s),
                                                                      axis=-1)))
            distill = tf.add_n(parts)
        total = alpha * hard + (1.0 - alpha) * distill
        return total, hard, distill

    return loss


def predict(model: Any, inputs: list[np.ndarray], batch_size: int = 256) -> list[np.ndarray]:
    """Outputs of ``model`` in inference mode, one array per output (no ``predict`` overhead
    matters here: this runs once per phase, not per timed call)."""
    outs: list[list[np.ndarray]] = []
    n = int(inputs[0].shape[0])
    for start in range(0, n, batch_size):
        xs = [x[start:start + batch_size] for x in inputs]
        y = call_model(model, xs, training=False)
        if not outs:
            outs = [[] for _ in y]
        for acc, v in zip(outs, y, strict=True):
            acc.append(np.asarray(v))
    return [np.concatenate(o) for o in outs]


def taylor_scores(model: Any, layer_names: list[str], inputs: list[np.ndarray],
                  targets: Targets, settings: TrainSettings, batches: int = 16
                  ) -> dict[str, np.ndarray]:
    """First-order Taylor importance per output channel of each named layer:
    ``(sum over the filter's weights and bias of g * w)^2``, averaged over up to ``batches``
    training batches (Molchanov et al. 2019). Uses the same loss as fine-tuning."""
    import tensorflow as tf

    layers = {layer.name: layer for layer in model.layers}
    variables = []
    for name in layer_names:
        layer = layers[name]
        variables.append([layer.kernel] + ([layer.bias] if getattr(layer, "bias", None) is not None
                                           else []))
    flat_vars = [v for vs in variables for v in vs]
    loss_fn = _loss(targets, settings)
    scores = {name: 0.0 for name in layer_names}
    n = int(inputs[0].shape[0])
    order = np.random.default_rng(settings.seed).permutation(n)
    used = 0
    for start in range(0, n, settings.batch_size):
        if used >= batches:
            break
        idx = order[start:start + settings.batch_size]
        xs = [tf.constant(x[idx]) for x in inputs]
        with tf.GradientTape() as tape:
            outs = call_model(model, xs, training=False)
            lab = tf.constant(targets.labels[idx]) if targets.labels is not None else None
            teach = [tf.constant(t[idx]) for t in targets.teacher] if targets.teacher else []
            total, _, _ = loss_fn(list(outs), lab, teach)
        grads = tape.gradient(total, flat_vars)
        pos = 0
        for name, vs in zip(layer_names, variables, strict=True):
            contrib = 0.0
            for v in vs:
                g = grads[pos]
                pos += 1
                if g is None:
                    continue
                gw = np.asarray(g) * np.asarray(v.numpy())
                contrib = contrib + gw.reshape(-1, gw.shape[-1]).sum(axis=0)
            scores[name] = scores[name] + np.square(contrib)
        used += 1
    return {k: np.asarray(v, dtype=np.float64) / max(used, 1) for k, v in scores.items()}
