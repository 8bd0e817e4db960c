"""Folds grouped by slide and stratified by cell type (multi-label: a tile holds several).

No slide is in two folds (the fold is a property of the slide), and every type found on at
least as many slides as there are folds appears in every fold whenever that is possible, so
the rare types are spread over the folds.

How (iterative stratification at the slide level, then a repair):

1. Slides are taken rarest first: the slide whose rarest type is on the fewest slides goes
   first (ties in a seeded random order). Each goes to the fold that most lacks slides
   holding that type (the fold's share of such slides below ``1/K``), then to the fold with
   the fewest tiles, then at random.
2. A local search then moves single slides (and swaps pairs while a type is still missing
   from a fold) as long as it lowers ``1000 x missing (type, fold) pairs + imbalance``, where
   the imbalance sums each fold's squared relative deviation from ``1/K`` of the tiles and,
   averaged over types, of the nuclei of each type.

Types that cannot be spread (too few slides, or slides that hold them all in one place) are
listed in `Folds.uncovered`, and the card says so.

>>> import pandas as pd
>>> counts = pd.DataFrame({"rare": [1, 1, 1, 0, 0, 0], "common": [9, 8, 7, 9, 8, 7]},
...                       index=[f"s{i}" for i in range(6)])
>>> folds = assign_folds(counts, pd.Series(1, index=counts.index), n_folds=3, seed=0)
>>> sorted(folds.slide_fold[s] for s in ("s0", "s1", "s2"))
[0, 1, 2]
>>> folds.uncovered
[]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from histocurate.errors import UserInputError

MISSING_WEIGHT = 1000.0
MAX_ROUNDS = 200


@dataclass(frozen=True)
class Folds:
    """The fold of every slide (0-based) and the types that could not be spread."""

    slide_fold: dict[str, int]
    n_folds: int
    seed: int
    uncovered: list[str]


class _Cost:
    """The objective of the local search (see the module docstring)."""

    def __init__(self, counts: NDArray[np.float64], tiles: NDArray[np.float64], k: int) -> None:
        self.counts, self.tiles, self.k = counts, tiles, k
        self.present = counts > 0
        self.spreadable = self.present.sum(axis=0) >= k
        self.totals = counts.sum(axis=0)
        self.typed = self.totals > 0

    def missing(self, fold: NDArray[np.int64]) -> int:
        onehot = np.eye(self.k)[fold]  # (S, K)
        held = onehot.T @ self.present  # (K, T)
        return int(((held == 0) & self.spreadable[None, :]).sum())

    def __call__(self, fold: NDArray[np.int64]) -> float:
        onehot = np.eye(self.k)[fold]
        tiles = onehot.T @ self.tiles
        if np.any(tiles == 0):
            return float("inf")
        share = 1.0 / self.k
        imbalance = float((((tiles / self.tiles.sum()) - share) ** 2).sum()) * self.k
        if self.typed.any():
            per_type = (onehot.T @ self.counts)[:, self.typed] / self.totals[self.typed]
            imbalance += float(((per_type - share) ** 2).sum(axis=0).mean()) * self.k
        return MISSING_WEIGHT * self.missing(fold) + imbalance


def _initial(cost: _Cost, rng: np.random.Generator) -> NDArray[np.int64]:
    k, present, tiles = cost.k, cost.present, cost.tiles
    n_slides = present.sum(axis=0).astype(np.float64)
    rarity = np.where(present, n_slides[None, :], np.inf).min(axis=1)
    order = np.lexsort((rng.permutation(len(tiles)), rarity))
    fold = np.full(len(tiles), -1, dtype=np.int64)
    held = np.zeros((k, present.shape[1]))
    held_tiles = np.zeros(k)
    for s in order:
        if present[s].any():
            rarest = int(np.flatnonzero(present[s])[np.argmin(n_slides[present[s]])])
            primary = n_slides[rarest] / k - held[:, rarest]
        else:
            primary = np.zeros(k)
        secondary = tiles.sum() / k - held_tiles
        best = int(np.lexsort((rng.random(k), secondary, primary))[-1])
        fold[s] = best
        held[best] += present[s]
        held_tiles[best] += tiles[s]
    return fold


def _improve(fold: NDArray[np.int64], cost: _Cost) -> NDArray[np.int64]:
    current = cost(fold)
    for _ in range(MAX_ROUNDS):
        best, best_fold = current, None
        for s in range(len(fold)):
            for f in range(cost.k):
                if f == fold[s]:
                    continue
                trial = fold.copy()
                trial[s] = f
                value = cost(trial)
                if value < best - 1e-12:
                    best, best_fold = value, trial
        if best_fold is None and cost.missing(fold):
            # swaps, from the slides holding a type still missing from a fold
            held = np.eye(cost.k)[fold].T @ cost.present
            lacking = ((held == 0) & cost.spreadable[None, :]).any(axis=0)
            for a in np.flatnonzero(cost.present[:, lacking].any(axis=1)):
                for b in range(len(fold)):
                    if fold[a] == fold[b]:
                        continue
                    trial = fold.copy()
                    trial[a], trial[b] = fold[b], fold[a]
                    value = cost(trial)
                    if value < best - 1e-12:
                        best, best_fold = value, trial
        if best_fold is None:
            return fold
        fold, current = best_fold, best
    return fold


def assign_folds(counts: pd.DataFrame, tiles: pd.Series, *, n_folds: int, seed: int) -> Folds:
    """Folds of the slides of ``counts`` (index: slide ids; columns: types; values: nuclei
    of that type on the slide) with ``tiles`` (tiles per slide, same index)."""
    slides = [str(s) for s in counts.index]
    if n_folds < 1:
        raise UserInputError(f"--folds must be at least 1 (got {n_folds})")
    if n_folds == 1:
        return Folds(dict.fromkeys(slides, 0), 1, seed, [])
    if len(slides) < n_folds:
        raise UserInputError(
            f"{len(slides)} slide(s) cannot make {n_folds} folds without putting a slide in "
            f"two folds; use --folds {max(len(slides), 1)} (or annotate more slides)"
        )
    rng = np.random.default_rng(seed)
    matrix = counts.to_numpy(dtype=np.float64)
    cost = _Cost(matrix, tiles.reindex(counts.index).to_numpy(dtype=np.float64), n_folds)
    fold = _improve(_initial(cost, rng), cost)
    onehot = np.eye(n_folds)[fold]
    held = onehot.T @ cost.present
    uncovered = [
        str(t)
        for j, t in enumerate(counts.columns)
        if cost.spreadable[j] and (held[:, j] == 0).any()
    ]
    return Folds({s: int(f) for s, f in zip(slides, fold, strict=True)}, n_folds, seed, uncovered)
