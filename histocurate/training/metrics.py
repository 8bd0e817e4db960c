"""The project's metrics for the training loop's validation (`ValidationMetrics`).

Per tile: binary panoptic quality (`histocurate.metrics.panoptic_quality`: IoU > 0.5
pairs) and the per-class counts of `histocurate.metrics.class_counts` over centroid pairs
within 12 px at 40x (scaled by the tile's mpp: 3 um), with the project's multi-label
rules (an undetermined nucleus counts through its label set when the run reads them,
for detection only otherwise). Summary:

- ``bpq``, ``dq``, ``sq``: means over tiles of the per-tile values (CellViT's bPQ, the
  early-stopping metric; tiles with nothing true nor predicted are left out);
- ``pq_pooled``, ``dq_pooled``, ``sq_pooled``: counts pooled over tiles (the evaluate
  stage's default);
- ``f1_detection`` (pooled centroid pairing), ``f1_<class>`` per class, ``mf1`` their mean
  over the classes present in the truth.

The model's channels 1..n are its classes; class_counts holds 13 slots, so up to 13 classes
are scored (beyond, NaN).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from histocurate.cellvit.targets import IGNORE_TYPE
from histocurate.cellvit.validate import ValTile
from histocurate.metrics import (
    CLASS_STATS,
    PanopticQuality,
    class_counts,
    classification_scores,
    pair_points,
    panoptic_quality,
    pooled,
    tile_mean,
)
from histocurate.metrics.classification import N_CLASSES
from histocurate.metrics.maps import instance_centroids, relabel_contiguous

RADIUS_40X_PX = 12.0
MPP_40X = 0.25


@dataclass(frozen=True)
class TileRecord:
    """What one validation tile leaves for the summary."""

    pq: PanopticQuality
    counts: np.ndarray  # (13, len(CLASS_STATS))
    pairs: int
    n_true: int
    n_pred: int


def true_sets(tile: ValTile, ids: np.ndarray, n_classes: int) -> np.ndarray:
    """Multi-hot (n, 13) label sets of the true nuclei ``ids`` (contiguous map values)."""
    n = len(ids)
    out = np.zeros((n, N_CLASSES), dtype=bool)
    if n == 0:
        return out
    inst = relabel_contiguous(tile.true_inst).labels
    flat = inst.ravel()
    size = n + 1
    # a nucleus has one type value; the max over its pixels reads it
    kind = np.zeros(size, dtype=np.int64)
    np.maximum.at(kind, flat, tile.true_types.ravel().astype(np.int64))
    bits = np.zeros(size, dtype=np.int64)
    if tile.true_sets is not None:
        np.bitwise_or.at(bits, flat, tile.true_sets.ravel().astype(np.int64))
    scored = min(n_classes, N_CLASSES)
    kind, bits = kind[1:], bits[1:]
    typed = np.flatnonzero((kind >= 1) & (kind <= scored))
    out[typed, kind[typed] - 1] = True
    open_ = kind == IGNORE_TYPE
    for c in range(1, scored + 1):
        out[:, c - 1] |= open_ & (((bits >> c) & 1) == 1)
    return out


class ProjectMetrics:
    """`ValidationMetrics` with the project's definitions (module docstring)."""

    def __init__(self, classes: Sequence[str]) -> None:
        self.classes = tuple(classes)

    def score_tile(self, tile: ValTile) -> TileRecord:
        pq = panoptic_quality(tile.true_inst, tile.pred_inst)
        contiguous = relabel_contiguous(tile.true_inst)
        n_true = contiguous.n
        true_xy = instance_centroids(contiguous.labels, n_true)
        cells = tile.cells
        pred_xy = cells[["x", "y"]].to_numpy(dtype=np.float64).reshape(-1, 2)
        kinds = cells["type"].to_numpy(dtype=np.int64)
        scored = min(len(self.classes), N_CLASSES)
        pred_class = np.where((kinds >= 1) & (kinds <= scored), kinds - 1, -1)
        radius = RADIUS_40X_PX * MPP_40X / tile.mpp
        pairs = pair_points(true_xy, pred_xy, radius=radius)
        sets = true_sets(tile, contiguous.ids, len(self.classes))
        counts = class_counts(sets, pred_class, pairs.true_index, pairs.pred_index)[0]
        return TileRecord(pq, counts, len(pairs), n_true, len(pred_xy))

    def summarise(self, records: Sequence[Any]) -> dict[str, float]:
        if not records:
            return {}
        means = tile_mean(r.pq for r in records)
        total = pooled(r.pq for r in records)
        pairs = sum(r.pairs for r in records)
        n_true = sum(r.n_true for r in records)
        n_pred = sum(r.n_pred for r in records)
        out = {
            "bpq": means["pq"],
            "dq": means["dq"],
            "sq": means["sq"],
            "pq_pooled": total.pq,
            "dq_pooled": total.dq,
            "sq_pooled": total.sq,
            "f1_detection": 2 * pairs / (n_true + n_pred) if n_true + n_pred else math.nan,
        }
        counts = np.sum([r.counts for r in records], axis=0)
        f1 = classification_scores(counts)["f1"]
        in_truth = counts[:, CLASS_STATS.index("n_true")] > 0
        present = []
        for k, name in enumerate(self.classes):
            value = float(f1[k]) if k < N_CLASSES else math.nan
            out[f"f1_{name}"] = value
            if k < N_CLASSES and in_truth[k] and math.isfinite(value):
                present.append(value)
        out["mf1"] = float(np.mean(present)) if present else math.nan
        return {k: float(v) for k, v in out.items()}
