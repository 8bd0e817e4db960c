"""Presence predictors: tile features -> P(at least one cell of a rare type on the tile).

`PresenceMLP` is a scikit-learn style classifier holding one small MLP per output column
(rare type) and per ensemble member. The networks are independent (no shared weights) but
trained in one batched torch loop, because many tiny networks trained one by one would
spend their time in Python. Ensemble members differ by initialisation and by a Poisson
bootstrap of the rows.

Training is class-balanced (each type's positives and negatives weigh the same): that is
what model choice by balanced accuracy wants, and rare positives are not drowned. But a
balanced network estimates the posterior under a 50 % prior, not P(presence): at a
training prevalence of 5 %, its 0.5 is a true 0.05. The probabilities given out
(`member_proba`, `predict_proba`) are therefore moved back to the training prevalence pi
by the prior-shift correction logit += log(pi / (1 - pi)) (Saerens et al. 2002), so that
"mean P > 0.4" in the uncertainty arm and "predicted to hold one" in the report mean what
they say. The balanced scores stay available (``balanced=True``): their 0.5 is the
decision that maximises balanced accuracy (`predict`, and the CV scores).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, ClassifierMixin

from histocurate.selection.scalers import ScalerKind

_CHUNK = 65536  # rows per forward pass at prediction time (bounds memory)


@dataclass(frozen=True, slots=True)
class Candidate:
    """One presence-model candidate: which features, which MLP, which z-scoring."""

    feature_set: str
    hidden: tuple[int, ...]
    scaler: ScalerKind

    @property
    def name(self) -> str:
        return f"{self.feature_set}/mlp{'x'.join(map(str, self.hidden))}/z-{self.scaler}"


def make_candidates(
    feature_sets: Sequence[str],
    hidden_sizes: Sequence[Sequence[int]],
    scalers: Sequence[ScalerKind],
) -> list[Candidate]:
    """Every combination: depths x feature sets x scalers (12 with 2 encoders, 6 with one)."""
    return [
        Candidate(fs, tuple(int(h) for h in hidden), sc)
        for fs in feature_sets
        for hidden in hidden_sizes
        for sc in scalers
    ]


def presence_labels(
    annotations: pd.DataFrame,
    types: Sequence[str],
    *,
    tile_ids: Sequence[str] | np.ndarray | None = None,
) -> pd.DataFrame:
    """Tile-level presence labels: one row per tile, one bool column per type.

    ``annotations`` is any table with ``tile_id`` and ``label`` (points, consensus, truth in
    tiles). The labelled tiles are ``tile_ids`` when given (e.g. every tile of a slide with
    complete truth, including tiles with no nucleus), else the tiles in ``annotations``.
    """
    missing = [c for c in ("tile_id", "label") if c not in annotations.columns]
    if missing:
        raise ValueError(f"annotations need columns tile_id and label; missing {missing}")
    ids = pd.Index(
        pd.unique(annotations["tile_id"].astype(str)) if tile_ids is None else list(tile_ids),
        name="tile_id",
    )
    present = annotations[annotations["label"].isin(list(types))]
    table = pd.crosstab(present["tile_id"].astype(str), present["label"]) > 0
    table = table.reindex(index=ids, columns=list(types), fill_value=False)
    return table.astype(bool)


class PresenceMLP(ClassifierMixin, BaseEstimator):
    """Independent class-balanced binary MLPs, one per output column and ensemble member.

    ``fit(X, y)`` with ``y`` of shape (n,) gives a plain binary classifier; with (n, T) a
    multi-output one (``predict_proba`` then returns (n, T) probabilities of presence, as
    scikit-learn's MLPClassifier does for multi-label targets). ``member_proba`` returns the
    members' probabilities (members, n, T), the input of the uncertainty measures.
    ``n_threads`` torch threads run fit and predict (see `_torch_threads`).
    """

    def __init__(
        self,
        hidden_layer_sizes: tuple[int, ...] = (32,),
        *,
        n_members: int = 1,
        bootstrap: bool = True,
        epochs: int = 20,
        batch_size: int = 256,
        learning_rate: float = 3e-3,
        alpha: float = 1e-4,
        n_threads: int = 1,
        random_state: int = 0,
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.n_members = n_members
        self.bootstrap = bootstrap
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.alpha = alpha
        self.n_threads = n_threads
        self.random_state = random_state

    # -- training -------------------------------------------------------------------------
    def fit(self, X: np.ndarray, y: np.ndarray) -> PresenceMLP:
        with _torch_threads(self.n_threads):
            return self._fit(X, y)

    def _fit(self, X: np.ndarray, y: np.ndarray) -> PresenceMLP:
        X = _as_features(X)
        y = np.asarray(y)
        self.multi_output_ = y.ndim == 2
        Y = (y.reshape(len(y), -1) > 0).astype(np.float32)
        if len(Y) != len(X):
            raise ValueError(f"X has {len(X)} rows but y has {len(Y)}")
        n, d = X.shape
        n_types, members = Y.shape[1], int(self.n_members)
        self.n_features_in_, self.n_outputs_, self.classes_ = d, n_types, np.array([0, 1])
        self.n_members_ = members  # what was fitted: set_params after fit changes nothing
        self.positives_ = Y.sum(axis=0).astype(int)
        # training prevalence per type, kept off 0 and 1 so the prior shift stays finite
        self.prevalence_ = np.clip(self.positives_ / max(len(Y), 1), 1e-4, 1 - 1e-4)
        rng = np.random.default_rng(self.random_state)
        gen = torch.Generator().manual_seed(int(self.random_state))

        pos = Y.sum(axis=0)
        w_pos = np.where(pos > 0, n / (2.0 * np.maximum(pos, 1)), 0.0)
        w_neg = np.where(n - pos > 0, n / (2.0 * np.maximum(n - pos, 1)), 0.0)
        balance = Y * w_pos + (1 - Y) * w_neg  # (n, T)
        boot = (
            rng.poisson(1.0, size=(members, n)).astype(np.float32)
            if self.bootstrap and members > 1
            else np.ones((members, n), np.float32)
        )
        # column b = member * T + type, matching the parameter layout below
        weight = (boot[:, :, None] * balance[None, :, :]).transpose(1, 0, 2).reshape(n, -1)
        target = np.tile(Y, (1, members))

        params = _init_params(d, tuple(self.hidden_layer_sizes), members * n_types, gen)
        opt = torch.optim.Adam(params, lr=self.learning_rate, weight_decay=self.alpha)
        Xt, Tt, Wt = torch.from_numpy(X), torch.from_numpy(target), torch.from_numpy(weight)
        bs = max(1, min(int(self.batch_size), n))
        for _ in range(int(self.epochs)):
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, bs):
                rows = order[start : start + bs]
                logits = _forward(params, Xt[rows])
                loss = torch.nn.functional.binary_cross_entropy_with_logits(
                    logits, Tt[rows], weight=Wt[rows], reduction="sum"
                ) / len(rows)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        self.params_ = [p.detach().clone() for p in params]
        return self

    # -- prediction -----------------------------------------------------------------------
    def member_logits(self, X: np.ndarray, *, balanced: bool = False) -> np.ndarray:
        """Logits of every member, (n_members, n, n_outputs), float32: of P(presence), or of
        the class-balanced score when ``balanced`` (see module doc)."""
        X = _as_features(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, the model {self.n_features_in_}")
        out = np.empty((len(X), len(self.params_[-1])), np.float32)
        with torch.no_grad(), _torch_threads(self.n_threads):
            for start in range(0, len(X), _CHUNK):
                chunk = torch.from_numpy(X[start : start + _CHUNK])
                out[start : start + _CHUNK] = _forward(self.params_, chunk).numpy()
        logits = out.reshape(len(X), self.n_members_, self.n_outputs_).transpose(1, 0, 2)
        if not balanced:
            prior = np.log(self.prevalence_ / (1 - self.prevalence_)).astype(np.float32)
            logits = logits + prior
        return logits

    def member_proba(self, X: np.ndarray, *, balanced: bool = False) -> np.ndarray:
        """Probabilities of presence of every member: (n_members, n, n_outputs), float32
        (class-balanced scores when ``balanced``)."""
        return sigmoid(self.member_logits(X, balanced=balanced))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """P(presence), the members' mean, at the training prevalence."""
        p = self.member_proba(X).mean(axis=0)
        return p if self.multi_output_ else np.column_stack([1 - p[:, 0], p[:, 0]])

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The balanced decision: mean class-balanced score above 0.5."""
        p = self.member_proba(X, balanced=True).mean(axis=0) > 0.5
        return p.astype(int) if self.multi_output_ else p[:, 0].astype(int)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(logits, -60, 60)))).astype(np.float32)


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch threads. Small networks gain nothing from more, and on a busy
    machine torch's thread pool can make them many times slower (measured: 30x at load 8
    on 2 cores), so the default is one; parallelism comes from slides, not from GEMMs."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _as_features(X: np.ndarray) -> np.ndarray:
    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"expected a 2-D feature array, got shape {X.shape}")
    return X


def _init_params(
    d: int, hidden: tuple[int, ...], n_models: int, gen: torch.Generator
) -> list[torch.Tensor]:
    """Parameters of ``n_models`` MLPs: the first layer as one wide matrix (one GEMM for all
    models), the next layers and the output as per-model batched weights."""

    def uniform(shape: tuple[int, ...], fan_in: int) -> torch.Tensor:
        bound = 1.0 / math.sqrt(fan_in)
        return ((torch.rand(shape, generator=gen) * 2 - 1) * bound).requires_grad_()

    if not hidden:
        raise ValueError("hidden_layer_sizes must have at least one layer")
    params = [uniform((d, n_models * hidden[0]), d), uniform((n_models * hidden[0],), d)]
    for h_in, h_out in itertools.pairwise(hidden):
        params += [uniform((n_models, h_in, h_out), h_in), uniform((n_models, 1, h_out), h_in)]
    params += [uniform((n_models, hidden[-1]), hidden[-1]), uniform((n_models,), hidden[-1])]
    return params


def _forward(params: Sequence[torch.Tensor], X: torch.Tensor) -> torch.Tensor:
    """Logits (n, n_models)."""
    w_out, b_out = params[-2], params[-1]
    n_models = w_out.shape[0]
    h = torch.relu(torch.addmm(params[1], X, params[0]))  # (n, models * h0)
    h = h.view(len(X), n_models, -1)
    middle = params[2:-2]
    if middle:
        h = h.transpose(0, 1)  # (models, n, h)
        for w, b in zip(middle[0::2], middle[1::2], strict=True):
            h = torch.relu(torch.baddbmm(b, h, w))
        h = h.transpose(0, 1)
    return (h * w_out).sum(-1) + b_out
