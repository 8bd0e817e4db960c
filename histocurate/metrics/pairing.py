"""One-to-one pairing of true and predicted nuclei (Hungarian assignment on centroid distance).

The paper pairs nuclei by Hungarian assignment on centroid distance and counts a pair when
its IoU exceeds 0.5 (masks), or when the centroids lie within 12 px at 40x (points only).
Here the acceptance test is applied *before* the assignment: only pairs that pass it are
candidates, and the assignment picks, among those, the largest set of one-to-one pairs of
least total distance. Applying the test after an unconstrained assignment can lose a
match the test would accept (two concentric nuclei have the same centroid; a distant
nucleus can pull a neighbour away), so that a map compared with itself would not score
1. For masks with a threshold >= 0.5 every nucleus has at most one candidate, the
assignment is not even needed, and the result is exactly the PQ matching of Kirillov et
al.; the Hungarian step matters for thresholds below 0.5 and for points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment


@dataclass(frozen=True, slots=True)
class Pairs:
    """Accepted pairs as 0-based indices into the true and predicted nuclei."""

    true_index: NDArray[np.int64]
    pred_index: NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.true_index.size)


def assign_candidates(
    true_index: NDArray[np.integer],
    pred_index: NDArray[np.integer],
    cost: NDArray[np.floating],
) -> NDArray[np.int64]:
    """Choose a one-to-one subset of candidate pairs: most pairs, then least total cost.

    ``true_index[k], pred_index[k]`` is candidate ``k`` with ``cost[k]`` (each pair listed
    once). Returns the
    positions ``k`` kept, sorted. When no nucleus takes part in two candidates, all are
    kept without running the assignment.
    """
    ti = np.asarray(true_index, dtype=np.int64)
    pi = np.asarray(pred_index, dtype=np.int64)
    if ti.size == 0:
        return np.zeros(0, dtype=np.int64)
    rows, row_of = np.unique(ti, return_inverse=True)
    cols, col_of = np.unique(pi, return_inverse=True)
    if rows.size == ti.size and cols.size == pi.size:
        return np.arange(ti.size, dtype=np.int64)
    finite = np.asarray(cost, dtype=np.float64)
    # A non-candidate costs more than any set of candidates: the assignment first
    # maximises the number of candidate pairs, then minimises their total cost.
    big = (float(np.abs(finite).max()) + 1.0) * (min(rows.size, cols.size) + 1)
    matrix = np.full((rows.size, cols.size), big)
    slot = np.full((rows.size, cols.size), -1, dtype=np.int64)
    matrix[row_of, col_of] = finite
    slot[row_of, col_of] = np.arange(ti.size)
    r, c = linear_sum_assignment(matrix)
    kept = slot[r, c]
    return np.sort(kept[kept >= 0])


def pair_points(
    true_xy: NDArray[np.floating], pred_xy: NDArray[np.floating], *, radius: float
) -> Pairs:
    """Pair centroids one-to-one within ``radius`` pixels (inclusive), least total distance.

    Used when only points exist (12 px at 40x, 6 px at 20x, as HoVer-Net and CellViT).
    """
    t = np.asarray(true_xy, dtype=np.float64).reshape(-1, 2)
    p = np.asarray(pred_xy, dtype=np.float64).reshape(-1, 2)
    if t.shape[0] == 0 or p.shape[0] == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Pairs(empty, empty.copy())
    dist = np.sqrt(((t[:, None, :] - p[None, :, :]) ** 2).sum(axis=2))
    ti, pi = np.nonzero(dist <= radius)
    kept = assign_candidates(ti, pi, dist[ti, pi])
    return Pairs(ti[kept].astype(np.int64), pi[kept].astype(np.int64))
