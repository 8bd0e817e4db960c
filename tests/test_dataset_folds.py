"""Folds: grouped by slide, every type on >= K slides in every fold, balanced, seeded."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from histocurate.dataset.folds import assign_folds
from histocurate.errors import UserInputError


def cohort(seed: int, n_slides: int = 14, n_types: int = 9) -> tuple[pd.DataFrame, pd.Series]:
    """Slides holding common types everywhere and rare types on a few slides each."""
    rng = np.random.default_rng(seed)
    counts = np.zeros((n_slides, n_types), dtype=int)
    for t in range(n_types):
        on = rng.choice(n_slides, size=int(rng.integers(1, n_slides + 1)), replace=False)
        counts[on, t] = rng.integers(1, 40 if t < 3 else 4, len(on))
    index = [f"slide{i:02d}" for i in range(n_slides)]
    tiles = pd.Series(rng.integers(2, 30, n_slides), index=index)
    return pd.DataFrame(counts, index=index, columns=[f"type{t}" for t in range(n_types)]), tiles


@pytest.mark.parametrize("seed", range(8))
def test_a_type_on_at_least_k_slides_is_in_every_fold(seed: int) -> None:
    counts, tiles = cohort(seed)
    folds = assign_folds(counts, tiles, n_folds=3, seed=111)
    fold = pd.Series(folds.slide_fold)
    assert set(fold.index) == set(counts.index)  # one fold per slide: no slide in two
    assert set(fold) == {0, 1, 2}
    present = counts > 0
    for column in counts.columns:
        slides = present.index[present[column]]
        if len(slides) >= 3:
            assert set(fold[slides]) == {0, 1, 2}, (column, fold[slides].tolist())
    assert folds.uncovered == []
    per_fold = tiles.groupby(fold).sum()
    assert per_fold.max() <= 2.2 * per_fold.min()


def test_same_seed_same_folds_other_seed_may_differ() -> None:
    counts, tiles = cohort(3)
    first = assign_folds(counts, tiles, n_folds=3, seed=5).slide_fold
    assert assign_folds(counts, tiles, n_folds=3, seed=5).slide_fold == first
    others = {
        tuple(assign_folds(counts, tiles, n_folds=3, seed=s).slide_fold.values()) for s in range(6)
    }
    assert len(others) > 1


def test_types_that_cannot_be_spread_are_named() -> None:
    # 4 slides, 3 folds: two slides share a fold, and every pair of slides holds a type
    # found on exactly 3 slides, so at least one such type misses a fold
    counts = pd.DataFrame(
        {"a": [1, 1, 1, 0], "b": [1, 1, 0, 1], "c": [1, 0, 1, 1], "d": [0, 1, 1, 1]},
        index=["s0", "s1", "s2", "s3"],
    )
    folds = assign_folds(counts, pd.Series(1, index=counts.index), n_folds=3, seed=0)
    assert set(folds.slide_fold.values()) == {0, 1, 2}
    fold = pd.Series(folds.slide_fold)
    missing = [t for t in counts if set(fold[counts.index[counts[t] > 0]]) != {0, 1, 2}]
    assert missing and folds.uncovered == missing


def test_too_few_slides_is_an_error_naming_the_fix() -> None:
    counts = pd.DataFrame({"a": [1, 2]}, index=["s0", "s1"])
    with pytest.raises(UserInputError, match="--folds 2"):
        assign_folds(counts, pd.Series(1, index=counts.index), n_folds=3, seed=0)
    one = assign_folds(counts, pd.Series(1, index=counts.index), n_folds=1, seed=0)
    assert set(one.slide_fold.values()) == {0}
