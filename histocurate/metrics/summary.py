"""Metrics from pooled counts, vectorised over leading axes (tiles or bootstrap resamples)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from histocurate.metrics.classification import HOVERNET_WEIGHTS, classification_scores

SCALAR_METRICS: tuple[str, ...] = ("dq", "sq", "pq", "f1_mean")
CLASS_METRICS: tuple[str, ...] = ("f1", "precision", "recall")


def panoptic_from_counts(detection: NDArray[np.floating]) -> dict[str, NDArray[np.float64]]:
    """DQ, SQ, PQ from ``(..., [tp, fp, fn, iou_sum, ...])`` with the conventions of
    `histocurate.metrics.panoptic` (NaN when there is nothing on either side; SQ = 0 when
    there is no true positive but something to find or found)."""
    d = np.asarray(detection, dtype=np.float64)
    tp, fp, fn, iou = d[..., 0], d[..., 1], d[..., 2], d[..., 3]
    nothing = (tp + fp + fn) == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        dq = np.where(nothing, np.nan, tp / (tp + 0.5 * fp + 0.5 * fn))
        sq = np.where(nothing, np.nan, np.where(tp > 0, iou / np.where(tp > 0, tp, 1), 0.0))
    return {"dq": dq, "sq": sq, "pq": dq * sq}


def summarise(
    detection: NDArray[np.floating],
    classes: NDArray[np.floating],
    *,
    weights: Sequence[float] = HOVERNET_WEIGHTS,
    class_mask: NDArray[np.bool_] | None = None,
    with_iou: bool = True,
) -> dict[str, NDArray[np.float64]]:
    """Every reported metric from pooled counts.

    ``f1_mean`` is the mean per-class F1 over the classes of ``class_mask`` (by default,
    those with at least one true nucleus here), ignoring classes undefined in a resample.
    Without IoU (point matching), SQ and PQ are NaN.
    """
    out = panoptic_from_counts(detection)
    if not with_iou:
        out["sq"] = np.full_like(out["sq"], np.nan)
        out["pq"] = np.full_like(out["pq"], np.nan)
    scores = classification_scores(classes, weights=weights)
    out.update(scores)
    mask = class_mask
    if mask is None:
        mask = np.asarray(classes)[..., 6].reshape(-1, classes.shape[-2]).sum(axis=0) > 0
    f1 = scores["f1"][..., mask]
    finite = np.isfinite(f1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["f1_mean"] = np.where(finite, f1, 0.0).sum(axis=-1) / finite.sum(axis=-1)
    return out
