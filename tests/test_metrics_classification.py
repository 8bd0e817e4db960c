"""Per-class counts and scores: HoVer-Net equivalence and the multi-label rules, case by case."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from histocurate.labels import LABELS
from histocurate.metrics import (
    CLASS_STATS,
    MetricsInputError,
    class_counts,
    classification_scores,
    encode_label_sets,
    encode_predictions,
)

A, B, C = "lymphocyte", "plasmocyte", "macrophage"
IA, IB, IC = LABELS.index(A), LABELS.index(B), LABELS.index(C)


def counts_for(truth, pred, pairs, *, multilabel="each"):  # type: ignore[no-untyped-def]
    """Counts of one tile; ``truth`` items are a label or a list of labels (a set)."""
    label = [t if isinstance(t, str) or t is None else None for t in truth]
    labels = [t if isinstance(t, list) else None for t in truth]
    sets = encode_label_sets(label, labels)
    pcls = encode_predictions(pred)
    pt = np.array([i for i, _ in pairs], dtype=np.int64)
    pp = np.array([j for _, j in pairs], dtype=np.int64)
    out = class_counts(sets, pcls, pt, pp, multilabel=multilabel)[0]
    return {k: out[:, i] for i, k in enumerate(CLASS_STATS)}


def nonzero(counts, key):  # type: ignore[no-untyped-def]
    return {LABELS[i]: float(v) for i, v in enumerate(counts[key]) if v}


def test_single_label_correct_and_wrong() -> None:
    c = counts_for([A, A], [A, B], [(0, 0), (1, 1)])
    assert nonzero(c, "tp") == {A: 1.0}
    assert nonzero(c, "fp") == {B: 1.0}
    assert nonzero(c, "fn") == {A: 1.0}
    # TN: paired, typed nuclei where neither the truth nor the prediction is the class.
    assert c["tn"][IC] == 2 and c["tn"][IA] == 0 and c["tn"][IB] == 1


def test_multilabel_prediction_in_set_is_correct_and_no_miss() -> None:
    c = counts_for([[A, B]], [B], [(0, 0)])
    assert nonzero(c, "tp") == {B: 1.0}
    assert nonzero(c, "fp") == {} and nonzero(c, "fn") == {}
    assert c["tn"][IA] == 0 and c["tn"][IC] == 1  # A is an accepted alternative, not a TN


@pytest.mark.parametrize(("mode", "w"), [("each", 1.0), ("split", 0.5)])
def test_multilabel_prediction_outside_set(mode: str, w: float) -> None:
    c = counts_for([[A, B]], [C], [(0, 0)], multilabel=mode)
    assert nonzero(c, "tp") == {}
    assert nonzero(c, "fp") == {C: 1.0}
    assert nonzero(c, "fn") == {A: w, B: w}


@pytest.mark.parametrize(("mode", "w"), [("each", 1.0), ("split", 0.5)])
def test_multilabel_unpaired_truth_and_untyped_prediction(mode: str, w: float) -> None:
    c = counts_for([[A, B], [A, B]], [None, C], [(0, 0)], multilabel=mode)
    assert nonzero(c, "fn") == {A: w, B: w}  # paired with a prediction without a type
    assert nonzero(c, "fn_d") == {A: w, B: w}  # the unpaired true nucleus
    assert nonzero(c, "fp_d") == {C: 1.0}  # the unpaired prediction
    assert nonzero(c, "n_true") == {A: 2.0, B: 2.0}
    assert nonzero(c, "n_pred") == {C: 1.0}


def test_untyped_truth_counts_for_detection_only() -> None:
    c = counts_for([None, "unknown", ["unknown"]], [A, B, C], [(0, 0), (1, 1), (2, 2)])
    for key in ("tp", "fp", "fn", "tn", "fp_d", "fn_d", "n_true"):
        assert nonzero(c, key) == {}
    assert nonzero(c, "n_pred") == {A: 1.0, B: 1.0, C: 1.0}


def test_label_wins_over_labels_and_unknown_is_dropped() -> None:
    sets = encode_label_sets([A, None, None], [[A, B], [B, "unknown"], None])
    assert [set(np.flatnonzero(r)) for r in sets] == [{IA}, {IB}, set()]


def test_unknown_cell_type_is_reported_with_row() -> None:
    with pytest.raises(MetricsInputError, match=r"'monocyte'.*row 1"):
        encode_predictions([A, "monocyte"], origin="p.parquet")
    with pytest.raises(MetricsInputError, match="column 'labels' of row 0"):
        encode_label_sets([None], [[A, "Lymphocyte"]])


def test_scores_exact() -> None:
    counts = np.zeros((len(LABELS), len(CLASS_STATS)))
    counts[IA, :6] = [3, 1, 1, 0, 2, 0]  # tp, fp, fn, tn, fp_d, fn_d
    s = classification_scores(counts)
    assert Fraction(s["f1"][IA]).limit_denominator(1000) == Fraction(6, 12)
    assert Fraction(s["precision"][IA]).limit_denominator(1000) == Fraction(3, 7)
    assert Fraction(s["recall"][IA]).limit_denominator(1000) == Fraction(3, 5)
    assert np.isnan(s["f1"][IB])  # absent everywhere
    plain = classification_scores(counts, weights=(1, 1, 1, 1))
    assert plain["f1"][IA] == pytest.approx(6 / 10)


def hovernet_f1(paired_true, paired_pred, unpaired_true, unpaired_pred, type_id, w):  # type: ignore[no-untyped-def]
    """HoVer-Net's per-type F1 (compute_stats.py), reimplemented for the comparison."""
    keep = (paired_true == type_id) | (paired_pred == type_id)
    pt, pp = paired_true[keep], paired_pred[keep]
    tp = ((pt == type_id) & (pp == type_id)).sum()
    tn = ((pt != type_id) & (pp != type_id)).sum()
    fp = ((pt != type_id) & (pp == type_id)).sum()
    fn = ((pt == type_id) & (pp != type_id)).sum()
    fp_d = (unpaired_pred == type_id).sum()
    fn_d = (unpaired_true == type_id).sum()
    denom = 2 * (tp + tn) + w[0] * fp + w[1] * fn + w[2] * fp_d + w[3] * fn_d
    return np.nan if denom == 0 else 2 * (tp + tn) / denom


def test_single_label_truth_gives_hovernet_f1() -> None:
    rng = np.random.default_rng(7)
    n_t, n_p = 300, 280
    tcls = rng.integers(0, 5, n_t)
    pcls = np.where(rng.random(n_p) < 0.7, rng.integers(0, 5, n_p), rng.integers(0, 13, n_p))
    pairs_t = rng.permutation(n_t)[:200]
    pairs_p = rng.permutation(n_p)[:200]
    sets = np.zeros((n_t, len(LABELS)), bool)
    sets[np.arange(n_t), tcls] = True
    counts = class_counts(sets, pcls, pairs_t, pairs_p)[0]
    ours = classification_scores(counts)["f1"]
    un_t = np.setdiff1d(np.arange(n_t), pairs_t)
    un_p = np.setdiff1d(np.arange(n_p), pairs_p)
    for c in range(len(LABELS)):
        ref = hovernet_f1(tcls[pairs_t], pcls[pairs_p], tcls[un_t], pcls[un_p], c, (2, 2, 1, 1))
        assert ours[c] == pytest.approx(ref, nan_ok=True)


def test_groups_sum_to_the_whole() -> None:
    rng = np.random.default_rng(1)
    sets = rng.random((50, len(LABELS))) < 0.1
    pcls = rng.integers(-1, 13, 40)
    pt, pp = np.arange(30), rng.permutation(40)[:30]
    tg, pg = rng.integers(0, 4, 50), rng.integers(0, 4, 40)
    pg[pp] = tg[pt]  # a pair lies on one tile
    by_tile = class_counts(sets, pcls, pt, pp, true_group=tg, pred_group=pg, n_groups=4)
    whole = class_counts(sets, pcls, pt, pp)
    assert np.allclose(by_tile.sum(axis=0), whole[0])
