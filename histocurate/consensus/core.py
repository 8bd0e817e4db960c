"""The pure core of consensus: annotated masks in, consensus nuclei (with labels) out.

No file, no image, no Prefect: `build_consensus` is a function of one DataFrame. The stage
(`histocurate.consensus.stage`) adds re-segmentation, tables and exports around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from data_schema.consensus import FATES
from histocurate.consensus.labels import (
    LABEL_RULES,
    DawidSkeneFit,
    dawid_skene,
    majority_label,
    proposed_labels,
)
from histocurate.consensus.matching import EXACT_LIMIT, match_masks
from histocurate.consensus.validate import prepare_masks
from histocurate.errors import UserInputError

LabelRule = Literal["majority", "dawid-skene"]

NUCLEI_COLUMNS = [
    "consensus_id", "tile_id", "x", "y", "label", "labels", "label_majority",
    "label_dawid_skene", "dawid_skene_probability", "label_rule", "annotators", "members",
    "member_labels", "n_annotators", "mean_iou", "geometry",
]  # fmt: skip
"""Columns of `consensus_nuclei`'s frame (``geometry``: the member mask with the highest
IoU to the other members, a shapely polygon, until the stage re-segments it)."""

_LABEL_COLUMNS = [
    "label", "labels", "label_majority", "label_dawid_skene", "dawid_skene_probability",
    "label_rule",
]  # fmt: skip

STATUSES = FATES  # declared once, with the fates table
"""Fate of each annotation: in a kept nucleus; in a nucleus with too few annotators; on a
tile that only one annotator annotated; or without a usable mask (never matched)."""


@dataclass(frozen=True, slots=True)
class ConsensusResult:
    """Everything consensus learns: the nuclei and what became of every annotation."""

    nuclei: pd.DataFrame  # NUCLEI_COLUMNS, one row per kept nucleus
    assignments: pd.DataFrame  # annotation_id, tile_id, annotator, label, consensus_id, status
    single_annotator_tiles: list[str]  # no consensus possible there (reported, not an error)
    n_repaired_masks: int
    dawid_skene: DawidSkeneFit | None


def consensus_nuclei(
    masks: pd.DataFrame,
    *,
    iou_threshold: float = 0.4,
    min_annotators: int = 2,
    label_rule: LabelRule = "majority",
) -> pd.DataFrame:
    """One row per consensus nucleus from one row per annotated nucleus.

    ``masks`` has tile_id, annotator, x, y (the click, tile pixels), label (ontology id or
    display name, ``unknown`` allowed), annotation_id (unique: integers from Cytomine or
    strings from other tools; ``consensus_id`` is the smallest member id) and geometry (shapely
    polygon or WKB; a ``polygon`` column is accepted too). Masks of different annotators
    are matched one-to-one when IoU > ``iou_threshold`` (rule: `histocurate.consensus.
    matching`); nuclei found by at least ``min_annotators`` annotators are kept. Labels:
    `histocurate.consensus.labels`; both rules are always computed, ``label`` follows
    ``label_rule``. See `build_consensus` for the per-annotation fates and the EM fit.
    """
    return build_consensus(
        masks, iou_threshold=iou_threshold, min_annotators=min_annotators, label_rule=label_rule
    ).nuclei


def build_consensus(
    masks: pd.DataFrame,
    *,
    iou_threshold: float = 0.4,
    min_annotators: int = 2,
    label_rule: LabelRule = "majority",
    exact_limit: int = EXACT_LIMIT,
) -> ConsensusResult:
    """`consensus_nuclei` plus the fate of every annotation and the Dawid-Skene fit."""
    if not 0.0 <= iou_threshold < 1.0:
        raise UserInputError(f"iou_threshold must be in [0, 1), got {iou_threshold}")
    if min_annotators < 1:
        raise UserInputError(f"min_annotators must be at least 1, got {min_annotators}")
    if label_rule not in LABEL_RULES:
        raise UserInputError(f"label rule {label_rule!r} unknown; use one of {LABEL_RULES}")
    prepared = prepare_masks(masks)
    frame, geoms = prepared.frame, prepared.geoms
    tile_code, _tiles = pd.factorize(frame["tile_id"], sort=True)
    annot_code, _ = pd.factorize(frame["annotator"], sort=True)
    matching = match_masks(
        tile_code, annot_code, geoms, iou_threshold=iou_threshold, exact_limit=exact_limit
    )
    group = matching.group

    # Per-mask sum of IoU to the other members of its group (picks the representative mask).
    within = matching.within_group_pairs()
    wi, wj, wiou = matching.pair_i[within], matching.pair_j[within], matching.pair_iou[within]
    n = len(frame)
    node_score = np.bincount(wi, wiou, minlength=n) + np.bincount(wj, wiou, minlength=n)
    pair_group = group[wi]
    iou_sum = np.bincount(pair_group, wiou, minlength=matching.n_groups)
    iou_count = np.bincount(pair_group, minlength=matching.n_groups)

    per_tile_annotators = frame.groupby("tile_id")["annotator"].nunique()
    single_tiles = sorted(per_tile_annotators.index[per_tile_annotators < 2].astype(str))

    nuclei, group_ids = _group_rows(frame, geoms, group, node_score, iou_sum, iou_count)
    keep = nuclei["n_annotators"].to_numpy() >= min_annotators
    status = np.full(n, "no_mask", dtype=object)
    has_group = group >= 0
    kept_group = np.zeros(matching.n_groups, dtype=bool)
    kept_group[group_ids[keep]] = True
    status[has_group] = np.where(kept_group[group[has_group]], "kept", "dropped")
    on_single = frame["tile_id"].isin(single_tiles).to_numpy()
    status[(status == "dropped") & on_single] = "single_annotator_tile"
    ids = frame["annotation_id"]
    cid = np.full(matching.n_groups, None, dtype=object)
    cid[group_ids] = nuclei["consensus_id"].to_numpy(dtype=object)
    member_of = np.where(has_group & (status == "kept"), cid[np.maximum(group, 0)], None)
    consensus_id = pd.Series(list(member_of), dtype="Int64" if ids.dtype == np.int64 else object)
    assignments = frame.assign(consensus_id=consensus_id, status=status)

    nuclei = nuclei.loc[keep].reset_index(drop=True)
    nuclei, fit = apply_labels(nuclei, label_rule=label_rule)
    return ConsensusResult(nuclei, assignments, single_tiles, prepared.n_repaired, fit)


def _group_rows(
    frame: pd.DataFrame,
    geoms: np.ndarray,
    group: np.ndarray,
    node_score: np.ndarray,
    iou_sum: np.ndarray,
    iou_count: np.ndarray,
) -> tuple[pd.DataFrame, np.ndarray]:
    """One row per group (all groups, before the min_annotators filter), and group ids."""
    rows = np.flatnonzero(group >= 0)
    annot = frame["annotator"].to_numpy(dtype=object)
    # Sort by group, then annotator, so list columns are aligned and annotators sorted.
    _, annot_rank = np.unique(annot, return_inverse=True)
    order = rows[np.lexsort((annot_rank[rows], group[rows]))]
    g_sorted = group[order]
    group_ids, starts = np.unique(g_sorted, return_index=True)
    counts = np.diff(np.append(starts, order.size))
    split = starts[1:]

    def lists(values: np.ndarray) -> list[list[Any]]:
        return [part.tolist() for part in np.split(values[order], split)]

    ids = frame["annotation_id"].to_numpy()
    if order.size == 0:
        empty = pd.DataFrame({c: pd.Series([], dtype=object) for c in NUCLEI_COLUMNS})
        return empty.drop(columns=_LABEL_COLUMNS), group_ids
    x = np.add.reduceat(frame["x"].to_numpy()[order], starts) / counts
    y = np.add.reduceat(frame["y"].to_numpy()[order], starts) / counts
    # Representative mask: highest IoU sum to the others; ties -> first annotator in order.
    best = np.lexsort((np.arange(order.size), -node_score[order], g_sorted))
    first_of_group = best[np.searchsorted(g_sorted[best], group_ids)]
    count = iou_count[group_ids]
    mean_iou = np.full(group_ids.size, np.nan)
    np.divide(iou_sum[group_ids], count, out=mean_iou, where=count > 0)
    member_labels = lists(frame["label"].to_numpy(dtype=object))
    nuclei = pd.DataFrame(
        {
            "consensus_id": _smallest(ids, order, starts),
            "tile_id": frame["tile_id"].to_numpy(dtype=object)[order][starts],
            "x": x,
            "y": y,
            "annotators": lists(annot),
            "members": lists(ids),
            "member_labels": member_labels,
            "n_annotators": counts.astype(np.int32),
            "mean_iou": mean_iou,
            "geometry": geoms[order][first_of_group],
        }
    )
    return nuclei, group_ids


def _smallest(ids: np.ndarray, order: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Smallest annotation id of each group (ids of any sortable type: ints, strings)."""
    codes, uniques = pd.factorize(ids, sort=True)
    return np.asarray(uniques)[np.minimum.reduceat(codes[order], starts)]


def apply_labels(
    nuclei: pd.DataFrame, *, label_rule: LabelRule = "majority"
) -> tuple[pd.DataFrame, DawidSkeneFit | None]:
    """(Re)compute the label columns from ``annotators`` and ``member_labels``.

    Dawid-Skene is fitted over all rows given (the campaign), so run this once on the
    merged table when consensus was computed in shards.
    """
    if label_rule not in LABEL_RULES:
        raise UserInputError(f"label rule {label_rule!r} unknown; use one of {LABEL_RULES}")
    nuclei = nuclei.copy()
    member_labels = nuclei["member_labels"].tolist()
    nuclei["labels"] = [proposed_labels(v) for v in member_labels]
    nuclei["label_majority"] = pd.Series(
        [majority_label(v) for v in member_labels], index=nuclei.index, dtype=object
    )
    fit: DawidSkeneFit | None = None
    if len(nuclei):
        votes = [
            list(zip(a, lab, strict=True))
            for a, lab in zip(nuclei["annotators"], member_labels, strict=True)
        ]
        fit = dawid_skene(votes)
        ds_label, prob = fit.labels()
        typed = np.array([any(v != "unknown" for v in labs) for labs in member_labels])
        nuclei["label_dawid_skene"] = pd.Series(
            [lab if t else None for lab, t in zip(ds_label, typed, strict=True)],
            index=nuclei.index,
            dtype=object,
        )
        nuclei["dawid_skene_probability"] = np.where(typed, prob, np.nan)
    else:
        nuclei["label_dawid_skene"] = pd.Series([], dtype=object)
        nuclei["dawid_skene_probability"] = pd.Series([], dtype=np.float64)
    source = "label_majority" if label_rule == "majority" else "label_dawid_skene"
    nuclei["label"] = nuclei[source]
    nuclei["label_rule"] = label_rule
    ordered = [c for c in NUCLEI_COLUMNS if c in nuclei.columns]
    return nuclei[ordered + [c for c in nuclei.columns if c not in ordered]], fit
