"""Evaluate one or two predictions against a truth: the numbers of `histocurate evaluate`.

Reported by default: pooled metrics (counts summed over tiles, then divided), with 95%
percentile intervals from 1,000 bootstrap resamples of tiles, and for two predictions the
paired difference (second - first) with its two-sided bootstrap p-value. ``aggregate=
"tile_mean"`` reports the mean of per-tile DQ/SQ/PQ instead (per-class scores stay pooled:
most tiles lack most classes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
import shapely
from numpy.typing import NDArray

from histocurate.labels import LABELS
from histocurate.metrics.bootstrap import (
    paired_p_value,
    percentile_interval,
    resample_sums,
    resample_weights,
)
from histocurate.metrics.classification import HOVERNET_WEIGHTS, Multilabel
from histocurate.metrics.maps import MetricsInputError
from histocurate.metrics.summary import (
    CLASS_METRICS,
    SCALAR_METRICS,
    panoptic_from_counts,
    summarise,
)
from histocurate.metrics.tables import Instances
from histocurate.metrics.tiles import DETECTION_STATS, Mode, TileCounts, count_tiles

ExtraTiles = Literal["error", "drop", "empty"]
Aggregate = Literal["pooled", "tile_mean"]
Match = Literal["auto", "masks", "points"]


@dataclass(frozen=True, kw_only=True)
class EvaluationOptions:
    """How to pair, count and resample (defaults: the paper's)."""

    iou_threshold: float = 0.5
    radius: float = 12.0  # px, point matching only (12 at 40x, 6 at 20x)
    tile_size: int | None = None  # px; None: inferred from the polygons' extent
    n_boot: int = 1000
    seed: int | None = 0
    confidence: float = 0.95
    weights: tuple[float, float, float, float] = HOVERNET_WEIGHTS
    multilabel: Multilabel = "each"
    extra_tiles: ExtraTiles = "error"
    aggregate: Aggregate = "pooled"
    match: Match = "auto"


@dataclass(frozen=True)
class Evaluation:
    """The result: the long `evaluation` table, per-tile counts, and notes for the user."""

    table: pd.DataFrame
    per_tile: pd.DataFrame
    names: tuple[str, ...]
    mode: Mode
    tile_size: int | None
    n_tiles: int
    notes: tuple[str, ...] = field(default_factory=tuple)


def _extra_tile_policy(
    truth_tiles: set[str],
    preds: Sequence[tuple[str, Instances]],
    policy: ExtraTiles,
    notes: list[str],
) -> tuple[list[tuple[str, Instances]], list[str]]:
    kept, added = [], set()
    for name, inst in preds:
        extra = sorted(set(inst.tile_id.tolist()) - truth_tiles)
        if extra:
            shown = ", ".join(extra[:5]) + (" ..." if len(extra) > 5 else "")
            what = f"{len(extra)} tile(s) of {inst.origin} have no nucleus in the truth ({shown})"
            if policy == "error":
                raise MetricsInputError(
                    f"{what}; evaluate only tiles the truth covers (--extra-tiles drop), or count "
                    "them as tiles without true nuclei (--extra-tiles empty)"
                )
            if policy == "drop":
                inst = inst.subset(~np.isin(inst.tile_id, extra))
                notes.append(f"{what}: left out")
            else:
                added.update(extra)
                notes.append(f"{what}: counted as tiles without true nuclei")
        kept.append((name, inst))
    return kept, sorted(added)


def _infer_tile_size(tables: Sequence[Instances]) -> int:
    top = 0.0
    for inst in tables:
        if inst.geometry is not None and inst.geometry.size:
            bounds = shapely.bounds(inst.geometry)
            top = max(top, float(np.nanmax(bounds[:, 2:])))
    return max(1, math.ceil(top))


def _choose_mode(truth: Instances, preds: Sequence[tuple[str, Instances]], match: Match) -> Mode:
    has_masks = truth.geometry is not None and all(p.geometry is not None for _, p in preds)
    if match == "masks" and not has_masks:
        raise MetricsInputError(
            "mask matching needs a polygon on every row of the truth and the predictions; "
            "use point matching (--match points) for tables without polygons"
        )
    if match == "points" or not has_masks:
        return "points"
    return "masks"


def _metric_samples(
    counts: TileCounts, w: NDArray[np.float64], options: EvaluationOptions, mask: NDArray[np.bool_]
) -> tuple[dict[str, NDArray[np.float64]], dict[str, NDArray[np.float64]]]:
    """Point values and resampled values of every metric of one prediction."""
    with_iou = counts.mode == "masks"
    point = summarise(
        counts.detection.sum(0),
        counts.classes.sum(0),
        weights=options.weights,
        class_mask=mask,
        with_iou=with_iou,
    )
    boot = summarise(
        resample_sums(w, counts.detection),
        resample_sums(w, counts.classes),
        weights=options.weights,
        class_mask=mask,
        with_iou=with_iou,
    )
    if options.aggregate == "tile_mean":
        per_tile = panoptic_from_counts(counts.detection)
        for key in ("dq", "sq", "pq"):
            values = (
                per_tile[key] if with_iou or key == "dq" else np.full(len(counts.tiles), np.nan)
            )
            ok = np.isfinite(values)
            with np.errstate(invalid="ignore", divide="ignore"):
                point[key] = np.asarray(values[ok].mean() if ok.any() else np.nan)
                boot[key] = (w @ np.where(ok, values, 0.0)) / (w @ ok.astype(np.float64))
    return point, boot


def _rows(
    name: str,
    kind: str,
    point: dict[str, NDArray[np.float64]],
    boot: dict[str, NDArray[np.float64]],
    support: dict[str | None, int],
    options: EvaluationOptions,
    n_tiles: int,
    p_values: bool = False,
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    keys: list[tuple[str, str | None, int | None]] = [(m, None, None) for m in SCALAR_METRICS]
    keys += [(m, LABELS[c], c) for c in range(len(LABELS)) for m in CLASS_METRICS]
    for metric, cell_type, c in keys:
        value = point[metric] if c is None else point[metric][..., c]
        samples = boot[metric] if c is None else boot[metric][:, c]
        if samples.shape[0]:
            ci = percentile_interval(samples, confidence=options.confidence)
            low, high = float(ci.low), float(ci.high)
        else:
            low = high = math.nan
        rows.append(
            {
                "prediction": name,
                "kind": kind,
                "metric": metric,
                "cell_type": cell_type,
                "value": float(value),
                "ci_low": low,
                "ci_high": high,
                "p_value": float(paired_p_value(samples))
                if p_values and samples.shape[0]
                else None,
                "support": int(support[cell_type]),
                "n_tiles": n_tiles,
                "n_boot": int(samples.shape[0]),
                "confidence": options.confidence,
                "aggregate": options.aggregate,
            }
        )
    return rows


def evaluate(
    truth: Instances,
    predictions: Sequence[tuple[str, Instances]],
    *,
    options: EvaluationOptions | None = None,
) -> Evaluation:
    """Evaluate one or two named predictions against ``truth`` on the truth's tiles."""
    opts = options or EvaluationOptions()
    if not 1 <= len(predictions) <= 2:
        raise MetricsInputError(f"evaluate takes one or two predictions, got {len(predictions)}")
    if len({n for n, _ in predictions}) != len(predictions):
        raise MetricsInputError("the two predictions need different names")
    if len(truth) == 0:
        raise MetricsInputError(f"{truth.origin}: the truth has no nucleus; nothing to evaluate")
    notes: list[str] = []
    truth_tiles = set(truth.tile_id.tolist())
    preds, added = _extra_tile_policy(truth_tiles, predictions, opts.extra_tiles, notes)
    tiles = sorted(truth_tiles) + added
    mode = _choose_mode(truth, preds, opts.match)
    tile_size = None
    if mode == "masks":
        tile_size = opts.tile_size or _infer_tile_size([truth])
        if opts.tile_size is None:
            notes.append(f"tile size inferred from the true polygons: {tile_size} px")
    elif opts.match != "points":
        notes.append("some table has no polygons: nuclei paired by centroid distance only")
    counts = [
        count_tiles(
            truth,
            inst,
            tiles=tiles,
            mode=mode,
            tile_size=tile_size,
            iou_threshold=opts.iou_threshold,
            radius=opts.radius,
            multilabel=opts.multilabel,
        )
        for _, inst in preds
    ]
    for (_, inst), c in zip(preds, counts, strict=True):
        empty = int((c.detection[:, 5] == 0).sum())
        if empty:
            notes.append(f"{empty} of {len(tiles)} tile(s) have no nucleus in {inst.origin}")
    n_true = counts[0].classes[..., 6].sum(axis=0)
    mask = n_true > 0
    support: dict[str | None, int] = {None: int(counts[0].detection[:, 4].sum())}
    support.update({label: int(n_true[i]) for i, label in enumerate(LABELS)})
    w = resample_weights(len(tiles), opts.n_boot, seed=opts.seed)
    results = [_metric_samples(c, w, opts, mask) for c in counts]
    rows = []
    for (name, _), (point, boot) in zip(preds, results, strict=True):
        rows += _rows(name, "value", point, boot, support, opts, len(tiles))
    if len(results) == 2:
        (p1, b1), (p2, b2) = results
        diff_point = {k: p2[k] - p1[k] for k in p1}
        diff_boot = {k: b2[k] - b1[k] for k in b1}
        label = f"{preds[1][0]} - {preds[0][0]}"
        rows += _rows(label, "difference", diff_point, diff_boot, support, opts, len(tiles), True)
    per_tile = _per_tile_frame(preds, counts)
    names = tuple(n for n, _ in preds)
    return Evaluation(
        pd.DataFrame(rows), per_tile, names, mode, tile_size, len(tiles), tuple(notes)
    )


def _per_tile_frame(
    preds: Sequence[tuple[str, Instances]], counts: Sequence[TileCounts]
) -> pd.DataFrame:
    frames = []
    for (name, _), c in zip(preds, counts, strict=True):
        frame = pd.DataFrame(c.detection, columns=list(DETECTION_STATS))
        for key, values in panoptic_from_counts(c.detection).items():
            frame[key] = values
        frame.insert(0, "tile_id", list(c.tiles))
        frame.insert(1, "prediction", name)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
