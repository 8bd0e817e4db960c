"""`run_selection`: one indication, end to end, over a `FeatureSource` (no files written).

`assemble_selection` makes the two draws: N0 tiles uniformly from the diversity pool
merged with the rare arm's tiles, then the uncertainty draw from the uncertainty pool
(tiles already chosen left out), each slide weighted by its number of uncertain tiles,
clipped to [0.5, 2] x the mean weight, and spread evenly over that slide's pool tiles.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from data_schema import SELECTION
from data_schema.selection import ARMS
from histocurate.config import SelectionConfig
from histocurate.errors import UserInputError
from histocurate.selection.cv import CVResult
from histocurate.selection.draw import uniform_draw, weighted_draw
from histocurate.selection.sources import FeatureSource
from histocurate.selection.stage import (
    POOL_COLUMNS,
    PresenceModels,
    SlideInfo,
    SlideScan,
    SlideScores,
    fit_presence,
    scan_slide,
    score_slide,
)
from histocurate.selection.uncertainty import clipped_weights

Mapper = Callable[[Callable[[Any], Any], Iterable[Any]], Iterable[Any]]
SELECTION_COLUMNS = SELECTION.column_names  # the columns of selection.parquet


@dataclass
class SelectionResult:
    """The selection of one indication and everything the report shows about it."""

    indication: str
    selection: pd.DataFrame  # SELECTION_COLUMNS
    per_slide: pd.DataFrame
    predicted: pd.DataFrame  # slide_id x rare type: tiles predicted to hold one
    cv: CVResult | None
    encoders: list[str]
    arms: list[str]
    n_candidates: int
    labelled_tiles: int
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    # every tile the rare arm kept (top per slide and type, before the merge and the draw;
    # a tile kept for two types has two rows): POOL_COLUMNS
    rare_pool: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=POOL_COLUMNS))


def _diversity_rows(scans: Sequence[SlideScan], encoder: str) -> pd.DataFrame:
    """The diversity pools of all slides as one frame (built once, not per slide)."""
    picks = [(s.slide_id, s.diversity) for s in scans if s.diversity is not None]
    if not picks:
        return pd.DataFrame(columns=POOL_COLUMNS)
    return pd.DataFrame(
        {
            "tile_id": np.concatenate([p.tile_ids.astype(str) for _, p in picks]),
            "slide_id": np.concatenate([np.full(len(p.tile_ids), s) for s, p in picks]),
            "arm": "diversity",
            "encoder": encoder,
            "cluster_id": np.concatenate([p.cluster_ids for _, p in picks]).astype("int64"),
        }
    ).reindex(columns=POOL_COLUMNS)


def _concat(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    frames = [f.astype(object) for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=POOL_COLUMNS)


def _records(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=POOL_COLUMNS) if rows else pd.DataFrame(columns=POOL_COLUMNS)


def main_pool(diversity: pd.DataFrame, rare: pd.DataFrame) -> pd.DataFrame:
    """Diversity pool merged with the rare arm's tiles, one row per tile.

    A tile kept for several rare types keeps its best-scoring type; a tile in both pools is
    labelled ``rare`` and keeps its diversity cluster id.
    """
    rare = rare.sort_values(["tile_id", "rare_score"], ascending=[True, False], kind="stable")
    rare = rare.drop_duplicates("tile_id")
    clusters = diversity.set_index("tile_id")["cluster_id"]
    rare = rare.assign(cluster_id=rare["tile_id"].map(clusters))
    pool = _concat([rare, diversity[~diversity["tile_id"].isin(rare["tile_id"])]])
    return pool.sort_values("tile_id", kind="stable").reset_index(drop=True)


def assemble_selection(
    indication: str,
    diversity: pd.DataFrame,
    scores: Sequence[SlideScores],
    *,
    config: SelectionConfig,
    notes: list[str],
) -> pd.DataFrame:
    """The two draws (see module doc); one row per selected tile, SELECTION_COLUMNS."""
    rare = _records([r for s in scores for r in s.rare] if "rare" in config.arms else [])
    pool = main_pool(diversity if "diversity" in config.arms else _concat([]), rare)
    chosen = [pd.DataFrame(columns=[*POOL_COLUMNS, "draw_weight"])]
    if len(pool):
        if len(pool) < config.n_tiles:
            notes.append(
                f"the diversity + rare pool holds {len(pool)} tiles, fewer than the "
                f"{config.n_tiles} asked: all are taken"
            )
        chosen.append(uniform_draw(pool, config.n_tiles, seed=config.seed, key=indication))
    if "uncertainty" in config.arms and config.n_uncertain and scores:  # scores: models ran
        taken = set(chosen[-1]["tile_id"]) if len(chosen) > 1 else set()
        unc = _records([r for s in scores for r in s.uncertain])
        unc = unc[~unc["tile_id"].isin(taken)].reset_index(drop=True)
        counts = {s.slide_id: s.n_uncertain for s in scores}
        slides = sorted(set(unc["slide_id"]))
        slide_w = dict(
            zip(
                slides,
                clipped_weights(
                    np.array([counts[s] for s in slides]),
                    low=config.weight_clip[0],
                    high=config.weight_clip[1],
                ),
                strict=True,
            )
        )
        per_slide = unc["slide_id"].value_counts()
        weights = np.array([slide_w[s] / per_slide[s] for s in unc["slide_id"]], dtype=float)
        if len(unc) < config.n_uncertain:
            notes.append(
                f"the uncertainty pool holds {len(unc)} tiles, fewer than the "
                f"{config.n_uncertain} asked: all are taken"
            )
        chosen.append(
            weighted_draw(unc, weights, config.n_uncertain, seed=config.seed, key=indication)
        )
    out = (
        pd.concat([c.astype(object) for c in chosen if len(c)], ignore_index=True)
        if any(len(c) for c in chosen)
        else pd.DataFrame(columns=[*POOL_COLUMNS, "draw_weight"])
    )
    out["indication"] = indication
    return _typed(out.reindex(columns=SELECTION_COLUMNS))


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    floats = ["rare_score", "bald", "entropy", "variation_ratio", "draw_weight"]
    out = frame.copy()
    for c in floats:
        out[c] = pd.to_numeric(out[c], errors="coerce").astype("float64")
    out["cluster_id"] = pd.to_numeric(out["cluster_id"], errors="coerce").astype("Int64")
    for c in ["tile_id", "slide_id", "indication", "arm", "encoder", "rare_type", "model"]:
        out[c] = out[c].astype("string")
    return out.reset_index(drop=True)


def run_selection(
    indication: str,
    slides: pd.DataFrame,
    source: FeatureSource,
    labels: pd.DataFrame | None,
    *,
    config: SelectionConfig,
    mapper: Mapper = map,
) -> SelectionResult:
    """Select tiles of ``indication``.

    ``slides``: slide_id, cohort, indication, n_tiles (tiles with features) of the
    indication's slides and of every slide holding labelled tiles. ``labels``: tile_id,
    slide_id and one bool column per rare type (None: the rare and uncertainty arms are
    skipped, with a note). ``mapper`` runs the per-slide steps (``map``, or a pool's map).
    """
    notes: list[str] = []
    timings: dict[str, float] = {}
    arms: list[str] = [a for a in ARMS if a in config.arms]
    check_slides(slides)
    if labels is not None:
        labels = checked_labels(labels, config.rare_types, notes)
    if arms == ["uncertainty"] and config.n_uncertain == 0:
        raise UserInputError("--arms uncertainty with --n-uncertain 0 selects nothing")
    encoders = list(source.encoders)
    target = slides[slides["indication"] == indication]
    if target.empty:
        raise UserInputError(
            f"no slide of indication {indication!r} has features; run "
            "`histocurate tile` and `histocurate embed` first, or check the name"
        )
    learn = bool({"rare", "uncertainty"} & set(arms))
    if learn and labels is None:
        if "diversity" not in arms:
            raise UserInputError(
                f"--arms {','.join(arms)} needs presence labels (--labels FILE with tile_id, "
                "label; a campaign's consensus; or imported points) and there are none: pass "
                "--labels, or add the diversity arm"
            )
        notes.append(
            "no presence labels (--labels, a consensus or imported points): the rare and "
            "uncertainty arms are skipped"
        )
        learn = False
        arms = [a for a in arms if a == "diversity"]  # the arms that run, as reported
    # tiles asked of the arms that will run (uncertainty only with presence models)
    asked = config.n_tiles * bool({"diversity", "rare"} & set(arms)) + config.n_uncertain * (
        "uncertainty" in arms and learn
    )
    available = int(target["n_tiles"].sum())
    if available < asked:
        raise UserInputError(
            f"indication {indication} has {available} tiles with features but "
            f"{asked} were asked; lower --n-tiles / --n-uncertain"
        )
    labelled = (
        labels if learn and labels is not None else pd.DataFrame(columns=["tile_id", "slide_id"])
    )
    by_slide = {
        str(s): g["tile_id"].astype(str).to_numpy() for s, g in labelled.groupby("slide_id")
    }
    scan_slides = slides[
        (slides["indication"] == indication) | slides["slide_id"].isin(list(by_slide))
    ]
    infos = [
        SlideInfo(str(r.slide_id), str(r.cohort), str(r.indication))
        for r in scan_slides.sort_values("slide_id").itertuples()
    ]

    t0 = time.perf_counter()
    scans: list[SlideScan] = list(
        mapper(
            partial(_scan, source=source, by_slide=by_slide, indication=indication, config=config),
            infos,
        )
    )
    timings["scan"] = time.perf_counter() - t0
    primary = encoders[0]
    diversity = _diversity_rows(scans, primary)

    models: PresenceModels | None = None
    if learn and labels is not None:
        t0 = time.perf_counter()
        types = [t for t in config.rare_types if t in labels.columns]
        table = labels.set_index("tile_id")[types]  # one row per tile (checked_labels)
        fit = partial(_fit, scans=scans, labels=table, encoders=encoders, config=config)
        models, fit_notes = next(iter(mapper(fit, [FIT_ITEM])))  # one step (a task in Prefect)
        notes.extend(fit_notes)
        timings["fit"] = time.perf_counter() - t0
    scores: list[SlideScores] = []
    targets = [i for i in infos if i.indication == indication]
    if models is not None:
        t0 = time.perf_counter()
        scores = list(
            mapper(partial(score_slide, source=source, models=models, config=config), targets)
        )
        timings["score"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    selection = assemble_selection(indication, diversity, scores, config=config, notes=notes)
    timings["draw"] = time.perf_counter() - t0
    if selection.empty:
        raise UserInputError(
            f"no tile of {indication} could be selected with --arms {','.join(arms)}: "
            + "; ".join(notes or ["every pool is empty"])
            + ". Ask for more arms (--arms diversity,rare,uncertainty) or label more tiles"
        )
    per_slide, predicted = _per_slide(scans, scores, selection, targets, diversity)
    return SelectionResult(
        indication,
        selection,
        per_slide,
        predicted,
        models.cv if models else None,
        encoders,
        arms,
        models.n_candidates if models else 0,
        models.labelled_tiles if models else 0,
        notes,
        timings,
        _records([r for s in scores for r in s.rare]),
    )


FIT_ITEM = "presence-models"
"""The one item of the fit step (its task is named ``fit-presence-models``)."""


def _fit(
    item: str,
    *,
    scans: Sequence[SlideScan],
    labels: pd.DataFrame,
    encoders: Sequence[str],
    config: SelectionConfig,
) -> tuple[PresenceModels | None, list[str]]:
    """The presence models' fit as one step of ``mapper``, so that a flow runs it as a task;
    its notes are returned (a task may run in another process)."""
    notes: list[str] = []
    return fit_presence(scans, labels, encoders=encoders, config=config, notes=notes), notes


def check_slides(slides: pd.DataFrame) -> None:
    """The slides table: its columns, one row per slide."""
    missing = [c for c in ("slide_id", "cohort", "indication", "n_tiles") if c not in slides]
    if missing:
        raise UserInputError(f"the slides table lacks column(s) {missing}")
    twice = slides["slide_id"][slides["slide_id"].duplicated()].unique().tolist()
    if twice:
        raise UserInputError(f"slide(s) {twice[:5]} listed twice in the slides table")


def checked_labels(labels: pd.DataFrame, types: Sequence[str], notes: list[str]) -> pd.DataFrame:
    """Presence labels as the arms need them: one row per tile, one bool column per type.

    Rows of the same tile are combined (present if any row says so: the result does not
    depend on their order); a tile id on two slides, or a value that is not a boolean
    (blank, text), is an error naming it. Configured types without a column get a note.
    """
    missing = [c for c in ("tile_id", "slide_id") if c not in labels]
    if missing:
        raise UserInputError(f"presence labels lack column(s) {missing}")
    present = [t for t in types if t in labels.columns]
    absent = [t for t in types if t not in labels.columns]
    if absent:
        notes.append(f"presence labels have no column for {absent}: no presence model for them")
    for t in present:
        values = labels[t]
        if values.isna().any() or not (
            pd.api.types.is_bool_dtype(values) or set(pd.unique(values)) <= {0, 1}
        ):
            bad = values[values.isna() | ~values.isin([True, False, 0, 1])].head(3).tolist()
            raise UserInputError(
                f"presence labels, column {t!r}: values must be true/false (or 1/0), found "
                f"{bad}; fill blanks with false"
            )
    ids = labels["tile_id"].astype(str)
    slides_of = labels.assign(tile_id=ids).groupby("tile_id")["slide_id"].nunique()
    shared = slides_of[slides_of > 1].index.tolist()
    if shared:
        raise UserInputError(
            f"tile id(s) {shared[:3]} label tiles of several slides: tile ids must be unique "
            "across slides (e.g. <slide_id>_x<x>_y<y>)"
        )
    combined = (
        labels.assign(tile_id=ids, **{t: labels[t].astype(bool) for t in present})
        .groupby("tile_id", sort=True)
        .agg({"slide_id": "first", **{t: "any" for t in present}})
        .reset_index()
    )
    return combined


def _scan(
    info: SlideInfo,
    *,
    source: FeatureSource,
    by_slide: dict[str, np.ndarray],
    indication: str,
    config: SelectionConfig,
) -> SlideScan:
    return scan_slide(
        info,
        source,
        labelled_ids=by_slide.get(info.slide_id, np.zeros(0, str)),
        diversity="diversity" in config.arms and info.indication == indication,
        n_clusters=config.kmeans_clusters,
        seed=config.seed,
    )


def _per_slide(
    scans: Sequence[SlideScan],
    scores: Sequence[SlideScores],
    selection: pd.DataFrame,
    targets: Sequence[SlideInfo],
    diversity: pd.DataFrame,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    wanted = {t.slide_id for t in targets}
    by_score = {s.slide_id: s for s in scores}
    picked = selection.groupby(["slide_id", "arm"]).size()
    rows = []
    for scan in scans:
        if scan.slide_id not in wanted:
            continue
        sc = by_score.get(scan.slide_id)
        rows.append(
            {
                "slide_id": scan.slide_id,
                "cohort": scan.cohort,
                "tiles": scan.n_tiles,
                "labelled": len(scan.labelled_ids),
                "diversity_pool": int((diversity["slide_id"] == scan.slide_id).sum()),
                "rare_pool": len(sc.rare) if sc else 0,
                "uncertain_tiles": sc.n_uncertain if sc else 0,
                "uncertainty_pool": len(sc.uncertain) if sc else 0,
                **{f"selected_{a}": int(picked.get((scan.slide_id, a), 0)) for a in ARMS},
            }
        )
    predicted = pd.DataFrame([{"slide_id": s.slide_id, **s.predicted} for s in scores])
    return pd.DataFrame(rows), predicted
