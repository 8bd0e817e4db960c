"""Z-scoring of tile features, fitted globally, per slide or per cohort.

Stain and scanner differences shift whole slides and cohorts in feature space; z-scoring
each slide (or cohort) by its own statistics removes that shift, at the price of also
removing real differences between slides. Which works best is an empirical question, so the
presence-model candidates try all three.

Per-slide and per-cohort statistics use no labels. They are computed over every tile of the
group (labelled or not, `GroupMoments`), and a group never seen in fitting is normalised by
its own statistics at transform time, as a new cohort would be in production. The global
scaler is fitted on the training rows only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

ScalerKind = Literal["global", "slide", "cohort"]
_RELATIVE_MIN_STD = 1e-6  # a column this flat relative to its size is constant (rounding)


@dataclass
class GroupMoments:
    """Running count, sum and sum of squares of feature vectors, per group (float64)."""

    dim: int
    count: dict[str, int] = field(default_factory=dict)
    total: dict[str, np.ndarray] = field(default_factory=dict)
    squares: dict[str, np.ndarray] = field(default_factory=dict)

    def update(self, group: str, values: np.ndarray) -> None:
        """Add the rows of ``values`` (n, dim) to ``group``."""
        v = np.asarray(values, dtype=np.float64)
        if v.ndim != 2 or v.shape[1] != self.dim:
            raise ValueError(f"expected (n, {self.dim}) values, got {v.shape}")
        self.count[group] = self.count.get(group, 0) + v.shape[0]
        self.total[group] = self.total.get(group, 0.0) + v.sum(axis=0)
        self.squares[group] = self.squares.get(group, 0.0) + np.einsum("ij,ij->j", v, v)

    def merge(self, other: GroupMoments) -> GroupMoments:
        """Add another accumulator's groups into this one (returns self)."""
        for g, n in other.count.items():
            self.count[g] = self.count.get(g, 0) + n
            self.total[g] = self.total.get(g, 0.0) + other.total[g]
            self.squares[g] = self.squares.get(g, 0.0) + other.squares[g]
        return self

    def __contains__(self, group: object) -> bool:
        return group in self.count

    def mean_std(self, group: str) -> tuple[np.ndarray, np.ndarray]:
        n = self.count[group]
        mean = self.total[group] / n
        var = np.maximum(self.squares[group] / n - mean**2, 0.0)
        return mean, safe_std(mean, np.sqrt(var))


def safe_std(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``std``, with 1 for constant columns. "Constant" is relative to the column's size,
    so features of any scale (1e-30 or 1e30) are z-scored alike."""
    size = np.maximum(np.abs(mean), std)
    return np.where(std <= _RELATIVE_MIN_STD * size, 1.0, std)


def moments_of(values: np.ndarray, groups: np.ndarray) -> GroupMoments:
    """`GroupMoments` of ``values`` grouped by ``groups``."""
    moments = GroupMoments(values.shape[1])
    for g in np.unique(groups):
        moments.update(str(g), values[groups == g])
    return moments


class ZScaler(TransformerMixin, BaseEstimator):
    """Z-scoring by one global statistic, or by group (slide or cohort) statistics.

    Parameters
    ----------
    by: ``"global"`` (mean and std of the fitted rows), ``"slide"`` or ``"cohort"`` (each
        group by its own mean and std; ``groups`` gives each row's group).
    moments: optional precomputed per-group statistics (over all tiles of each group);
        without them, group statistics come from the rows given to ``fit``/``transform``.
    """

    def __init__(self, by: ScalerKind = "global", moments: GroupMoments | None = None) -> None:
        self.by = by
        self.moments = moments

    def fit(self, X: np.ndarray, y: object = None, groups: np.ndarray | None = None) -> ZScaler:
        X = np.asarray(X, dtype=np.float32)
        if self.by == "global":
            self.mean_ = X.mean(axis=0, dtype=np.float64)
            self.scale_ = safe_std(self.mean_, X.std(axis=0, dtype=np.float64))
        else:
            if groups is None:
                raise ValueError(f"ZScaler(by={self.by!r}) needs groups")
            self.moments_ = self.moments if self.moments is not None else moments_of(X, groups)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has shape {X.shape}, the scaler was fitted on {self.n_features_in_} features"
            )
        if self.by == "global":
            return ((X - self.mean_) / self.scale_).astype(np.float32)
        if groups is None:
            raise ValueError(f"ZScaler(by={self.by!r}) needs groups")
        out = np.empty_like(X)
        groups = np.asarray(groups)
        for g in np.unique(groups):
            rows = groups == g
            if str(g) in self.moments_:
                mean, std = self.moments_.mean_std(str(g))
            else:  # a group never seen: its own statistics (no labels involved)
                mean, std = moments_of(X[rows], groups[rows]).mean_std(str(g))
            out[rows] = (X[rows] - mean) / std
        return out

    def fit_transform(
        self, X: np.ndarray, y: object = None, groups: np.ndarray | None = None
    ) -> np.ndarray:
        return self.fit(X, groups=groups).transform(X, groups=groups)
