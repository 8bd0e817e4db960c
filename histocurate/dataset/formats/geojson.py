"""QuPath GeoJSON export: one FeatureCollection per tile, ``<tile_id>.geojson``.

Coordinates in the dataset tile's pixels (origin top-left, as QuPath's for the tile image).
Each nucleus is a QuPath *detection* classified by its class's display name and colour; an
undetermined nucleus is "Undetermined" (its proposed labels in the object name), one every
annotator called unknown keeps "Cell with unknown type".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import shapely

from histocurate.dataset.classes import color_of, display_name
from histocurate.dataset.store import DatasetVersion
from histocurate.errors import UserInputError
from histocurate.io import atomic_folder
from histocurate.labels import UNKNOWN

UNDETERMINED = ("Undetermined", "#d3d3d3")


def _rgb(color: str) -> list[int]:
    return [int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)]


def _classification(label: Any, labels: list[str]) -> tuple[str, str]:
    if isinstance(label, str):
        return display_name(label), color_of(label)
    if labels == [UNKNOWN.id]:
        return UNKNOWN.name, UNKNOWN.color
    return UNDETERMINED


def feature(row: dict[str, Any]) -> dict[str, Any]:
    """One nucleus (a row of nuclei.parquet) as a QuPath detection."""
    labels = list(row["labels"])
    name, color = _classification(row["label"], labels)
    geometry = json.loads(
        shapely.to_geojson(shapely.set_precision(shapely.from_wkb(row["polygon"]), 0.01))
    )
    return {
        "type": "Feature",
        "id": f"{row['tile_id']}-{row['nucleus_id']}",
        "geometry": geometry,
        "properties": {
            "objectType": "detection",
            "name": "/".join(labels),
            "classification": {"name": name, "color": _rgb(color)},
            "isLocked": False,
            "measurements": {"area px": int(row["area"]), "annotators": int(row["n_annotators"])},
            "nucleus_id": int(row["nucleus_id"]),
            "labels": labels,
            "annotators": list(row["annotators"]),
            "source": row["source"],
        },
    }


def export_geojson(version: DatasetVersion, out: Path) -> dict[str, Any]:
    """Write one GeoJSON per tile of ``version`` under ``out`` (new or empty)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserInputError(f"{out}: not empty; export into a new or empty folder")
    tiles = pq.read_table(version.tiles, columns=["tile_id"]).column("tile_id").to_pylist()
    nuclei = pq.read_table(version.nuclei).to_pandas()
    groups = {t: g for t, g in nuclei.groupby("tile_id", sort=False)}
    with atomic_folder(out) as tmp:
        for tile in tiles:
            group = groups.get(tile)
            rows = group.to_dict("records") if group is not None else []
            collection = {"type": "FeatureCollection", "features": [feature(r) for r in rows]}
            (tmp / f"{tile}.geojson").write_text(json.dumps(collection), encoding="utf-8")
    return {"tiles": len(tiles), "exported": len(nuclei), "left_out": 0}
