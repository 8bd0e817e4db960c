"""Per-class F1, precision and recall of nuclei types, with multi-label truth.

Counts per class c (HoVer-Net / CellViT notation). Among the *paired* nuclei (detection
true positives): TP_c, FP_c, FN_c, TN_c; among the *unpaired* ones: FP_d,c (predictions of
c with no true nucleus) and FN_d,c (true nuclei of c with no prediction). Scores, with
the CellViT weights w = (2, 2, 1, 1):

    F1_c        = 2 TP_c / (2 TP_c + w0 FP_c + w1 FN_c + w2 FP_d,c + w3 FN_d,c)
    precision_c =   TP_c / (  TP_c + w0 FP_c + w2 FP_d,c)
    recall_c    =   TP_c / (  TP_c + w1 FN_c + w3 FN_d,c)

HoVer-Net writes ``TP_c + TN_c`` in every numerator, but first keeps only the pairs where
the truth or the prediction is c, so its TN_c is always 0; we count TN_c (for the record)
but, to give the same numbers, it enters no score. F1 is the harmonic mean of the
precision and recall above. A score whose denominator is 0 (class absent from truth and
prediction) is NaN.

Multi-label truth. The paper's Methods define rules for nuclei whose consensus is a set
of labels ("Classification metrics in the case of multi-label annotation"); that text
could not be consulted while writing this, so the rules below are the natural reading,
chosen so that single-label truth gives exactly the HoVer-Net counts. A true nucleus has
a label set S (one label after a majority; several when the annotators disagreed; empty
when undetermined or 'unknown', which is not a class). For a pair (S, p):

- S empty: the pair counts for detection only (no class count), as HoVer-Net's ignored
  labels.
- p in S: correct. TP_p += 1. The other labels of S are acceptable alternatives, not
  misses: they get no count.
- p not in S (p a class): FP_p += 1, and FN_c += w for every c in S.
- p without a class (None / 'unknown'): FN_c += w for every c in S.
- TN_c += 1 for every c outside S with c != p (S non-empty, p a class).

A true nucleus left unpaired adds FN_d,c += w for every c in S; an unpaired prediction
of class p adds FP_d,p += 1. The weight w is 1 (``multilabel="each"``, default: every
class the annotators proposed counts the miss, as a single-label nucleus would) or 1/|S|
(``multilabel="split"``: one missed nucleus costs one FN in total, spread over S).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from histocurate.labels import ANNOTATION_LABELS, LABELS, UNKNOWN
from histocurate.metrics.maps import MetricsInputError

CLASS_STATS: tuple[str, ...] = ("tp", "fp", "fn", "tn", "fp_d", "fn_d", "n_true", "n_pred")
"""Columns of the per-class count arrays (last axis), in this order."""
N_CLASSES = len(LABELS)
HOVERNET_WEIGHTS: tuple[float, float, float, float] = (2.0, 2.0, 1.0, 1.0)
Multilabel = Literal["each", "split"]

_INDEX = {label: i for i, label in enumerate(LABELS)}
_ALLOWED = frozenset(ANNOTATION_LABELS)


def _clean(values: Sequence[object]) -> list[str | None]:
    """Labels as str or None (pandas gives NaN or pd.NA for missing values)."""
    return [
        v if isinstance(v, str) else None if v is None or v != v or v is pd.NA else str(v)
        for v in values
    ]


def _check_names(values: Sequence[str | None], *, origin: str) -> None:
    bad = [i for i, v in enumerate(values) if v is not None and v not in _ALLOWED]
    if bad:
        names = sorted({str(values[i]) for i in bad})
        raise MetricsInputError(
            f"{origin}: unknown cell type(s) {names[:5]} (first at row {bad[0]}, "
            f"{len(bad)} row(s)); expected label ids of histocurate.labels "
            f"({', '.join(ANNOTATION_LABELS)})"
        )


def encode_predictions(labels: Sequence[str | None], *, origin: str = "pred") -> NDArray[np.int64]:
    """Class index (0..12, ontology order) per predicted nucleus; -1 for None or 'unknown'."""
    labels = _clean(labels)
    _check_names(labels, origin=f"{origin}, column 'label'")
    return np.array(
        [-1 if v is None or v == UNKNOWN.id else _INDEX[v] for v in labels], dtype=np.int64
    )


def encode_label_sets(
    label: Sequence[str | None],
    labels: Sequence[Sequence[str] | None] | None = None,
    *,
    origin: str = "truth",
) -> NDArray[np.bool_]:
    """Multi-hot label sets ``(n, 13)`` of true nuclei.

    ``label`` wins when set; otherwise the set ``labels`` (consensus without majority).
    'unknown' is dropped from a set: it says a type was not recognised, not which.
    """
    label = _clean(label)
    out = np.zeros((len(label), N_CLASSES), dtype=bool)
    _check_names(label, origin=f"{origin}, column 'label'")
    for i, v in enumerate(label):
        if v is not None:
            if v != UNKNOWN.id:
                out[i, _INDEX[v]] = True
            continue
        proposed = labels[i] if labels is not None else None
        if proposed is None:
            continue
        names = list(proposed)
        _check_names(names, origin=f"{origin}, column 'labels' of row {i}")
        for name in names:
            if name != UNKNOWN.id:
                out[i, _INDEX[name]] = True
    return out


def _sum_rows(
    group: NDArray[np.int64], values: NDArray[np.float64], n_groups: int
) -> NDArray[np.float64]:
    """Sum the rows of ``values`` (k, 13) by ``group`` into (n_groups, 13)."""
    out = np.zeros((n_groups, values.shape[1]))
    if group.size:
        np.add.at(out, group, values)
    return out


def _one_hot(cls: NDArray[np.int64]) -> NDArray[np.float64]:
    out = np.zeros((cls.size, N_CLASSES))
    ok = cls >= 0
    out[np.flatnonzero(ok), cls[ok]] = 1.0
    return out


def class_counts(
    true_sets: NDArray[np.bool_],
    pred_class: NDArray[np.int64],
    pair_true: NDArray[np.int64],
    pair_pred: NDArray[np.int64],
    *,
    true_group: NDArray[np.int64] | None = None,
    pred_group: NDArray[np.int64] | None = None,
    n_groups: int = 1,
    multilabel: Multilabel = "each",
) -> NDArray[np.float64]:
    """Per-class counts ``(n_groups, 13, len(CLASS_STATS))`` under the rules of this module.

    ``pair_true[k], pair_pred[k]`` are row indices of paired nuclei; every other row is
    unpaired. ``true_group`` / ``pred_group`` give each row's group (its tile), so that
    one call counts a whole dataset tile by tile; a pair belongs to its true nucleus' tile.
    """
    if multilabel not in ("each", "split"):
        raise MetricsInputError(f"multilabel must be 'each' or 'split', got {multilabel!r}")
    sets = np.asarray(true_sets, dtype=bool).reshape(-1, N_CLASSES)
    pcls = np.asarray(pred_class, dtype=np.int64)
    n_t, n_p = sets.shape[0], pcls.size
    tg = np.zeros(n_t, np.int64) if true_group is None else np.asarray(true_group, np.int64)
    pg = np.zeros(n_p, np.int64) if pred_group is None else np.asarray(pred_group, np.int64)
    size = sets.sum(axis=1)
    typed = size > 0
    weight = np.ones(n_t) if multilabel == "each" else 1.0 / np.maximum(size, 1)
    wsets = sets * weight[:, None]

    pt, pp = np.asarray(pair_true, np.int64), np.asarray(pair_pred, np.int64)
    s, p, g = sets[pt], pcls[pp], tg[pt]
    has_p = p >= 0
    hit = np.zeros(pt.size, dtype=bool)
    hit[has_p] = s[np.flatnonzero(has_p), p[has_p]]
    onehot_p = _one_hot(p)
    counted = typed[pt]
    tp = _sum_rows(g, onehot_p * (hit & counted)[:, None], n_groups)
    fp = _sum_rows(g, onehot_p * (~hit & counted)[:, None], n_groups)
    fn = _sum_rows(g, wsets[pt] * (~hit)[:, None], n_groups)
    tn_rows = (~s) & (onehot_p == 0) & (counted & has_p)[:, None]
    tn = _sum_rows(g, tn_rows.astype(np.float64), n_groups)

    unpaired_t = np.ones(n_t, dtype=bool)
    unpaired_t[pt] = False
    unpaired_p = np.ones(n_p, dtype=bool)
    unpaired_p[pp] = False
    fn_d = _sum_rows(tg[unpaired_t], wsets[unpaired_t], n_groups)
    fp_d = _sum_rows(pg[unpaired_p], _one_hot(pcls[unpaired_p]), n_groups)
    n_true = _sum_rows(tg, sets.astype(np.float64), n_groups)
    n_pred = _sum_rows(pg, _one_hot(pcls), n_groups)
    return np.stack([tp, fp, fn, tn, fp_d, fn_d, n_true, n_pred], axis=-1)


def classification_scores(
    counts: NDArray[np.floating], *, weights: Sequence[float] = HOVERNET_WEIGHTS
) -> dict[str, NDArray[np.float64]]:
    """F1, precision and recall per class from counts ``(..., 13, len(CLASS_STATS))``.

    Vectorised over leading axes (tiles, bootstrap resamples). NaN where undefined.
    """
    w0, w1, w2, w3 = (float(v) for v in weights)
    c = np.asarray(counts, dtype=np.float64)
    tp, fp, fn, fp_d, fn_d = (
        c[..., CLASS_STATS.index(k)] for k in ("tp", "fp", "fn", "fp_d", "fn_d")
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * tp / (2 * tp + w0 * fp + w1 * fn + w2 * fp_d + w3 * fn_d)
        precision = tp / (tp + w0 * fp + w2 * fp_d)
        recall = tp / (tp + w1 * fn + w3 * fn_d)
    return {"f1": f1, "precision": precision, "recall": recall}
