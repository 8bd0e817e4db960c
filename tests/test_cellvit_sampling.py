"""CellViT oversampling weights (hand-computed) and the shared distributed sampler."""

from __future__ import annotations

import numpy as np
import pytest

from histocurate.cellvit.sampling import (
    DistributedWeightedSampler,
    combined_weights,
    group_weights,
    sample_weights,
)


def test_sample_weights_hand_computed() -> None:
    # class 0 in 3 images, class 1 in 1: K = 4, w = 4 / (0.85 N + 0.6) = [4/3.15, 4/1.45]
    counts = np.array([[5, 0], [1, 0], [2, 1], [0, 0]])
    w0, w1 = 4 / 3.15, 4 / 1.45
    want = [0.15 + 0.85 * w0, 0.15 + 0.85 * w0, 0.15 + 0.85 * (w0 + w1), 0.15 + 0.85 * w0]
    got = sample_weights(counts)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want)  # the empty image gets the smallest weight
    np.testing.assert_allclose(sample_weights(counts, gamma=0.0), [1, 1, 1, 1])
    np.testing.assert_array_equal(sample_weights(np.zeros((3, 2))), [1, 1, 1])
    with pytest.raises(ValueError, match="non-negative"):
        sample_weights(np.array([[-1, 0]]))


def test_group_and_combined_weights() -> None:
    g = group_weights(["a", "b", "b"], gamma=0.5)  # K = 3: a 3/(0.5+1.5), b 3/(1+1.5)
    np.testing.assert_allclose(g, [1.5, 1.2, 1.2])
    np.testing.assert_allclose(combined_weights(np.array([1.0, 2.0, 4.0]), g),
                               [0.25 + 1, 0.5 + 0.8, 1 + 0.8])  # fmt: skip


def test_ranks_share_one_weighted_draw_and_resume_exactly() -> None:
    weights = np.array([1.0, 0.0, 3.0, 6.0, 0.5])
    one = DistributedWeightedSampler(weights, num_samples=11, seed=111)
    two = [DistributedWeightedSampler(weights, num_samples=11, seed=111, rank=r, world_size=2)
           for r in (0, 1)]  # fmt: skip
    for epoch in (0, 1):
        one.set_epoch(epoch)
        for s in two:
            s.set_epoch(epoch)
        draw = list(one)
        a, b = list(two[0]), list(two[1])
        assert len(a) == len(b) == 6
        merged = [x for pair in zip(a, b, strict=True) for x in pair][:11]
        assert merged == draw and 1 not in draw  # zero weight never drawn
    assert list(two[0]) == a  # an epoch is reproducible
    resumed = DistributedWeightedSampler(weights, num_samples=11, seed=111, rank=0, world_size=2)
    it = iter(two[0])
    head = [next(it), next(it)]
    resumed.load_state_dict(two[0].state_dict())
    assert head + list(resumed) == a
    with pytest.raises(ValueError, match="another run: seed"):
        resumed.load_state_dict({**two[0].state_dict(), "seed": 1})


def test_sampler_follows_the_weights() -> None:
    sampler = DistributedWeightedSampler([1.0, 3.0], num_samples=20_000, seed=0)
    share = np.mean(np.array(list(sampler)) == 1)
    assert share == pytest.approx(0.75, abs=0.02)
