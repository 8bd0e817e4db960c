"""Presence models: the estimator, scalers, labels, and cohort-grouped nested CV."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from histocurate.errors import UserInputError
from histocurate.selection.cv import (
    FitParams,
    PresenceData,
    balanced_accuracy,
    choose_models,
    grouped_splits,
    nested_summary,
)
from histocurate.selection.presence import PresenceMLP, make_candidates, presence_labels
from histocurate.selection.scalers import GroupMoments, ZScaler, moments_of

FAST = FitParams(epochs=8, learning_rate=1e-2, members=2)


def _separable(n: int = 400, dim: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, dim)).astype(np.float32)
    y = np.column_stack([X[:, 0] > 1.0, X[:, 1] + X[:, 2] > 1.5])
    return X, y


def test_presence_mlp_is_a_balanced_sklearn_classifier() -> None:
    X, y = _separable()
    model = PresenceMLP((16,), n_members=3, epochs=30, learning_rate=1e-2).fit(X, y)
    assert model.predict_proba(X).shape == (len(X), 2)
    assert model.member_proba(X).shape == (3, len(X), 2)
    balanced = model.member_proba(X, balanced=True).mean(axis=0)
    assert (balanced_accuracy(y, balanced) > 0.85).all()  # rare positives found
    assert (balanced_accuracy(y, model.predict(X)) > 0.85).all()  # predict: balanced decision
    # predict_proba is P(presence) at the training prevalence (prior shift), not the balanced
    # score: on average it matches the prevalence, the balanced score is higher
    p = model.predict_proba(X)
    assert np.allclose(p.mean(axis=0), y.mean(axis=0), atol=0.06)
    assert (balanced.mean(axis=0) > p.mean(axis=0) + 0.05).all()
    shift = model.member_logits(X, balanced=True) - model.member_logits(X)
    prior = np.log(model.prevalence_ / (1 - model.prevalence_))
    np.testing.assert_allclose(shift, np.broadcast_to(-prior, shift.shape), atol=1e-4)
    again = clone(model).fit(X, y)
    np.testing.assert_array_equal(again.member_proba(X), model.member_proba(X))
    single = PresenceMLP((8, 4), epochs=10).fit(X, y[:, 0])
    proba = single.predict_proba(X)
    assert proba.shape == (len(X), 2) and np.allclose(proba.sum(axis=1), 1)
    assert set(single.predict(X).tolist()) <= {0, 1}
    assert model.get_params()["n_members"] == 3
    model.set_params(n_members=2)  # a parameter changed after fit: the fitted model stays
    assert model.member_proba(X).shape == (3, len(X), 2)


def test_presence_mlp_type_without_positive() -> None:
    X, y = _separable()
    y = np.column_stack([y[:, 0], np.zeros(len(y), bool)])
    p = PresenceMLP((8,), epochs=5).fit(X, y).predict_proba(X)
    assert np.isfinite(p).all()


def test_zscaler_kinds() -> None:
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(5, 2, (50, 3)), rng.normal(-5, 1, (50, 3))]).astype(np.float32)
    groups = np.array(["a"] * 50 + ["b"] * 50)
    g = ZScaler("global").fit(X)
    assert abs(g.transform(X).mean()) < 1e-5
    s = ZScaler("slide").fit(X, groups=groups)
    out = s.transform(X, groups=groups)
    assert np.allclose(out[:50].mean(axis=0), 0, atol=1e-5)
    assert np.allclose(out[50:].std(axis=0), 1, atol=1e-4)
    # an unseen group is normalised by its own statistics
    new = rng.normal(100, 3, (20, 3)).astype(np.float32)
    assert np.allclose(s.transform(new, groups=np.array(["c"] * 20)).mean(axis=0), 0, atol=1e-5)
    # precomputed moments (over all tiles) win over the fitted rows
    full = GroupMoments(3)
    full.update("a", np.zeros((10, 3)))
    full.update("a", np.full((10, 3), 2.0))
    pre = ZScaler("cohort", moments=full).fit(X[:50], groups=groups[:50])
    assert np.allclose(pre.transform(np.ones((1, 3)), groups=np.array(["a"])), 0)
    merged = moments_of(X, groups).merge(GroupMoments(3))
    assert merged.count == {"a": 50, "b": 50}


def test_presence_labels_from_annotations() -> None:
    ann = pd.DataFrame(
        {
            "tile_id": ["t1", "t1", "t2", "t3"],
            "label": ["eosinophil", "cancer_cell", "neutrophil", "unknown"],
        }
    )
    lab = presence_labels(ann, ["eosinophil", "neutrophil"], tile_ids=["t1", "t2", "t3", "t4"])
    assert lab.to_dict("index") == {
        "t1": {"eosinophil": True, "neutrophil": False},
        "t2": {"eosinophil": False, "neutrophil": True},
        "t3": {"eosinophil": False, "neutrophil": False},
        "t4": {"eosinophil": False, "neutrophil": False},
    }
    assert list(presence_labels(ann, ["eosinophil"]).index) == ["t1", "t2", "t3"]


def _data(
    n_slides: int = 8, per: int = 50, cohorts: int = 4, two_sets: bool = False
) -> PresenceData:
    rng = np.random.default_rng(0)
    X, y = _separable(n_slides * per)
    slides = np.repeat([f"S{i}" for i in range(n_slides)], per)
    coh = np.repeat([f"C{i % cohorts}" for i in range(n_slides)], per)
    feats = {"a": X}
    if two_sets:
        feats["b"] = (X + rng.normal(0, 1, X.shape)).astype(np.float32)
    return PresenceData(feats, y, ["eosinophil", "neutrophil"], slides, coh)


def test_grouped_splits_never_split_a_cohort() -> None:
    data = _data()
    splits = grouped_splits(data, np.arange(len(data)), 3, seed=0, what="CV")
    assert splits.grouping == "cohort" and splits.note is None and len(splits.folds) == 3
    for train, test in splits.folds:
        assert not set(data.cohorts[train]) & set(data.cohorts[test])
    covered = np.sort(np.concatenate([te for _, te in splits.folds]))
    assert (covered == np.arange(len(data))).all()


def test_one_cohort_falls_back_to_slides_and_one_slide_fails() -> None:
    data = _data(cohorts=1)
    splits = grouped_splits(data, np.arange(len(data)), 3, seed=0, what="CV")
    assert splits.grouping == "slide" and "one cohort" in (splits.note or "")
    for train, test in splits.folds:
        assert not set(data.slides[train]) & set(data.slides[test])
    with pytest.raises(UserInputError, match="one slide only"):
        grouped_splits(data, np.arange(50), 3, seed=0, what="CV")
    two = grouped_splits(_data(cohorts=2), np.arange(400), 3, seed=0, what="CV")
    assert len(two.folds) == 2 and "2 folds instead of 3" in (two.note or "")


def test_choose_models_nested_cv() -> None:
    data = _data(two_sets=True)
    cands = make_candidates(["a", "b"], [[8], [8, 4]], ["global", "slide", "cohort"])
    assert len(cands) == 12
    result = choose_models(data, cands, outer_folds=2, inner_folds=2, params=FAST, seed=0)
    assert len(result.table) == 2 * 12
    assert result.table.groupby("rare_type")["chosen"].sum().tolist() == [1, 1]
    assert set(result.assessment["outer_fold"]) == {0, 1}
    summary = nested_summary(result)
    assert list(summary["rare_type"]) == ["eosinophil", "neutrophil"]
    assert (summary["cv_balanced_accuracy"] > 0.6).all()
    again = choose_models(data, cands, outer_folds=2, inner_folds=2, params=FAST, seed=0)
    pd.testing.assert_frame_equal(again.table, result.table)
    assert make_candidates(["a"], [[8], [8, 4]], ["global", "slide", "cohort"]).__len__() == 6


def test_two_cohorts_of_one_labelled_slide_each_still_choose_a_model() -> None:
    """Each outer training part is one slide (no inner CV): the choice goes on, unassessed."""
    data = _data(n_slides=2, per=100, cohorts=2)
    cands = make_candidates(["a"], [[8]], ["global"])
    result = choose_models(data, cands, outer_folds=3, inner_folds=3, params=FAST, seed=0)
    assert set(result.chosen) == {"eosinophil", "neutrophil"}
    assert result.assessment.empty
    assert any("trains on one slide only" in n for n in result.notes)
    assert result.table["grouping"].eq("cohort").all()
    assert nested_summary(result)["nested_mean"].isna().all()


def test_scalers_fitted_inside_folds() -> None:
    """The global scaler of a fold sees its training rows only (no held-out leakage)."""
    from histocurate.selection.cv import fit_candidate

    data = _data()
    data.features["a"][:50] += 1000.0  # slide S0 far away
    rows = np.arange(50, len(data))
    fitted = fit_candidate(
        make_candidates(["a"], [[4]], ["global"])[0], data, rows, params=FAST, members=1, seed=0
    )
    assert np.allclose(fitted.scaler.mean_, data.features["a"][rows].mean(axis=0), atol=1e-4)
