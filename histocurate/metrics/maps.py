"""Instance label maps: validation, relabelling to contiguous ids, per-instance statistics.

An instance map is a 2-D integer array where 0 is background and every other value names
one nucleus. Ids need not be contiguous (a map cropped from a larger one keeps its ids);
the metrics relabel them to ``1..n`` once, so that every later step can use dense
``bincount`` tables instead of per-instance boolean masks (the reason they are fast).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from histocurate.errors import GeometryError, UserInputError


class MetricsInputError(UserInputError, ValueError):
    """Bad input to a metric (a map, a table, an option): the message says which and why.

    It is a `ValueError` for library callers and a `UserInputError` for the CLI (exit 2).
    """


@contextmanager
def as_metrics_error() -> Iterator[None]:
    """Report a bad geometry met by the shared rasteriser as a metrics input error."""
    try:
        yield
    except GeometryError as exc:
        raise MetricsInputError(str(exc)) from None


@dataclass(frozen=True, slots=True)
class ContiguousMap:
    """A map relabelled to ids ``1..n`` (0 = background) and the original id of each."""

    labels: NDArray[np.integer]
    ids: NDArray[np.int64]  # ids[k - 1] is the original id of contiguous id k

    @property
    def n(self) -> int:
        return int(self.ids.size)


def check_instance_map(values: object, *, name: str = "map") -> NDArray[np.integer]:
    """Return ``values`` as a 2-D integer array, or raise `MetricsInputError` saying why.

    Float and boolean maps are refused rather than cast: a float map is usually a
    probability map passed by mistake, and a boolean mask has no instances.
    """
    array = np.asarray(values)
    if array.ndim != 2:
        raise MetricsInputError(f"{name}: an instance map must be 2-D, got shape {array.shape}")
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise MetricsInputError(
            f"{name}: an instance map must have an integer dtype (0 = background, one id per "
            f"nucleus), got {array.dtype}; label a binary mask first (skimage.measure.label)"
        )
    if array.size and np.issubdtype(array.dtype, np.signedinteger) and array.min() < 0:
        raise MetricsInputError(
            f"{name}: instance ids must be >= 0 (0 = background), found {int(array.min())}"
        )
    return array


def check_same_shape(true: NDArray[np.integer], pred: NDArray[np.integer]) -> None:
    if true.shape != pred.shape:
        raise MetricsInputError(
            f"true and pred maps differ in shape: {true.shape} vs {pred.shape}; "
            "both must cover the same tile"
        )


def relabel_contiguous(array: NDArray[np.integer]) -> ContiguousMap:
    """Relabel the non-zero ids of ``array`` to ``1..n``, keeping their order.

    Uses a lookup table when the largest id is small compared with the map (the usual
    case, ~10x faster than sorting), and ``np.unique`` otherwise.
    """
    flat = array.ravel()
    top = int(flat.max()) if flat.size else 0
    if top <= 4 * flat.size + 1024:
        present = np.bincount(flat, minlength=top + 1).astype(bool)
        present[0] = False
        ids = np.flatnonzero(present).astype(np.int64)
        if ids.size == top:  # already 1..n: no copy through a lookup table
            return ContiguousMap(labels=array, ids=ids)
        lut = np.zeros(top + 1, dtype=np.int64)
        lut[ids] = np.arange(1, ids.size + 1)
        labels = lut[flat].reshape(array.shape)
    else:
        uniq, inverse = np.unique(flat, return_inverse=True)
        offset = 1 if uniq[0] != 0 else 0
        labels = (inverse.astype(np.int64) + offset).reshape(array.shape)
        ids = uniq[uniq != 0].astype(np.int64)
    return ContiguousMap(labels=labels, ids=ids)


def instance_centroids(labels: NDArray[np.integer], n: int) -> NDArray[np.float64]:
    """Centroid ``(x, y)`` of ids ``1..n`` in pixel-centre coordinates (NaN when absent).

    Pixel ``(row, col)`` has its centre at ``(col + 0.5, row + 0.5)``: the convention of
    the polygon tables (see `histocurate.metrics.rasterize`).
    """
    flat = labels.ravel()
    rows, cols = np.divmod(np.arange(flat.size), labels.shape[1])
    area = np.bincount(flat, minlength=n + 1)[1 : n + 1].astype(np.float64)
    sx = np.bincount(flat, weights=cols, minlength=n + 1)[1 : n + 1]
    sy = np.bincount(flat, weights=rows, minlength=n + 1)[1 : n + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack([sx / area + 0.5, sy / area + 0.5], axis=1)


@dataclass(frozen=True, slots=True)
class Overlaps:
    """Sparse overlap table of two contiguous maps: one entry per (true, pred) pair that
    share at least one pixel (indices are 0-based: contiguous id - 1)."""

    true_index: NDArray[np.int64]
    pred_index: NDArray[np.int64]
    intersection: NDArray[np.int64]
    union: NDArray[np.int64]
    true_area: NDArray[np.int64]
    pred_area: NDArray[np.int64]

    @property
    def iou(self) -> NDArray[np.float64]:
        return self.intersection / np.maximum(self.union, 1)


def overlaps(
    true: NDArray[np.integer], pred: NDArray[np.integer], n_true: int, n_pred: int
) -> Overlaps:
    """Intersections and unions of every overlapping pair, from one joint histogram."""
    t = true.ravel().astype(np.int64, copy=False)
    p = pred.ravel().astype(np.int64, copy=False)
    true_area = np.bincount(t, minlength=n_true + 1)[1:].astype(np.int64)
    pred_area = np.bincount(p, minlength=n_pred + 1)[1:].astype(np.int64)
    both = (t > 0) & (p > 0)
    key = (t[both] - 1) * n_pred + (p[both] - 1)
    if n_true * n_pred <= 4 * key.size + 65536:
        counts = np.bincount(key, minlength=n_true * n_pred)
        nz = np.flatnonzero(counts)
        inter = counts[nz].astype(np.int64)
    else:
        nz, inter = np.unique(key, return_counts=True)
    ti, pi = np.divmod(nz.astype(np.int64), max(n_pred, 1))
    union = true_area[ti] + pred_area[pi] - inter
    return Overlaps(ti, pi, inter, union, true_area, pred_area)
