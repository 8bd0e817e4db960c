"""The selection of one indication, slide by slide: scan, fit, score, draw.

Two passes over the features keep memory to a few slides at a time, whatever the cohort:
1. `scan_slide`: per-slide feature statistics (for the slide / cohort scalers), the
   diversity pool, and the features of labelled tiles (training data);
2. `fit_presence`: model choice (nested grouped CV) and refit of the winners as ensembles;
3. `score_slide`: every tile of the indication through the chosen ensembles: the rare arm's
   best tiles per type and the uncertainty arm's cluster representatives;
4. `assemble_selection`: the uniform draw from diversity + rare pool, then the weighted draw
   from the uncertainty pool.
Each step is a plain function of small inputs, so the flow can fan the per-slide steps out
(`run_selection(..., mapper=...)`) and a test can call any of them alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from histocurate.config import SelectionConfig
from histocurate.seeding import int_seed
from histocurate.selection.cv import (
    CVResult,
    FitParams,
    FittedCandidate,
    PresenceData,
    choose_models,
    fit_candidate,
)
from histocurate.selection.diversity import ClusterPick, diversity_pool, standardise
from histocurate.selection.presence import make_candidates, sigmoid
from histocurate.selection.scalers import GroupMoments
from histocurate.selection.sources import FeatureSource
from histocurate.selection.uncertainty import (
    ensemble_stats,
    uncertain_mask,
    uncertainty_representatives,
)

Mapper = Callable[[Callable[..., Any], Iterable[Any]], Iterable[Any]]
POOL_COLUMNS = [
    "tile_id",
    "slide_id",
    "arm",
    "encoder",
    "cluster_id",
    "rare_type",
    "rare_score",
    "model",
    "bald",
    "entropy",
    "variation_ratio",
]


@dataclass(frozen=True)
class SlideInfo:
    slide_id: str
    cohort: str
    indication: str


@dataclass
class SlideScan:
    """What pass 1 keeps of a slide."""

    slide_id: str
    cohort: str
    n_tiles: int
    moments: dict[str, GroupMoments]  # encoder -> this slide's moments (key: slide id)
    diversity: ClusterPick | None
    labelled_ids: np.ndarray
    labelled_values: dict[str, np.ndarray]


def scan_slide(
    slide: SlideInfo,
    source: FeatureSource,
    *,
    labelled_ids: np.ndarray,
    diversity: bool,
    n_clusters: int,
    seed: int,
) -> SlideScan:
    """Pass 1 over one slide (see module doc)."""
    feats = source.load(slide.slide_id)
    moments = {}
    for encoder, values in feats.values.items():
        moments[encoder] = GroupMoments(values.shape[1])
        moments[encoder].update(slide.slide_id, values)
    pick = None
    if diversity and len(feats):
        primary = source.encoders[0]
        pick = diversity_pool(
            feats.tile_ids,
            feats.values[primary],
            slide_id=slide.slide_id,
            n_clusters=n_clusters,
            seed=seed,
        )
    rows = np.flatnonzero(np.isin(feats.tile_ids, np.asarray(labelled_ids).astype(str)))
    return SlideScan(
        slide.slide_id,
        slide.cohort,
        len(feats),
        moments,
        pick,
        feats.tile_ids[rows],
        {e: v[rows] for e, v in feats.values.items()},
    )


@dataclass
class PresenceModels:
    """The chosen presence ensembles, and how they were chosen."""

    types: list[str]
    fitted: dict[str, FittedCandidate]  # candidate name -> refitted ensemble
    type_model: dict[str, tuple[str, int]]  # type -> (candidate name, output column)
    cv: CVResult
    n_candidates: int
    labelled_tiles: int


def all_moments(
    scans: Sequence[SlideScan], encoders: Sequence[str]
) -> dict[tuple[str, str], GroupMoments]:
    """Per-slide and per-cohort statistics of every scanned slide (key: (encoder, kind))."""
    out: dict[tuple[str, str], GroupMoments] = {}
    for enc in encoders:
        dim = next(s.moments[enc].dim for s in scans if enc in s.moments)
        by_slide, by_cohort = GroupMoments(dim), GroupMoments(dim)
        for s in scans:
            by_slide.merge(s.moments[enc])
            per_cohort = s.moments[enc]
            by_cohort.count[s.cohort] = (
                by_cohort.count.get(s.cohort, 0) + per_cohort.count[s.slide_id]
            )
            by_cohort.total[s.cohort] = (
                by_cohort.total.get(s.cohort, 0.0) + per_cohort.total[s.slide_id]
            )
            by_cohort.squares[s.cohort] = (
                by_cohort.squares.get(s.cohort, 0.0) + per_cohort.squares[s.slide_id]
            )
        out[(enc, "slide")], out[(enc, "cohort")] = by_slide, by_cohort
    return out


def fit_presence(
    scans: Sequence[SlideScan],
    labels: pd.DataFrame,
    *,
    encoders: Sequence[str],
    config: SelectionConfig,
    notes: list[str],
) -> PresenceModels | None:
    """Choose and refit one presence ensemble per rare type (None: nothing to learn from).

    ``labels``: index tile_id, one bool column per rare type. Types without a positive
    tile are left out, with a note.
    """
    ids = np.concatenate([s.labelled_ids for s in scans]) if scans else np.zeros(0, str)
    if len(ids) == 0:
        notes.append("no labelled tile has features: the rare and uncertainty arms are skipped")
        return None
    y_all = labels.reindex(ids).to_numpy(dtype=bool)
    positives = y_all.sum(axis=0)
    types = [t for t, n in zip(labels.columns, positives, strict=True) if 0 < n < len(ids)]
    for t, n in zip(labels.columns, positives, strict=True):
        if n == 0:
            notes.append(f"{t}: no labelled tile contains one; no presence model for this type")
        elif n == len(ids):
            notes.append(
                f"{t}: every labelled tile contains one (no negative to learn from); no "
                "presence model for this type"
            )
    if not types:
        notes.append("no rare type has a positive tile: the rare and uncertainty arms are skipped")
        return None
    data = PresenceData(
        features={e: np.concatenate([s.labelled_values[e] for s in scans]) for e in encoders},
        labels=labels.reindex(ids)[types].to_numpy(dtype=bool),
        types=types,
        slides=np.concatenate([np.full(len(s.labelled_ids), s.slide_id) for s in scans]),
        cohorts=np.concatenate([np.full(len(s.labelled_ids), s.cohort) for s in scans]),
        moments=all_moments(scans, encoders),
    )
    candidates = make_candidates(encoders, config.hidden_sizes, config.scalers)
    if len(encoders) == 1:
        notes.append(
            f"one encoder only ({encoders[0]}): {len(candidates)} candidates per type instead of 12"
        )
    params = FitParams(
        epochs=config.epochs, learning_rate=config.learning_rate, members=config.ensemble_members
    )
    cv = choose_models(
        data,
        candidates,
        outer_folds=config.outer_folds,
        inner_folds=config.inner_folds,
        params=params,
        seed=config.seed,
    )
    notes.extend(cv.notes)
    everything = np.arange(len(data))
    fitted: dict[str, FittedCandidate] = {}
    for cand in sorted(set(cv.chosen.values()), key=lambda c: c.name):
        fitted[cand.name] = fit_candidate(
            cand,
            data,
            everything,
            params=params,
            members=config.ensemble_members,
            seed=int_seed(config.seed, "refit", cand.name),
        )
    type_model = {t: (cv.chosen[t].name, i) for i, t in enumerate(types)}
    return PresenceModels(types, fitted, type_model, cv, len(candidates), len(data))


@dataclass
class SlideScores:
    """What pass 2 keeps of a slide."""

    slide_id: str
    # plain records, not DataFrames: thousands of small Arrow-backed frames kept alive across
    # slides pinned ~60 MB of allocator memory each (measured), records cost nothing
    rare: list[dict[str, Any]]  # the rare arm's pool rows (POOL_COLUMNS keys)
    uncertain: list[dict[str, Any]]  # the uncertainty arm's representatives
    n_uncertain: int  # tiles passing the probability and BALD tests (any type)
    predicted: dict[str, int] = field(default_factory=dict)  # type -> tiles with mean P > 0.5


def score_slide(
    slide: SlideInfo,
    source: FeatureSource,
    models: PresenceModels,
    *,
    config: SelectionConfig,
) -> SlideScores:
    """Pass 2 over one slide: presence, uncertainty, rare top tiles, uncertainty clusters."""
    feats = source.load(slide.slide_id)
    n = len(feats)
    slides, cohorts = np.full(n, slide.slide_id), np.full(n, slide.cohort)
    logits = {
        name: f.member_logits(feats.values, slides=slides, cohorts=cohorts)
        for name, f in models.fitted.items()
    }
    rare_rows: list[dict[str, Any]] = []
    unc_best: dict[int, tuple[float, dict[str, Any]]] = {}
    predicted = {}
    for t in models.types:
        name, col = models.type_model[t]
        member_logits = logits[name][:, :, col]
        stats = ensemble_stats(sigmoid(member_logits))
        encoder = models.fitted[name].candidate.feature_set
        predicted[t] = int((stats.mean > 0.5).sum())
        base = {
            "slide_id": slide.slide_id,
            "arm": "rare",
            "encoder": encoder,
            "cluster_id": None,
            "rare_type": t,
            "model": name,
        }
        if "rare" in config.arms and n:
            # best mean P first; ties (float32 P saturates at 1 for confident tiles, which
            # then came out in tile-id order) broken by the members' mean logit
            top = np.lexsort((-member_logits.mean(axis=0), -stats.mean))[: config.top_per_slide]
            for r in top.tolist():
                rare_rows.append(base | _why(feats.tile_ids[r], stats, r))
        mask = uncertain_mask(
            stats.mean,
            stats.bald,
            prob_threshold=config.prob_threshold,
            percentile=config.bald_percentile,
        )
        for r in np.flatnonzero(mask).tolist():  # per tile keep the type with the highest BALD
            if r not in unc_best or stats.bald[r] > unc_best[r][0]:
                unc_best[r] = (float(stats.bald[r]), base | _why(feats.tile_ids[r], stats, r))
    unc: list[dict[str, Any]] = []
    if "uncertainty" in config.arms and unc_best:
        rows = np.array(sorted(unc_best))
        bald = np.array([unc_best[r][0] for r in rows])
        low, high = config.uncertainty_clusters
        picks, clusters = uncertainty_representatives(
            standardise(feats.values[source.encoders[0]])[rows],  # the slide's z-scores
            bald,
            slide_id=slide.slide_id,
            seed=config.seed,
            low=low,
            high=high,
        )
        unc = [
            unc_best[rows[p]][1] | {"arm": "uncertainty", "cluster_id": int(c)}
            for p, c in zip(picks, clusters, strict=True)
        ]
    return SlideScores(slide.slide_id, rare_rows, unc, len(unc_best), predicted)


def _why(tile_id: str, stats: Any, r: int) -> dict[str, Any]:
    return {
        "tile_id": str(tile_id),
        "rare_score": float(stats.mean[r]),
        "bald": float(stats.bald[r]),
        "entropy": float(stats.entropy[r]),
        "variation_ratio": float(stats.variation_ratio[r]),
    }
