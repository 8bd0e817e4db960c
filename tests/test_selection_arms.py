"""Selection arms as pure functions: diversity, uncertainty measures, draws, seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from histocurate.seeding import int_seed, rng_for
from histocurate.selection.diversity import diversity_pool, kmeans_labels
from histocurate.selection.draw import uniform_draw, weighted_draw
from histocurate.selection.uncertainty import (
    clipped_weights,
    ensemble_stats,
    n_uncertainty_clusters,
    uncertain_mask,
    uncertainty_representatives,
)


def _blobs(n_per: int = 30, k: int = 4, dim: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, (k, dim))
    return np.concatenate([c + rng.normal(0, 0.1, (n_per, dim)) for c in centres]).astype(
        np.float32
    )


def test_diversity_pool_one_tile_per_cluster_and_deterministic() -> None:
    X = _blobs()
    ids = np.array([f"t{i:03d}" for i in range(len(X))])
    pick = diversity_pool(ids, X, slide_id="S1", n_clusters=4, seed=3)
    assert len(pick.tile_ids) == 4 and sorted(pick.cluster_ids) == [0, 1, 2, 3]
    # one tile from each blob (blobs are 30 consecutive tiles)
    assert sorted(int(t[1:]) // 30 for t in pick.tile_ids) == [0, 1, 2, 3]
    again = diversity_pool(ids, X, slide_id="S1", n_clusters=4, seed=3)
    assert list(again.tile_ids) == list(pick.tile_ids)
    # the order of rows in the features file does not matter
    perm = np.random.default_rng(1).permutation(len(X))
    shuffled = diversity_pool(ids[perm], X[perm], slide_id="S1", n_clusters=4, seed=3)
    assert list(shuffled.tile_ids) == list(pick.tile_ids)
    other = diversity_pool(ids, X, slide_id="S1", n_clusters=4, seed=4)
    assert set(other.tile_ids) != set(pick.tile_ids)


def test_kmeans_with_fewer_tiles_than_clusters() -> None:
    assert list(kmeans_labels(np.zeros((3, 2), np.float32), 20, seed=0)) == [0, 1, 2]
    assert len(kmeans_labels(np.zeros((0, 2), np.float32), 20, seed=0)) == 0
    pick = diversity_pool(np.array(["a", "b"]), np.ones((2, 3)), slide_id="S", n_clusters=20)
    assert sorted(pick.tile_ids) == ["a", "b"]


def test_ensemble_stats_known_values() -> None:
    agree = np.array([[0.9], [0.9], [0.9], [0.9]])  # (members, n)
    split = np.array([[0.001], [0.999], [0.001], [0.999]])
    s = ensemble_stats(np.concatenate([agree, split], axis=1))
    assert s.mean == pytest.approx([0.9, 0.5], abs=1e-6)
    assert s.bald[0] == pytest.approx(0.0, abs=1e-5)
    assert s.variation_ratio.tolist() == [0.0, 0.5]
    assert s.entropy[1] == pytest.approx(1.0, abs=1e-5)  # bits
    assert s.bald[1] == pytest.approx(1.0, abs=0.02)  # confident members that disagree
    # BALD never exceeds the entropy, and is never negative
    p = np.random.default_rng(0).random((5, 200))
    s = ensemble_stats(p)
    assert (s.bald >= 0).all() and (s.bald <= s.entropy + 1e-6).all()


def test_uncertain_mask_needs_probability_and_top_decile() -> None:
    mean = np.array([0.9] * 10 + [0.1] * 10)
    bald = np.arange(20, dtype=float)[::-1] / 20  # highest BALD on the first tiles
    mask = uncertain_mask(mean, bald, prob_threshold=0.4, percentile=90)
    assert mask.tolist() == [True, True] + [False] * 18
    mean2 = np.array([0.1] * 20)
    assert not uncertain_mask(mean2, bald).any()


def test_uncertainty_clusters_by_count() -> None:
    assert n_uncertainty_clusters(3) == 3
    assert n_uncertainty_clusters(12) == 5
    assert n_uncertainty_clusters(120) == 12
    assert n_uncertainty_clusters(5000) == 20
    X = _blobs(n_per=10, k=6)
    bald = np.random.default_rng(0).random(len(X))
    rows, clusters = uncertainty_representatives(X, bald, slide_id="S", seed=0)
    assert len(rows) == n_uncertainty_clusters(len(X)) == len(set(clusters.tolist()))


def test_clipped_weights() -> None:
    w = clipped_weights(np.array([0, 10, 10, 100]))  # mean 30
    assert w.tolist() == [15.0, 15.0, 15.0, 60.0]
    assert clipped_weights(np.array([0, 0])).tolist() == [1.0, 1.0]


def _pool(n: int) -> pd.DataFrame:
    return pd.DataFrame({"tile_id": [f"t{i:03d}" for i in range(n)], "slide_id": "S"})


def test_draws_are_deterministic_and_order_free() -> None:
    pool = _pool(50)
    a = uniform_draw(pool, 10, seed=1, key="LUAD")
    b = uniform_draw(pool.sample(frac=1, random_state=3), 10, seed=1, key="LUAD")
    assert list(a["tile_id"]) == list(b["tile_id"]) and len(a) == 10
    assert a["draw_weight"].eq(1 / 50).all()
    assert len(uniform_draw(pool, 80, seed=1, key="LUAD")) == 50
    weights = np.r_[np.zeros(45), np.ones(5)]
    w = weighted_draw(pool, weights, 10, seed=0, key="x")
    assert sorted(w["tile_id"]) == [f"t{i:03d}" for i in range(45, 50)]  # zero weight never
    assert w["draw_weight"].sum() == pytest.approx(1.0)


def test_weighted_draw_follows_weights() -> None:
    pool = _pool(2)
    hits = sum(
        weighted_draw(pool, np.array([1.0, 3.0]), 1, seed=s, key="k")["tile_id"].iloc[0] == "t001"
        for s in range(400)
    )
    assert 250 < hits < 350  # expected 300


def test_seeds_depend_on_keys_only() -> None:
    assert int_seed(0, "a", "S1") == int_seed(0, "a", "S1") != int_seed(0, "a", "S2")
    assert rng_for(1, "x").random() == rng_for(1, "x").random()


def test_standardise_and_scalers_ignore_the_features_scale() -> None:
    from histocurate.selection.diversity import standardise
    from histocurate.selection.scalers import ZScaler

    X = np.random.default_rng(0).normal(3.0, 1.0, (200, 4))
    for scale in (1e-30, 1e-7, 1.0, 1e30):
        np.testing.assert_allclose(standardise(X * scale), standardise(X), atol=1e-4)
        np.testing.assert_allclose(ZScaler().fit_transform(X * scale), standardise(X), atol=1e-4)
    constant = np.full((5, 2), 7.0)
    assert (standardise(constant) == 0).all()


def test_draws_refuse_weights_that_are_not_weights() -> None:
    pool = pd.DataFrame({"tile_id": ["a", "b", "c"]})
    for bad in ([0, 0, 0], [1, np.nan, 1], [1, -1, 1], [1, np.inf, 1]):
        with pytest.raises(ValueError, match="finite"):
            weighted_draw(pool, np.array(bad, float), 2, seed=0, key="k")
    with pytest.raises(ValueError, match="cannot draw -1"):
        uniform_draw(pool, -1, seed=0, key="k")
