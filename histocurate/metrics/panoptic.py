"""Panoptic quality (PQ = DQ x SQ) of nuclei instance maps, per tile and pooled.

Definitions (Kirillov et al.; binary: every nucleus is one class, as in the paper):
DQ = TP / (TP + FP/2 + FN/2), SQ = mean IoU of the true positives, PQ = DQ x SQ.

Conventions where the formulas are silent (documented once, here):
- Both maps empty (TP = FP = FN = 0): DQ, SQ and PQ are NaN ("nothing to compare"). Such
  a tile adds nothing to pooled counts and is skipped by the per-tile mean.
- No true positive but something to find or found: DQ = 0, SQ = 0, PQ = 0 (as HoVer-Net).
- Pooled (the CLI default): sum TP, FP, FN and the IoU of true positives over all tiles,
  then divide once. Unlike the mean of per-tile PQ (HoVer-Net's "binary PQ"), tiles weigh
  by their number of nuclei and a tile with few nuclei cannot swing the result.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from histocurate.metrics.maps import (
    MetricsInputError,
    check_instance_map,
    check_same_shape,
    instance_centroids,
    overlaps,
    relabel_contiguous,
)
from histocurate.metrics.pairing import assign_candidates


@dataclass(frozen=True, slots=True)
class PanopticQuality:
    """Detection and segmentation counts of one tile (or pooled over tiles)."""

    tp: int
    fp: int
    fn: int
    iou_sum: float

    @property
    def dq(self) -> float:
        denom = self.tp + 0.5 * self.fp + 0.5 * self.fn
        return math.nan if denom == 0 else self.tp / denom

    @property
    def sq(self) -> float:
        if self.tp == 0:
            return math.nan if self.fp == 0 and self.fn == 0 else 0.0
        return self.iou_sum / self.tp

    @property
    def pq(self) -> float:
        return self.dq * self.sq

    def __add__(self, other: PanopticQuality) -> PanopticQuality:
        return PanopticQuality(
            self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.iou_sum + other.iou_sum
        )


@dataclass(frozen=True, slots=True)
class InstanceMatch:
    """The accepted pairs of one tile, in the ids of the maps given.

    ``intersection`` and ``union`` are pixel counts, so IoU = intersection / union exactly.
    """

    true_ids: NDArray[np.int64]
    pred_ids: NDArray[np.int64]
    intersection: NDArray[np.int64]
    union: NDArray[np.int64]
    n_true: int
    n_pred: int

    @property
    def iou(self) -> NDArray[np.float64]:
        return self.intersection / np.maximum(self.union, 1)

    @property
    def counts(self) -> PanopticQuality:
        tp = int(self.true_ids.size)
        return PanopticQuality(tp, self.n_pred - tp, self.n_true - tp, float(self.iou.sum()))


def _check_threshold(iou_threshold: float) -> float:
    if not 0.0 <= iou_threshold < 1.0:
        raise MetricsInputError(f"iou_threshold must be in [0, 1), got {iou_threshold}")
    return float(iou_threshold)


def match_contiguous(
    true: NDArray[np.integer],
    pred: NDArray[np.integer],
    n_true: int,
    n_pred: int,
    *,
    iou_threshold: float = 0.5,
) -> InstanceMatch:
    """Pair two maps whose ids are ``1..n`` (some may have no pixel); ids are returned as is.

    The fast path of every metric: no validation, no relabelling. Candidates are the
    pairs with IoU > ``iou_threshold``; Hungarian assignment on centroid distance picks
    among them when a nucleus has several (see `histocurate.metrics.pairing`).
    """
    ov = overlaps(true, pred, n_true, n_pred)
    iou = ov.iou
    cand = np.flatnonzero(iou > iou_threshold)
    ti, pi = ov.true_index[cand], ov.pred_index[cand]
    if np.unique(ti).size < ti.size or np.unique(pi).size < pi.size:
        ct = instance_centroids(true, n_true)[ti]
        cp = instance_centroids(pred, n_pred)[pi]
        kept = cand[assign_candidates(ti, pi, np.hypot(*(ct - cp).T))]
    else:
        kept = cand
    return InstanceMatch(
        true_ids=ov.true_index[kept] + 1,
        pred_ids=ov.pred_index[kept] + 1,
        intersection=ov.intersection[kept],
        union=ov.union[kept],
        n_true=n_true,
        n_pred=n_pred,
    )


def match_instances(
    true: NDArray[np.integer], pred: NDArray[np.integer], *, iou_threshold: float = 0.5
) -> InstanceMatch:
    """Pair the nuclei of two instance maps (0 = background; any non-negative ids).

    Returns the pairs in the maps' own ids, with exact pixel intersections and unions.
    Raises `MetricsInputError` for maps of different shapes, float or negative maps.
    """
    t = check_instance_map(true, name="true")
    p = check_instance_map(pred, name="pred")
    check_same_shape(t, p)
    thr = _check_threshold(iou_threshold)
    tc, pc = relabel_contiguous(t), relabel_contiguous(p)
    m = match_contiguous(tc.labels, pc.labels, tc.n, pc.n, iou_threshold=thr)
    return InstanceMatch(
        true_ids=tc.ids[m.true_ids - 1],
        pred_ids=pc.ids[m.pred_ids - 1],
        intersection=m.intersection,
        union=m.union,
        n_true=tc.n,
        n_pred=pc.n,
    )


def panoptic_quality(
    true: NDArray[np.integer], pred: NDArray[np.integer], *, iou_threshold: float = 0.5
) -> PanopticQuality:
    """PQ, DQ and SQ of a predicted instance map against the true one (one tile).

    >>> t = np.zeros((4, 4), int); t[:2, :2] = 7
    >>> p = np.zeros((4, 4), int); p[:2, :3] = 3
    >>> r = panoptic_quality(t, p)
    >>> (r.tp, r.fp, r.fn, round(r.sq, 4), round(r.pq, 4))
    (1, 0, 0, 0.6667, 0.6667)
    """
    return match_instances(true, pred, iou_threshold=iou_threshold).counts


def panoptic_quality_polygons(
    true: Sequence[object],
    pred: Sequence[object],
    *,
    shape: tuple[int, int],
    iou_threshold: float = 0.5,
) -> PanopticQuality:
    """The same metric for two lists of polygons (shapely geometries or WKB) of one tile.

    The polygons are rasterised to instance maps of ``shape`` (a pixel belongs to a
    polygon when its centre lies inside; where polygons of one list overlap, the later
    one wins; parts outside the tile are clipped), then compared as maps.
    """
    from histocurate.geometry.raster import rasterize
    from histocurate.metrics.maps import as_metrics_error
    from histocurate.metrics.tables import as_geometries

    with as_metrics_error():
        tmap = rasterize(as_geometries(true, name="true"), shape=shape)
        pmap = rasterize(as_geometries(pred, name="pred"), shape=shape)
    m = match_contiguous(
        tmap, pmap, len(true), len(pred), iou_threshold=_check_threshold(iou_threshold)
    )
    return m.counts


def pooled(results: Iterable[PanopticQuality]) -> PanopticQuality:
    """Dataset-level counts: the sums of TP, FP, FN and IoU over tiles."""
    total = PanopticQuality(0, 0, 0, 0.0)
    for r in results:
        total = total + r
    return total


def tile_mean(results: Iterable[PanopticQuality]) -> dict[str, float]:
    """Mean of the per-tile DQ, SQ and PQ over the tiles where each is defined."""
    rows = np.array([[r.dq, r.sq, r.pq] for r in results], dtype=np.float64).reshape(-1, 3)
    with np.errstate(invalid="ignore"):
        means = [float(np.nanmean(c)) if np.isfinite(c).any() else math.nan for c in rows.T]
    return dict(zip(("dq", "sq", "pq"), means, strict=True))
