"""Model choice for the presence predictors: cohort-grouped, nested cross-validation.

For each rare type, every candidate (feature set x depth x scaler) is scored by balanced
accuracy in grouped K-fold CV over all labelled tiles, and the best is refitted on all of
them (`choose_models`). Folds never split a cohort, so the score says how a model does on a
cohort it has never seen. With a single cohort the folds group slides instead (and the
result says so). The outer loop of the nested CV repeats the whole choice on each outer
training part and scores the chosen model on the held-out part: an honest estimate of the
procedure, which the plain CV score of the winner (a maximum over candidates) is not.
The global scaler is fitted inside each fold (`FittedCandidate`), never on held-out rows.
The per-slide and per-cohort scalers normalise a group by its own statistics over all of
its tiles, labelled or not (no labels used); a held-out slide or cohort is normalised by
its own tiles, exactly as a new slide is when it is scored.

Cost: the CV fits use single networks; only the refitted winners are full ensembles.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from histocurate.errors import UserInputError
from histocurate.seeding import int_seed
from histocurate.selection.presence import Candidate, PresenceMLP, sigmoid
from histocurate.selection.scalers import GroupMoments, ScalerKind, ZScaler


@dataclass
class PresenceData:
    """Labelled tiles: features per feature set, labels (n, T), slide and cohort of each row.

    ``moments`` holds per-slide / per-cohort statistics over *all* tiles of each group
    (key: (feature_set, "slide" | "cohort")); without them, group scalers use the rows here.
    """

    features: dict[str, np.ndarray]
    labels: np.ndarray
    types: list[str]
    slides: np.ndarray
    cohorts: np.ndarray
    moments: dict[tuple[str, str], GroupMoments] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.labels)
        for name, values in self.features.items():
            if len(values) != n:
                raise ValueError(f"feature set {name!r} has {len(values)} rows, labels {n}")
        if self.labels.shape[1] != len(self.types):
            raise ValueError("labels need one column per type")

    def __len__(self) -> int:
        return len(self.labels)

    def groups(self, by: ScalerKind) -> np.ndarray | None:
        return {"global": None, "slide": self.slides, "cohort": self.cohorts}[by]


@dataclass(frozen=True)
class FitParams:
    """Training settings shared by every candidate."""

    epochs: int = 20
    batch_size: int = 256
    learning_rate: float = 3e-3
    alpha: float = 1e-4
    members: int = 5


@dataclass
class FittedCandidate:
    """A candidate's scaler and network(s), fitted on some rows."""

    candidate: Candidate
    scaler: ZScaler
    model: PresenceMLP

    def member_logits(
        self,
        features: dict[str, np.ndarray],
        *,
        slides: np.ndarray,
        cohorts: np.ndarray,
        balanced: bool = False,
    ) -> np.ndarray:
        """(members, n, T) logits of P(presence) for new rows (class-balanced scores when
        ``balanced``: see `histocurate.selection.presence`)."""
        groups = {"global": None, "slide": slides, "cohort": cohorts}[self.candidate.scaler]
        X = self.scaler.transform(features[self.candidate.feature_set], groups=groups)
        return self.model.member_logits(X, balanced=balanced)

    def member_proba(
        self,
        features: dict[str, np.ndarray],
        *,
        slides: np.ndarray,
        cohorts: np.ndarray,
        balanced: bool = False,
    ) -> np.ndarray:
        """(members, n, T) probabilities of presence for new rows (see `member_logits`)."""
        return sigmoid(
            self.member_logits(features, slides=slides, cohorts=cohorts, balanced=balanced)
        )


def fit_candidate(
    candidate: Candidate,
    data: PresenceData,
    rows: np.ndarray,
    *,
    params: FitParams,
    members: int,
    seed: int,
) -> FittedCandidate:
    """Fit ``candidate``'s scaler and MLP(s) on ``rows`` of ``data`` (all types at once)."""
    groups = data.groups(candidate.scaler)
    group_rows = None if groups is None else groups[rows]
    scaler = ZScaler(candidate.scaler, data.moments.get((candidate.feature_set, candidate.scaler)))
    X = scaler.fit_transform(data.features[candidate.feature_set][rows], groups=group_rows)
    model = PresenceMLP(
        candidate.hidden,
        n_members=members,
        epochs=params.epochs,
        batch_size=params.batch_size,
        learning_rate=params.learning_rate,
        alpha=params.alpha,
        random_state=seed,
    ).fit(X, data.labels[rows])
    return FittedCandidate(candidate, scaler, model)


def balanced_accuracy(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Per column of ``y`` (n, T): (TPR + TNR) / 2; NaN where a class is absent."""
    y = y.astype(bool)
    pred = p > threshold
    pos, neg = y.sum(axis=0), (~y).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = (pred & y).sum(axis=0) / pos
        tnr = (~pred & ~y).sum(axis=0) / neg
    return np.where((pos > 0) & (neg > 0), (tpr + tnr) / 2, np.nan)


class SingleGroupError(UserInputError):
    """Rows from one slide only: no grouped fold can hold any of them out."""


@dataclass
class Splits:
    folds: list[tuple[np.ndarray, np.ndarray]]  # (train rows, test rows) of the full data
    grouping: str  # "cohort" or "slide"
    note: str | None = None


def grouped_splits(
    data: PresenceData, rows: np.ndarray, n_splits: int, *, seed: int, what: str
) -> Splits:
    """Folds of ``rows`` that never split a cohort (a slide when only one cohort is there)."""
    cohorts, slides = data.cohorts[rows], data.slides[rows]
    note = None
    if len(np.unique(cohorts)) >= 2:
        groups, grouping = cohorts, "cohort"
    else:
        groups, grouping = slides, "slide"
        note = (
            f"{what}: the labelled tiles come from one cohort ({cohorts[0] if len(rows) else '-'})"
            ", so folds are grouped by slide: scores say how a model does on a new slide, "
            "not on a new cohort"
        )
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise SingleGroupError(
            f"cannot cross-validate the presence models ({what}): the labelled tiles come from "
            f"one slide only ({slides[0] if len(rows) else '-'}); label tiles of at least two "
            "slides (better: two cohorts)"
        )
    k = min(n_splits, n_groups)
    if k < n_splits:
        extra = f"{what}: only {n_groups} {grouping}s, so {k} folds instead of {n_splits}"
        note = f"{note}; {extra}" if note else extra
    # stratify on the rarest type present in each tile, so positives spread over folds
    prevalence = data.labels[rows].mean(axis=0)
    order = np.argsort(prevalence)
    strata = np.zeros(len(rows), int)
    for rank, t in enumerate(order[::-1], start=1):
        strata[data.labels[rows, t]] = rank
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        splitter = StratifiedGroupKFold(k, shuffle=True, random_state=seed)
        folds = [
            (rows[tr], rows[te]) for tr, te in splitter.split(np.zeros(len(rows)), strata, groups)
        ]
    return Splits(folds, grouping, note)


def cv_scores(
    candidate: Candidate, data: PresenceData, splits: Splits, *, params: FitParams, seed: int
) -> np.ndarray:
    """Balanced accuracy per fold and type, (folds, T)."""
    scores = []
    for i, (train, test) in enumerate(splits.folds):
        fitted = fit_candidate(
            candidate,
            data,
            train,
            params=params,
            members=1,
            seed=int_seed(seed, candidate.name, "fold", i),
        )
        p = fitted.member_proba(
            {k: v[test] for k, v in data.features.items()},
            slides=data.slides[test],
            cohorts=data.cohorts[test],
            balanced=True,  # for balanced accuracy: the balanced score's 0.5 decides
        ).mean(axis=0)
        scores.append(balanced_accuracy(data.labels[test], p))
    return np.array(scores)


def _mean_scores(scores: np.ndarray) -> np.ndarray:
    """Mean over folds of (folds, T) scores, ignoring NaN folds (all NaN: NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(scores, axis=0)


def _std_scores(scores: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanstd(scores, axis=0)


def _best(means: np.ndarray) -> np.ndarray:
    """Per type (column), the row of the best candidate (ties and all-NaN: the first)."""
    return np.where(np.isnan(means), -np.inf, means).argmax(axis=0)


@dataclass
class CVResult:
    """What model choice found: the scores of every candidate and the winner per type."""

    table: pd.DataFrame  # one row per (type, candidate)
    assessment: pd.DataFrame  # one row per (type, outer fold): nested estimate
    chosen: dict[str, Candidate]
    notes: list[str]


def choose_models(
    data: PresenceData,
    candidates: Sequence[Candidate],
    *,
    outer_folds: int = 3,
    inner_folds: int = 3,
    params: FitParams = FitParams(),
    seed: int = 0,
) -> CVResult:
    """Nested grouped CV: choose a candidate per type, and estimate how good the choice is."""
    if not candidates:
        raise ValueError("no presence-model candidates")
    names = [c.name for c in candidates]
    everything = np.arange(len(data))
    notes: list[str] = []

    # outer loop: repeat the choice on each outer training part, score on its test part
    outer = grouped_splits(
        data, everything, outer_folds, seed=int_seed(seed, "outer"), what="outer CV"
    )
    notes += [outer.note] if outer.note else []
    assessment = []
    inner_sum = np.zeros((len(candidates), len(data.types)))
    inner_n = np.zeros_like(inner_sum)
    for o, (train, test) in enumerate(outer.folds):
        try:
            inner = grouped_splits(
                data,
                train,
                inner_folds,
                seed=int_seed(seed, "inner", o),
                what=f"inner CV of outer fold {o}",
            )
        except SingleGroupError:
            # e.g. two cohorts of one labelled slide each: the choice below still has its
            # folds, but this outer fold cannot repeat it, so it estimates nothing
            notes.append(
                f"outer fold {o} trains on one slide only ({data.slides[train[0]]}): no inner "
                "CV there, so it gives no nested estimate (label more slides per cohort for "
                "one)"
            )
            continue
        if inner.note and inner.note not in notes:
            notes.append(inner.note)
        means = np.array(
            [
                _mean_scores(
                    cv_scores(c, data, inner, params=params, seed=int_seed(seed, "inner", o))
                )
                for c in candidates
            ]
        )
        inner_sum += np.nan_to_num(means)
        inner_n += np.isfinite(means)
        best = _best(means)
        for b in sorted(set(best.tolist())):
            fitted = fit_candidate(
                candidates[b],
                data,
                train,
                params=params,
                members=1,
                seed=int_seed(seed, "outer", o, names[b]),
            )
            p = fitted.member_proba(
                {k: v[test] for k, v in data.features.items()},
                slides=data.slides[test],
                cohorts=data.cohorts[test],
                balanced=True,  # for balanced accuracy: the balanced score's 0.5 decides
            ).mean(axis=0)
            bacc = balanced_accuracy(data.labels[test], p)
            for t, type_ in enumerate(data.types):
                if best[t] == b:
                    assessment.append(
                        {
                            "rare_type": type_,
                            "outer_fold": o,
                            "grouping": outer.grouping,
                            "candidate": names[b],
                            "balanced_accuracy": float(bacc[t]),
                            "test_tiles": len(test),
                            "test_positives": int(data.labels[test, t].sum()),
                        }
                    )

    # the choice itself: grouped CV on all labelled tiles
    top = grouped_splits(data, everything, inner_folds, seed=int_seed(seed, "choice"), what="CV")
    if top.note and top.note not in notes:
        notes.append(top.note)
    fold_scores = [
        cv_scores(c, data, top, params=params, seed=int_seed(seed, "choice")) for c in candidates
    ]
    means = np.array([_mean_scores(s) for s in fold_scores])
    stds = np.array([_std_scores(s) for s in fold_scores])
    best = _best(means)
    chosen = {type_: candidates[int(best[t])] for t, type_ in enumerate(data.types)}
    for t, type_ in enumerate(data.types):
        if np.isnan(means[:, t]).all():
            notes.append(
                f"{type_}: no CV fold holds both classes, so no candidate could be "
                f"scored; using {names[int(best[t])]} unassessed"
            )
    with np.errstate(invalid="ignore", divide="ignore"):
        nested_inner = np.where(inner_n > 0, inner_sum / np.maximum(inner_n, 1), np.nan)
    rows = []
    for t, type_ in enumerate(data.types):
        for c, cand in enumerate(candidates):
            rows.append(
                {
                    "rare_type": type_,
                    "candidate": cand.name,
                    "feature_set": cand.feature_set,
                    "hidden": "x".join(map(str, cand.hidden)),
                    "scaler": cand.scaler,
                    "grouping": top.grouping,
                    "cv_folds": len(top.folds),
                    "cv_balanced_accuracy": float(means[c, t]),
                    "cv_std": float(stds[c, t]),
                    "inner_balanced_accuracy": float(nested_inner[c, t]),
                    "positives": int(data.labels[:, t].sum()),
                    "chosen": bool(best[t] == c),
                }
            )
    return CVResult(pd.DataFrame(rows), pd.DataFrame(assessment), chosen, notes)


def nested_summary(result: CVResult) -> pd.DataFrame:
    """Per type: the chosen candidate, its CV score and the nested (outer-fold) estimate."""
    chosen = result.table[result.table["chosen"]].set_index("rare_type")
    if result.assessment.empty:
        nested = pd.DataFrame(columns=["nested_mean", "nested_std"])
    else:
        grouped = result.assessment.groupby("rare_type")["balanced_accuracy"]
        nested = pd.DataFrame({"nested_mean": grouped.mean(), "nested_std": grouped.std()})
    out = chosen[["candidate", "cv_balanced_accuracy", "cv_std", "positives"]].join(nested)
    return out.reset_index()
