"""Weight clustering (weight sharing): each kernel's values are replaced by the nearest of K
shared centroids, found by 1-D k-means.

Why hand-written: k-means on one dimension is a sort plus a few Lloyd passes over a sorted
array (``np.searchsorted`` on the midpoints between centroids gives exact nearest-centroid
assignment); scikit-learn's general k-means would add a heavy dependency for ~30 lines, and
tensorflow-model-optimization's clustering does not run on Keras 3 (measured:
``cluster_weights`` returns None for a Keras 3 model).

Initialisation is by quantiles of the weight distribution ("density-based", one of tfmot's
options): deterministic, and it places centroids where the weights are, so rare large weights
do not claim centroids the bulk needs. Zeros of a pruned kernel form their own fixed centroid
(sparsity-preserving clustering): the kernel keeps its sparsity and has at most K distinct
values, zero included.

During fine-tuning the assignment is fixed and each centroid moves by the mean of the
optimizer's updates of its members (for plain SGD exactly a gradient step of the centroid with
the averaged gradient); see ``edgeopt.compress.train``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LLOYD_ITERATIONS = 30


@dataclass(frozen=True)
class Clustering:
    """Centroids and the per-weight assignment of one kernel."""

    centroids: np.ndarray  # float32 [K'] sorted; K' <= K (fewer when there are fewer values)
    indices: np.ndarray  # int32, kernel shape, index into centroids
    zero_index: int | None  # the centroid fixed at 0 (pruned weights), if any

    def weights(self) -> np.ndarray:
        return self.centroids[self.indices]


def kmeans_1d(values: np.ndarray, k: int, iterations: int = LLOYD_ITERATIONS) -> np.ndarray:
    """Sorted centroids of 1-D k-means on ``values`` (at most ``k``; fewer distinct values give
    fewer centroids)."""
    v = np.sort(values.astype(np.float64).ravel())
    uniq = np.unique(v)
    if uniq.size <= k:
        return uniq.astype(np.float32)
    c = np.quantile(v, (np.arange(k) + 0.5) / k)
    csum = np.r_[0.0, np.cumsum(v)]
    for _ in range(iterations):
        bounds = np.r_[0, np.searchsorted(v, (c[1:] + c[:-1]) / 2), v.size]
        counts = np.diff(bounds)
        sums = csum[bounds[1:]] - csum[bounds[:-1]]
        new = np.where(counts > 0, sums / np.maximum(counts, 1), c)  # empty: stays put
        new = np.sort(new)
        if np.allclose(new, c, rtol=0, atol=1e-12):
            break
        c = new
    return np.unique(c.astype(np.float32))


def assign(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid for every value (centroids sorted)."""
    if centroids.size == 1:
        return np.zeros(values.shape, dtype=np.int32)
    edges = (centroids[1:] + centroids[:-1]) / 2
    return np.searchsorted(edges, values, side="left").astype(np.int32)


def cluster_kernel(weights: np.ndarray, k: int, preserve_zeros: bool) -> Clustering:
    """Cluster one kernel into at most ``k`` values.

    Args:
        weights: the kernel.
        k: number of shared values (>= 2).
        preserve_zeros: keep exact zeros as their own centroid (a pruned kernel); the other
            weights then share ``k - 1`` centroids.
    """
    w = weights.astype(np.float32)
    zeros = (w == 0) if preserve_zeros else np.zeros(w.shape, dtype=bool)
    if not zeros.any():
        c = kmeans_1d(w, k)
        return Clustering(c, assign(w, c), None)
    nz = w[~zeros]
    c = kmeans_1d(nz, k - 1) if nz.size else np.zeros(0, np.float32)
    c = c[c != 0]  # a centroid at exactly 0 would merge with the pruned weights
    centroids = np.sort(np.r_[c, np.float32(0)]).astype(np.float32)
    zero_index = int(np.flatnonzero(centroids == 0)[0])
    idx = assign(w, centroids)
    # a small non-zero weight may be nearest to the 0 centroid: move it to its nearest non-zero
    # centroid, so the sparsity after clustering is exactly the pruned one
    near_zero = (idx == zero_index) & ~zeros
    if near_zero.any() and c.size:
        others = np.flatnonzero(centroids != 0)
        pick = np.abs(w[near_zero][:, None] - centroids[others][None, :]).argmin(axis=1)
        idx[near_zero] = others[pick]
    idx[zeros] = zero_index
    return Clustering(centroids, idx.astype(np.int32), zero_index)


def unique_count(weights: np.ndarray) -> int:
    return int(np.unique(weights).size)
