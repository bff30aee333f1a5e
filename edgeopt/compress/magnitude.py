"""Unstructured magnitude pruning: the smallest-|w| weights of each kernel become zero, following
a polynomial sparsity schedule during fine-tuning, and stay zero (the masks are re-applied after
every optimizer step, so neither the gradient nor the optimizer's momentum can revive them).

The schedule is the one of Zhu & Gupta (2017), also tensorflow-model-optimization's
``PolynomialDecay``: ``s(t) = s_f + (s_0 - s_f) * (1 - t / T)^3`` from ``s_0 = 0`` at step 0 to the
target ``s_f`` at step ``T`` (70 % of the fine-tuning steps, so the last 30 % train with the final
mask), updated every ``frequency`` steps. Sparsity is per kernel (each kernel reaches the target),
not global, so no single layer is emptied.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

END_FRACTION = 0.7  # the schedule reaches the target at 70 % of the steps
UPDATES = 10  # the mask is recomputed about this many times along the schedule


@dataclass(frozen=True)
class Schedule:
    """Polynomial sparsity schedule from 0 to ``target`` over ``end_step`` steps."""

    target: float
    end_step: int
    frequency: int
    power: float = 3.0

    @classmethod
    def for_steps(cls, target: float, steps: int) -> Schedule:
        """The schedule for ``steps`` fine-tuning steps (0: prune at once)."""
        end = max(1, int(steps * END_FRACTION))
        return cls(target=target, end_step=end, frequency=max(1, end // UPDATES))

    def sparsity(self, step: int) -> float:
        if step >= self.end_step:
            return self.target
        return self.target * (1.0 - (1.0 - step / self.end_step) ** self.power)

    def updates_at(self, step: int) -> bool:
        """Whether the mask is recomputed after ``step`` (0-based count of finished steps)."""
        return step <= self.end_step and (step % self.frequency == 0 or step == self.end_step)


def magnitude_mask(weights: np.ndarray, sparsity: float, keep_zero: np.ndarray | None = None
                   ) -> np.ndarray:
    """A 0/1 mask zeroing exactly ``round(sparsity * size)`` smallest-magnitude weights.

    Args:
        weights: the kernel.
        sparsity: fraction of weights to zero, in [0, 1).
        keep_zero: an earlier mask; weights it zeroed stay zeroed (masks only grow).

    Returns:
        float32 array of the kernel's shape (1 = kept).
    """
    flat = np.abs(weights.astype(np.float64)).ravel()
    n_zero = int(round(sparsity * flat.size))
    if keep_zero is not None:
        flat = np.where(keep_zero.ravel() == 0, -1.0, flat)  # already pruned: first in line
    mask = np.ones(flat.size, dtype=np.float32)
    if keep_zero is not None:
        mask[keep_zero.ravel() == 0] = 0.0
    if n_zero > 0:
        order = np.argsort(flat, kind="stable")
        mask[order[:n_zero]] = 0.0
    return mask.reshape(weights.shape)


def sparsity_of(weights: np.ndarray) -> float:
    """Fraction of exact zeros."""
    return float(np.mean(weights == 0)) if weights.size else 0.0
