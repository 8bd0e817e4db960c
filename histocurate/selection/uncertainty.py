"""Uncertainty arm: where the presence ensembles disagree.

For a binary presence model with members m = 1..M giving p_m:
- predictive entropy H(p̄) of the mean p̄ (bits): high when p̄ is near 0.5;
- variation ratio 1 - (votes of the modal class) / M: how split the members' decisions are;
- BALD = H(p̄) - mean_m H(p_m): the mutual information between the prediction and the
  model (Houlsby et al. 2011). High only when members are each confident but disagree,
  i.e. uncertainty a label would resolve, not noise inherent in the tile.
Tiles with p̄ above a threshold whose BALD is in the top decile of their slide are
clustered per slide and one per cluster is kept; the final draw weights slides by how many
uncertain tiles they have, clipped so that no slide dominates or vanishes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from histocurate.seeding import int_seed
from histocurate.selection.diversity import kmeans_labels

_EPS = 1e-7


@dataclass(frozen=True)
class EnsembleStats:
    """Per-tile summaries of an ensemble's member probabilities (all float32, shape (n,...))."""

    mean: np.ndarray
    entropy: np.ndarray
    variation_ratio: np.ndarray
    bald: np.ndarray


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """Entropy in bits of Bernoulli(p)."""
    q = np.clip(p, _EPS, 1 - _EPS)
    return -(q * np.log2(q) + (1 - q) * np.log2(1 - q))


def ensemble_stats(member_proba: np.ndarray) -> EnsembleStats:
    """Summaries over axis 0 (members) of probabilities shaped (members, n, ...)."""
    p = np.asarray(member_proba, dtype=np.float32)
    members = p.shape[0]
    mean = p.mean(axis=0)
    entropy = binary_entropy(mean)
    expected = binary_entropy(p).mean(axis=0)
    votes = (p > 0.5).sum(axis=0)
    variation = 1.0 - np.maximum(votes, members - votes) / members
    bald = np.maximum(entropy - expected, 0.0)
    return EnsembleStats(
        mean.astype(np.float32),
        entropy.astype(np.float32),
        variation.astype(np.float32),
        bald.astype(np.float32),
    )


def uncertain_mask(
    mean: np.ndarray, bald: np.ndarray, *, prob_threshold: float = 0.4, percentile: float = 90.0
) -> np.ndarray:
    """Tiles of ONE slide with mean P > ``prob_threshold`` and BALD above the slide's
    ``percentile`` (the percentile is over all the slide's tiles)."""
    if len(bald) == 0:
        return np.zeros(0, bool)
    cut = np.percentile(bald, percentile)
    return (mean > prob_threshold) & (bald > cut)


def n_uncertainty_clusters(n: int, *, low: int = 5, high: int = 20) -> int:
    """Clusters for ``n`` uncertain tiles: one per ~10 tiles, within [low, high], at most n."""
    return min(n, max(low, min(high, math.ceil(n / 10))))


def uncertainty_representatives(
    X: np.ndarray,
    bald: np.ndarray,
    *,
    slide_id: str,
    seed: int = 0,
    low: int = 5,
    high: int = 20,
) -> tuple[np.ndarray, np.ndarray]:
    """K-means on a slide's uncertain tiles; per cluster the tile with the highest BALD.

    Returns (row indices into X, cluster id of each), in cluster order. Rows must be in a
    stable order (the caller sorts by tile id).
    """
    n = len(X)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    k = n_uncertainty_clusters(n, low=low, high=high)
    labels = kmeans_labels(X, k, seed=int_seed(seed, "uncertainty-kmeans", slide_id))
    rows, clusters = [], []
    for cluster in np.unique(labels):
        members = np.flatnonzero(labels == cluster)
        rows.append(members[np.argmax(bald[members])])  # first max: deterministic
        clusters.append(cluster)
    return np.array(rows, np.int64), np.array(clusters, np.int64)


def clipped_weights(counts: np.ndarray, *, low: float = 0.5, high: float = 2.0) -> np.ndarray:
    """Slide weights proportional to ``counts``, clipped to [low, high] x their mean."""
    counts = np.asarray(counts, dtype=np.float64)
    if len(counts) == 0:
        return counts
    mean = counts.mean()
    if mean <= 0:
        return np.ones_like(counts)
    return np.clip(counts, low * mean, high * mean)
