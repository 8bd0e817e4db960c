"""Properties of the metrics (hypothesis) and of the bootstrap (reproducibility, exactness)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from histocurate.metrics import (
    match_instances,
    paired_p_value,
    panoptic_quality,
    percentile_interval,
    resample_sums,
    resample_weights,
)
from histocurate.metrics.summary import panoptic_from_counts

maps = arrays(
    np.int64, st.tuples(st.integers(4, 16), st.integers(4, 16)), elements=st.integers(0, 6)
)


def blocky(m: np.ndarray) -> np.ndarray:
    """Upsample so that instances are blobs of pixels rather than salt and pepper."""
    return np.kron(m, np.ones((2, 2), dtype=m.dtype))


@settings(max_examples=60, deadline=None)
@given(maps)
def test_map_against_itself_scores_one(m: np.ndarray) -> None:
    m = blocky(m)
    r = panoptic_quality(m, m)
    n = np.unique(m[m > 0]).size
    assert (r.tp, r.fp, r.fn) == (n, 0, 0)
    if n:
        assert r.pq == 1.0 and r.sq == 1.0 and r.dq == 1.0
    else:
        assert np.isnan(r.pq)


@settings(max_examples=60, deadline=None)
@given(maps, st.integers(0, 2**31))
def test_swapping_true_and_pred_swaps_fp_and_fn(m: np.ndarray, seed: int) -> None:
    a = blocky(m)
    rng = np.random.default_rng(seed)
    b = np.roll(a, shift=int(rng.integers(-2, 3)), axis=int(rng.integers(0, 2)))
    b = np.where(rng.random(b.shape) < 0.1, 0, b)
    ab, ba = panoptic_quality(a, b), panoptic_quality(b, a)
    assert (ab.tp, ab.fp, ab.fn) == (ba.tp, ba.fn, ba.fp)
    assert ab.iou_sum == pytest.approx(ba.iou_sum)


@settings(max_examples=60, deadline=None)
@given(maps, maps, st.integers(0, 2**31))
def test_relabelling_ids_changes_nothing(m1: np.ndarray, m2: np.ndarray, seed: int) -> None:
    shape = (min(m1.shape[0], m2.shape[0]), min(m1.shape[1], m2.shape[1]))
    a, b = blocky(m1[: shape[0], : shape[1]]), blocky(m2[: shape[0], : shape[1]])
    rng = np.random.default_rng(seed)
    new_ids = np.concatenate([[0], rng.choice(10**12, size=6, replace=False) + 1])
    a2, b2 = new_ids[a], rng.permutation(new_ids[1:]).tolist()
    b2 = np.concatenate([[0], b2])[b]
    before, after = panoptic_quality(a, b), panoptic_quality(a2, b2)
    assert (before.tp, before.fp, before.fn) == (after.tp, after.fp, after.fn)
    assert before.iou_sum == pytest.approx(after.iou_sum)
    m = match_instances(a2, b2)
    assert set(m.true_ids.tolist()) <= set(np.unique(a2).tolist())


def test_resamples_are_reproducible_and_sum_to_n() -> None:
    w1 = resample_weights(530, 1000, seed=42)
    w2 = resample_weights(530, 1000, seed=42)
    assert np.array_equal(w1, w2)
    assert not np.array_equal(w1, resample_weights(530, 1000, seed=43))
    assert np.all(w1.sum(axis=1) == 530)


def test_matrix_bootstrap_equals_explicit_resampling() -> None:
    rng = np.random.default_rng(0)
    per_tile = rng.integers(0, 20, size=(25, 4)).astype(float)  # tp, fp, fn, iou_sum
    per_tile[:, 3] = per_tile[:, 0] * rng.uniform(0.6, 0.9, 25)
    w = resample_weights(25, 50, seed=5)
    fast = panoptic_from_counts(resample_sums(w, per_tile))["pq"]
    for b in range(50):
        drawn = np.repeat(np.arange(25), w[b].astype(int))
        total = per_tile[drawn].sum(axis=0)
        slow = total[0] / (total[0] + total[1] / 2 + total[2] / 2) * total[3] / total[0]
        assert fast[b] == pytest.approx(slow)


def test_interval_and_p_values() -> None:
    samples = np.arange(1, 1001, dtype=float)[:, None]
    ci = percentile_interval(samples, confidence=0.95)
    assert ci.low[0] == pytest.approx(np.quantile(samples, 0.025))
    assert ci.high[0] == pytest.approx(np.quantile(samples, 0.975))
    assert paired_p_value(samples)[0] == pytest.approx(2 / 1001)  # every difference > 0
    symmetric = np.linspace(-1, 1, 1001)[:, None]
    assert paired_p_value(symmetric)[0] == pytest.approx(1.0)
    with_nan = np.array([[np.nan], [1.0], [2.0]])
    assert paired_p_value(with_nan)[0] == pytest.approx(2 / 3)
    assert np.isnan(percentile_interval(np.full((5, 1), np.nan)).low[0])
