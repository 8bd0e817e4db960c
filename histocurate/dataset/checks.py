"""Checks of a build's input rows, each failing with the file, the row and what to do.

A campaign's tables are written by the pipeline's own stages, so a row that fails here
means a table edited by hand, written by another tool, or damaged: the build stops before
writing anything, naming the first offending row (and how many more there are).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import shapely

from histocurate.campaign import AnnotatedTiles
from histocurate.errors import UserInputError
from histocurate.labels import ANNOTATION_LABELS, LABELS


def _fail(
    rows: pd.DataFrame, what: str | Callable[[pd.Series], str], fix: str, id_column: str
) -> None:
    first = rows.iloc[0]
    more = f" ({len(rows) - 1} more row(s) like it)" if len(rows) > 1 else ""
    raise UserInputError(
        f"{first['origin']}: row {int(first['row'])} (tile {first['tile_id']}, {id_column} "
        f"{first[id_column]}): {what(first) if callable(what) else what}{more}; {fix}"
    )


def check_masks(masks: pd.DataFrame, annotated: AnnotatedTiles, project: str) -> None:
    """Masks rows: known tiles, labels of the ontology, no duplicate annotation ids."""
    fix = f"fix the file or rerun `histocurate segment --project {project} --force`"
    foreign = masks[~masks["tile_id"].isin(annotated.tiles.index)]
    if len(foreign):
        _fail(foreign, f"tile not exported to {project!r}", fix, "annotation_id")
    bad = masks[~masks["label"].isin(ANNOTATION_LABELS)]
    if len(bad):
        _fail(
            bad,
            lambda r: (
                f"label {r['label']!r} is not in the ontology (expected one of "
                f"{', '.join(ANNOTATION_LABELS)})"
            ),
            fix,
            "annotation_id",
        )
    dup = masks[masks["annotation_id"].duplicated(keep=False)]
    if len(dup):
        _fail(
            dup.sort_values("annotation_id"),
            "duplicate nucleus row: this annotation id "
            "appears more than once in the campaign's masks",
            fix,
            "annotation_id",
        )


def check_consensus(
    consensus: pd.DataFrame, origin: object, annotated: AnnotatedTiles, project: str
) -> None:
    """Consensus rows: known tiles, labels of the ontology, no duplicate consensus ids."""
    frame = consensus.assign(origin=str(origin), row=np.arange(len(consensus)))
    fix = f"fix the file or rerun `histocurate consensus --project {project}`"
    foreign = frame[~frame["tile_id"].isin(annotated.tiles.index)]
    if len(foreign):
        _fail(foreign, f"tile not exported to {project!r}", fix, "consensus_id")
    bad = frame[frame["label"].notna() & ~frame["label"].isin(LABELS)]
    if len(bad):
        _fail(bad, lambda r: f"label {r['label']!r} is not in the ontology", fix, "consensus_id")
    sets = frame["labels"].map(lambda v: [x for x in v if x not in ANNOTATION_LABELS])
    bad = frame[sets.map(len) > 0]
    if len(bad):
        _fail(
            bad,
            lambda r: f"labels {list(r['labels'])} hold a label outside the ontology",
            fix,
            "consensus_id",
        )
    dup = frame[frame["consensus_id"].duplicated(keep=False)]
    if len(dup):
        _fail(
            dup.sort_values("consensus_id"),
            "duplicate nucleus row: this consensus id appears more than once",
            fix,
            "consensus_id",
        )


def parse_polygons(nuclei: pd.DataFrame, sides: pd.Series, project: str) -> np.ndarray:
    """The nuclei's polygons as shapely geometries, checked: WKB, (multi)polygons, and at
    least partly inside their tile (``sides``: tile side in pixels by tile id)."""
    fix = (
        f"fix the file, or rerun `histocurate segment --project {project} --force` (masks) / "
        f"`histocurate consensus --project {project}` (consensus)"
    )
    id_column = "source_id"
    values = nuclei["polygon"].to_numpy()
    try:
        geoms = shapely.from_wkb(values)
    except Exception:
        bad = np.zeros(len(values), dtype=bool)
        for k, value in enumerate(values):
            try:
                shapely.from_wkb(value)
            except Exception:
                bad[k] = True
        _fail(nuclei[bad], "polygon is not valid WKB", fix, id_column)
        raise  # unreachable: _fail raises
    kinds = shapely.get_type_id(geoms)
    bad = ~np.isin(kinds, (3, 6)) & ~shapely.is_empty(geoms)
    if bad.any():
        _fail(
            nuclei[bad],
            lambda r: f"polygon is not a polygon (a {shapely.from_wkb(r['polygon']).geom_type})",
            fix,
            id_column,
        )
    side = nuclei["tile_id"].map(sides).to_numpy(dtype=np.float64)
    bounds = shapely.bounds(geoms)
    filled = ~shapely.is_empty(geoms)
    outside = filled & (
        (bounds[:, 2] <= 0) | (bounds[:, 3] <= 0) | (bounds[:, 0] >= side) | (bounds[:, 1] >= side)
    )
    if outside.any():
        _fail(
            nuclei[outside],
            lambda r: (
                f"polygon lies outside its tile (bounds "
                f"{tuple(round(float(b), 1) for b in shapely.from_wkb(r['polygon']).bounds)}, "
                f"tile 0..{int(sides[r['tile_id']])} px)"
            ),
            fix,
            id_column,
        )
    return np.asarray(geoms, dtype=object)
