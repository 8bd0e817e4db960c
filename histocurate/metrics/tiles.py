"""Per-tile sufficient statistics of a prediction against the truth, for a whole dataset.

Everything reported (pooled DQ/SQ/PQ, per-class F1, their bootstrap intervals) is a
function of these counts summed over tiles, so they are computed once, tile by tile, and
all later steps are array arithmetic on them.

Pairing: with polygons on both sides ("masks"), each tile's polygons are rasterised to
two instance maps and paired as by `panoptic_quality` (IoU > threshold); classification
uses the same pairs. With points only ("points"), centroids are paired within a radius
(12 px at 40x) and only detection and classification counts exist (no IoU: SQ and PQ are
NaN; DQ is then the detection F1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from histocurate.geometry.raster import Spans, area_priority, paint, polygon_spans
from histocurate.metrics.classification import (
    Multilabel,
    class_counts,
    encode_label_sets,
    encode_predictions,
)
from histocurate.metrics.maps import MetricsInputError, as_metrics_error
from histocurate.metrics.pairing import pair_points
from histocurate.metrics.panoptic import match_contiguous
from histocurate.metrics.tables import Instances

DETECTION_STATS: tuple[str, ...] = ("tp", "fp", "fn", "iou_sum", "n_true", "n_pred")
Mode = Literal["masks", "points"]


@dataclass(frozen=True, slots=True)
class TileCounts:
    """Counts per tile: ``detection (n_tiles, 6)`` and ``classes (n_tiles, 13, 8)``."""

    tiles: tuple[str, ...]
    detection: NDArray[np.float64]
    classes: NDArray[np.float64]
    mode: Mode


def _tile_codes(
    tile_id: NDArray[np.object_], index: dict[str, int], origin: str
) -> NDArray[np.int64]:
    try:
        return np.fromiter((index[t] for t in tile_id), dtype=np.int64, count=tile_id.size)
    except KeyError as exc:  # callers drop or add extra tiles first; this is a safeguard
        raise MetricsInputError(
            f"{origin}: tile {exc.args[0]!r} is not among the evaluated tiles"
        ) from None


def _local_ids(
    codes: NDArray[np.int64], n_tiles: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """1-based id of each row within its tile (file order) and the row count per tile."""
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes, minlength=n_tiles)
    starts = np.cumsum(counts) - counts
    local = np.empty(codes.size, dtype=np.int64)
    local[order] = np.arange(codes.size) - np.repeat(starts, counts) + 1
    return local, counts


def _spans_by_tile(
    spans: Spans, codes: NDArray[np.int64], n_tiles: int
) -> tuple[Spans, NDArray[np.int64]]:
    tile = codes[spans.owner]
    order = np.argsort(tile, kind="stable")
    bounds = np.searchsorted(tile[order], np.arange(n_tiles + 1))
    s = Spans(spans.owner[order], spans.row[order], spans.start[order], spans.stop[order])
    return s, bounds


def _slice(spans: Spans, lo: int, hi: int) -> Spans:
    return Spans(spans.owner[lo:hi], spans.row[lo:hi], spans.start[lo:hi], spans.stop[lo:hi])


def _paint(
    buf: NDArray[np.int32], spans: Spans, local: NDArray[np.int64], priority: NDArray[np.int64]
) -> None:
    """Paint one tile's polygons by their local ids (contested pixels: the smallest's)."""
    if spans.owner.size:
        owners = np.unique(spans.owner)
        paint(
            Spans(np.searchsorted(owners, spans.owner), spans.row, spans.start, spans.stop),
            shape=(int(buf.shape[0]), int(buf.shape[1])),
            values=local[owners],
            priority=priority[owners],
            out=buf,
        )


def _rows_by_tile(codes: NDArray[np.int64], n_tiles: int) -> list[NDArray[np.int64]]:
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(n_tiles + 1))
    return [order[bounds[k] : bounds[k + 1]] for k in range(n_tiles)]


def count_tiles(
    truth: Instances,
    pred: Instances,
    *,
    tiles: Sequence[str],
    mode: Mode,
    tile_size: int | None = None,
    iou_threshold: float = 0.5,
    radius: float = 12.0,
    multilabel: Multilabel = "each",
) -> TileCounts:
    """Counts of ``pred`` against ``truth`` on every tile of ``tiles`` (in that order).

    Every row of both tables must lie on one of ``tiles``; a tile with no row on one side
    simply has no nucleus there (all FN, or all FP).
    """
    n_tiles = len(tiles)
    index = {t: k for k, t in enumerate(tiles)}
    tcode = _tile_codes(truth.tile_id, index, truth.origin)
    pcode = _tile_codes(pred.tile_id, index, pred.origin)
    true_sets = encode_label_sets(truth.label, truth.labels, origin=truth.origin)
    pred_cls = encode_predictions(pred.label, origin=pred.origin)
    det = np.zeros((n_tiles, len(DETECTION_STATS)))
    det[:, 4] = np.bincount(tcode, minlength=n_tiles)
    det[:, 5] = np.bincount(pcode, minlength=n_tiles)
    pair_t: list[NDArray[np.int64]] = []
    pair_p: list[NDArray[np.int64]] = []

    if mode == "masks":
        if truth.geometry is None or pred.geometry is None or tile_size is None:
            raise MetricsInputError("mask evaluation needs polygons in both tables and a tile size")
        shape = (int(tile_size), int(tile_size))
        t_local, t_n = _local_ids(tcode, n_tiles)
        p_local, p_n = _local_ids(pcode, n_tiles)
        t_rows = _rows_by_tile(tcode, n_tiles)
        p_rows = _rows_by_tile(pcode, n_tiles)
        with as_metrics_error():
            t_all = polygon_spans(truth.geometry, shape=shape, name=truth.origin)
            p_all = polygon_spans(pred.geometry, shape=shape, name=pred.origin)
        t_spans, t_bounds = _spans_by_tile(t_all, tcode, n_tiles)
        p_spans, p_bounds = _spans_by_tile(p_all, pcode, n_tiles)
        t_priority, p_priority = area_priority(truth.geometry), area_priority(pred.geometry)
        tbuf = np.zeros(shape, dtype=np.int32)
        pbuf = np.zeros(shape, dtype=np.int32)
        for k in range(n_tiles):
            tbuf.fill(0)
            pbuf.fill(0)
            _paint(tbuf, _slice(t_spans, t_bounds[k], t_bounds[k + 1]), t_local, t_priority)
            _paint(pbuf, _slice(p_spans, p_bounds[k], p_bounds[k + 1]), p_local, p_priority)
            m = match_contiguous(tbuf, pbuf, int(t_n[k]), int(p_n[k]), iou_threshold=iou_threshold)
            det[k, 0] = m.true_ids.size
            det[k, 3] = float(m.iou.sum())
            pair_t.append(t_rows[k][m.true_ids - 1])
            pair_p.append(p_rows[k][m.pred_ids - 1])
    else:
        if truth.xy is None or pred.xy is None:
            raise MetricsInputError(
                "point evaluation needs positions (x, y or polygons) in both tables"
            )
        t_rows = _rows_by_tile(tcode, n_tiles)
        p_rows = _rows_by_tile(pcode, n_tiles)
        for k in range(n_tiles):
            pairs = pair_points(truth.xy[t_rows[k]], pred.xy[p_rows[k]], radius=radius)
            det[k, 0] = len(pairs)
            pair_t.append(t_rows[k][pairs.true_index])
            pair_p.append(p_rows[k][pairs.pred_index])
    det[:, 1] = det[:, 5] - det[:, 0]
    det[:, 2] = det[:, 4] - det[:, 0]
    empty = np.zeros(0, dtype=np.int64)
    classes = class_counts(
        true_sets,
        pred_cls,
        np.concatenate(pair_t) if pair_t else empty,
        np.concatenate(pair_p) if pair_p else empty,
        true_group=tcode,
        pred_group=pcode,
        n_groups=n_tiles,
        multilabel=multilabel,
    )
    return TileCounts(tuple(tiles), det, classes, mode)
