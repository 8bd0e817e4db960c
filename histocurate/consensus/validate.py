"""Check and normalise the annotated masks that consensus starts from.

Errors are for input that cannot mean anything (no tile, duplicate ids, a label outside the
ontology, a missing click); a mask that is merely broken (invalid or empty polygon) is
repaired when possible, otherwise its annotation takes no part in matching and is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry

from histocurate.errors import UserInputError
from histocurate.labels import cell_type

REQUIRED_COLUMNS = ("annotation_id", "tile_id", "annotator", "x", "y", "label")
GEOMETRY_COLUMNS = ("geometry", "polygon")


@dataclass(frozen=True, slots=True)
class PreparedMasks:
    """Validated annotations (one row each, in input order) and their geometries."""

    frame: pd.DataFrame  # REQUIRED_COLUMNS, labels as ontology ids, annotation_id int64/str
    geoms: np.ndarray  # shapely geometries; None where no usable mask
    n_repaired: int  # invalid polygons made valid
    n_unusable: int  # missing, empty or non-polygonal masks


def _rows(index: pd.Index, limit: int = 5) -> str:
    shown = ", ".join(map(str, list(index[:limit])))
    return shown + (f" and {len(index) - limit} more" if len(index) > limit else "")


def _to_geoms(values: pd.Series) -> np.ndarray:
    """Shapely geometries from shapely objects, WKB bytes or nulls (WKB decoded in one call)."""
    arr = values.to_numpy(dtype=object)
    out = np.full(len(arr), None, dtype=object)
    is_geom = np.fromiter((isinstance(v, BaseGeometry) for v in arr), bool, len(arr))
    is_wkb = np.fromiter(
        (isinstance(v, bytes | bytearray | memoryview) for v in arr), bool, len(arr)
    )
    is_null = ~(is_geom | is_wkb) & pd.isna(values).to_numpy()
    other = np.flatnonzero(~(is_geom | is_wkb | is_null))
    if other.size:
        raise UserInputError(
            f"masks row {values.index[other[0]]}: geometry must be a shapely polygon or WKB "
            f"bytes, got {type(arr[other[0]]).__name__}"
        )
    out[is_geom] = arr[is_geom]
    if is_wkb.any():
        wkb = np.array([bytes(v) for v in arr[is_wkb]], dtype=object)
        out[is_wkb] = shapely.from_wkb(wkb, on_invalid="ignore")
    return out


def annotation_ids(values: pd.Series) -> pd.Series:
    """Annotation ids as int64 when they are all integers (Cytomine's), else as strings
    (other tools' ids); any hashable, non-missing, unique value names an annotation.

    >>> annotation_ids(pd.Series([3, 1])).dtype
    dtype('int64')
    >>> annotation_ids(pd.Series(["a-1", "b-2"])).tolist()
    ['a-1', 'b-2']
    """
    null = values.index[pd.isna(values).to_numpy()]
    if len(null):
        raise UserInputError(f"masks: rows {_rows(null)} have no annotation_id")
    numbers = pd.to_numeric(values, errors="coerce")
    integral = numbers.notna().all() and bool(np.all(np.asarray(numbers, np.float64) % 1 == 0))
    if integral and not values.map(lambda v: isinstance(v, str)).any():
        return numbers.astype(np.int64)
    return values.map(str).astype(object)


def _repair(geoms: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Make invalid polygons valid; drop what is not a non-empty polygon afterwards."""
    repaired = 0
    present = ~shapely.is_missing(geoms)
    invalid = np.flatnonzero(present & ~shapely.is_valid(geoms))
    for pos in invalid:
        fixed = shapely.make_valid(geoms[pos])
        polys = [p for p in shapely.get_parts(fixed) if p.geom_type in ("Polygon", "MultiPolygon")]
        geoms[pos] = shapely.union_all(polys) if polys else None
        repaired += 1
    kind = shapely.get_type_id(geoms)  # -1 missing, 3 Polygon, 6 MultiPolygon
    polygonal = (kind == 3) | (kind == 6)
    area = np.where(polygonal, shapely.area(geoms), 0.0)
    bad = ~polygonal | ~(area > 0)
    geoms[bad] = None
    return geoms, repaired, int(bad.sum())


def prepare_masks(masks: pd.DataFrame) -> PreparedMasks:
    """Validate ``masks`` (see `histocurate.consensus.consensus_nuclei`); raise on bad input."""
    missing = [c for c in REQUIRED_COLUMNS if c not in masks.columns]
    geom_col = next((c for c in GEOMETRY_COLUMNS if c in masks.columns), None)
    if missing or geom_col is None:
        need = [*missing, *([] if geom_col else ["geometry (or polygon)"])]
        raise UserInputError(f"masks: missing column(s) {need}; have {list(masks.columns)}")
    frame = masks.loc[:, list(REQUIRED_COLUMNS)].copy()
    for col in ("tile_id", "annotator"):
        null = frame.index[frame[col].isna()]
        if len(null):
            what = "have no tile (tile_id is empty)" if col == "tile_id" else "have no annotator"
            raise UserInputError(
                f"masks: {len(null)} row(s) {what}: rows {_rows(null)}; fix the import or drop them"
            )
        frame[col] = frame[col].astype(str)
    frame["annotation_id"] = annotation_ids(frame["annotation_id"])
    dup = frame["annotation_id"][frame["annotation_id"].duplicated(keep=False)]
    if len(dup):
        raise UserInputError(
            f"masks: annotation id(s) {sorted(set(dup.tolist()))[:5]} appear on more than one "
            "row; each click must be one row (re-run the import and segment stages)"
        )
    for col in ("x", "y"):
        values = pd.to_numeric(frame[col], errors="coerce").astype(np.float64)
        bad = frame.index[~np.isfinite(values.to_numpy())]
        if len(bad):
            raise UserInputError(
                f"masks: column {col!r} is missing or not finite on rows {_rows(bad)}"
            )
        frame[col] = values
    mapping: dict[object, str] = {}
    for value in pd.unique(frame["label"]):
        try:
            mapping[value] = cell_type(str(value)).id if isinstance(value, str) else ""
        except KeyError:
            mapping[value] = ""
        if not mapping[value]:
            rows = frame.index[frame["label"].astype(object) == value]
            if isinstance(value, float) or value is None:
                rows = frame.index[frame["label"].isna()]
            raise UserInputError(
                f"masks: label {value!r} on rows {_rows(rows)} is not in the ontology "
                "(histocurate.labels.ANNOTATION_LABELS); map it to a cell type id or 'unknown'"
            )
    frame["label"] = frame["label"].map(mapping).astype(str)
    geoms, repaired, unusable = _repair(_to_geoms(masks[geom_col]))
    return PreparedMasks(frame.reset_index(drop=True), geoms, repaired, unusable)
