"""Consensus for people: GeoJSON that QuPath opens, and overlay pictures for review.

GeoJSON: one FeatureCollection per tile, coordinates in tile pixels (origin top-left, as
QuPath's for the tile image). Each nucleus is a QuPath *detection* whose classification is
the cell type's display name and colour; a nucleus whose annotators disagreed is class
"Undetermined" (its candidate types in the object name), one that everyone called
"Cell with unknown type" keeps that class.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import shapely
from PIL import Image, ImageDraw

from histocurate.io import atomic_path, atomic_write_text
from histocurate.labels import UNKNOWN, cell_type

UNDETERMINED_NAME = "Undetermined"
UNDETERMINED_COLOR = "#d3d3d3"


def _rgb(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def class_of(label: str | None, labels: Sequence[str]) -> tuple[str, str]:
    """QuPath class name and colour of a nucleus."""
    if isinstance(label, str):
        kind = cell_type(label)
        return kind.name, kind.color
    if list(labels) == [UNKNOWN.id]:
        return UNKNOWN.name, UNKNOWN.color
    return UNDETERMINED_NAME, UNDETERMINED_COLOR


def _geometry(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        return shapely.from_wkb(bytes(value))
    return value


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return cast(list[dict[str, Any]], frame.to_dict("records"))


def tile_feature_collection(nuclei: pd.DataFrame, *, geometry: str = "polygon") -> dict[str, Any]:
    """A GeoJSON FeatureCollection (dict) of one tile's consensus nuclei for QuPath."""
    features = []
    for row in _records(nuclei):
        geom = _geometry(row[geometry])
        if geom is None or geom.is_empty:
            continue
        labels = list(row["labels"])
        name, color = class_of(row["label"], labels)
        shape = json.loads(shapely.to_geojson(shapely.set_precision(geom, 0.01)))
        measurements: dict[str, float] = {"annotators": int(row["n_annotators"])}
        if pd.notna(row["mean_iou"]):
            measurements["mean IoU"] = round(float(row["mean_iou"]), 4)
        features.append(
            {
                "type": "Feature",
                "id": f"consensus-{row['consensus_id']}",
                "geometry": shape,
                "properties": {
                    "objectType": "detection",
                    "name": "/".join(labels),
                    "classification": {"name": name, "color": list(_rgb(color))},
                    "isLocked": False,
                    "measurements": measurements,
                    "consensus_id": int(row["consensus_id"]),
                    "annotators": list(row["annotators"]),
                    "member_labels": list(row["member_labels"]),
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def write_geojson(nuclei: pd.DataFrame, folder: str | os.PathLike[str]) -> list[Path]:
    """One ``<tile_id>.geojson`` per tile under ``folder`` (atomic writes)."""
    folder = Path(folder)
    paths = []
    for tile_id, part in nuclei.groupby("tile_id", sort=True):
        path = folder / f"{tile_id}.geojson"
        atomic_write_text(path, json.dumps(tile_feature_collection(part)))
        paths.append(path)
    return paths


def draw_overlay(
    image: np.ndarray | None,
    nuclei: pd.DataFrame,
    *,
    size: int | None = None,
    dropped: pd.DataFrame | None = None,
    geometry: str = "polygon",
    scale: int = 2,
) -> Image.Image:
    """Tile with consensus outlines coloured by type (light grey: undetermined), centroids
    as dots, and clicks that made no consensus (``dropped``: x, y) as small grey crosses.

    Without ``image`` the outlines are drawn on white, ``size`` pixels square. The picture is
    upscaled by ``scale`` so thin outlines stay readable.
    """
    if image is None:
        side = size or 448
        image = np.full((side, side, 3), 255, dtype=np.uint8)
    base = Image.fromarray(np.ascontiguousarray(image[..., :3])).convert("RGB")
    base = base.resize((base.width * scale, base.height * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(base)
    for row in _records(nuclei):
        geom = _geometry(row[geometry])
        _, color = class_of(row["label"], list(row["labels"]))
        if geom is not None and not geom.is_empty:
            for part in shapely.get_parts(geom):
                ring = np.asarray(part.exterior.coords) * scale
                draw.line([tuple(p) for p in ring], fill=_rgb(color), width=2)
        cx, cy = float(row["x"]) * scale, float(row["y"]) * scale
        draw.ellipse([cx - 2, cy - 2, cx + 2, cy + 2], fill=_rgb(color))
    if dropped is not None:
        for x, y in zip(dropped["x"] * scale, dropped["y"] * scale, strict=True):
            draw.line([(x - 3, y - 3), (x + 3, y + 3)], fill=(90, 90, 90), width=1)
            draw.line([(x - 3, y + 3), (x + 3, y - 3)], fill=(90, 90, 90), width=1)
    return base


def save_png(picture: Image.Image, path: str | os.PathLike[str]) -> Path:
    """Write a PNG atomically."""
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
    return Path(path)
