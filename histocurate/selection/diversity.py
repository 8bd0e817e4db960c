"""Diversity arm: per-slide K-means on tile features, one random tile per cluster.

Clusters of a slide's feature space stand for its tissue patterns (tumour, stroma,
inflammation, necrosis...). One tile per cluster gives every pattern of every slide a seat
in the pool, however rare it is on the slide; the final random draw then samples that pool
(`histocurate.selection.draw`).

K-means runs on the slide's features z-scored per dimension (`standardise`). Euclidean
K-means on raw features clusters by whichever dimensions have the largest units: on the
built-in features one dimension (largest nucleus area, in um^2) carried ~90% of the variance
and the top five (all nuclear areas) 99% (measured on a synthetic slide), so the "patterns"
were nucleus-size bins, not tissue. Z-scoring gives every feature an equal say; for
embeddings whose dimensions are already commensurate it changes little.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from histocurate.seeding import int_seed, rng_for
from histocurate.selection.scalers import safe_std


@dataclass(frozen=True)
class ClusterPick:
    """Tiles picked from a slide, with the cluster each stands for."""

    tile_ids: np.ndarray  # (k,) str
    cluster_ids: np.ndarray  # (k,) int64


def kmeans_labels(X: np.ndarray, n_clusters: int, *, seed: int, max_iter: int = 100) -> np.ndarray:
    """Cluster label of every row. With no more rows than clusters, each row is its own."""
    n = len(X)
    if n == 0:
        return np.zeros(0, np.int64)
    if n <= n_clusters:
        return np.arange(n, dtype=np.int64)
    # one thread: on a shared 2-core machine OpenMP K-means ran 10x slower with two threads
    # than with one (measured at load 4); parallelism comes from slides instead
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        km = KMeans(n_clusters=n_clusters, n_init=1, max_iter=max_iter, random_state=seed)
        return km.fit_predict(np.asarray(X, dtype=np.float32)).astype(np.int64)


def standardise(X: np.ndarray) -> np.ndarray:
    """Each column z-scored by its own mean and std over the rows (constant columns: 0)."""
    X = np.asarray(X, dtype=np.float32)
    if len(X) == 0:
        return X
    mean = X.mean(axis=0, dtype=np.float64)
    std = X.std(axis=0, dtype=np.float64)
    return ((X - mean) / safe_std(mean, std)).astype(np.float32)


def one_per_cluster(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row index of one random member of each cluster, in cluster order."""
    picks = []
    for cluster in np.unique(labels):
        members = np.flatnonzero(labels == cluster)
        picks.append(members[rng.integers(len(members))])
    return np.array(picks, dtype=np.int64)


def diversity_pool(
    tile_ids: np.ndarray, X: np.ndarray, *, slide_id: str, n_clusters: int = 20, seed: int = 0
) -> ClusterPick:
    """The slide's diversity pool: K-means with ``n_clusters`` on the slide's z-scored
    features (see module doc), one random tile per cluster.

    Depends only on the slide's tiles, ``slide_id`` and ``seed`` (not on other slides or
    the order slides are processed in). Rows are taken in tile-id order, so a features
    file whose rows are shuffled gives the same pool.
    """
    if len(tile_ids) != len(X):
        raise ValueError(f"{slide_id}: {len(tile_ids)} tile ids for {len(X)} feature rows")
    order = np.argsort(tile_ids, kind="stable")
    ids, values = np.asarray(tile_ids)[order], np.asarray(X)[order]
    labels = kmeans_labels(
        standardise(values), n_clusters, seed=int_seed(seed, "diversity-kmeans", slide_id)
    )
    rows = one_per_cluster(labels, rng_for(seed, "diversity-pick", slide_id))
    return ClusterPick(ids[rows], labels[rows])
