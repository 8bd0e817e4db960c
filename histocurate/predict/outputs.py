"""What a slide's prediction leaves: the cells table, counts and densities per type, QuPath
GeoJSON and a thumbnail with the cells drawn (the histoplus ``cell_masks.json`` is in
`histocurate.predict.histoplus`).

Cell types: the model's classes map to the ontology (`class_labels`): ids and display
names of `histocurate.labels`, HistoPLUS' class names, and the dataset-specific classes of
`histocurate.dataset.classes`; a class none of them knows keeps its own name. In QuPath a
cell's classification is its type's display name and colour, as in the consensus export.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import shapely
from PIL import Image

from data_schema import CELLS
from histocurate.dataset.classes import ALL_CLASSES
from histocurate.io import atomic_path
from histocurate.labels import HISTOPLUS_LABELS, cell_type
from histocurate.predict.stitch import Stitched

_KNOWN = {c.id: c for c in ALL_CLASSES}
UNTYPED_NAME, UNTYPED_COLOUR = "Unclassified nucleus", "#808080"


def class_labels(classes: Sequence[str]) -> list[str | None]:
    """Label of each model output (index 0: background -> None)."""
    out: list[str | None] = [None]
    for name in classes:
        if name in HISTOPLUS_LABELS:
            out.append(HISTOPLUS_LABELS[name])
        elif name in _KNOWN:
            out.append(name)
        else:
            try:
                out.append(cell_type(name).id)
            except KeyError:
                out.append(name)
    return out


def display(label: str | None, colours: dict[str, str] | None = None) -> tuple[str, str]:
    """(QuPath class name, colour) of a label."""
    if label is None:
        return UNTYPED_NAME, UNTYPED_COLOUR
    if label in _KNOWN:
        return _KNOWN[label].name, _KNOWN[label].color
    return label, (colours or {}).get(label, UNTYPED_COLOUR)


def _rgb(colour: str) -> list[int]:
    return [int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)]


def list_column(values: np.ndarray) -> pa.ListArray:
    """A (n, k) float array as a list<float32> column."""
    n, k = values.shape
    offsets = pa.array(
        np.arange(0, (n + 1) * k, k, dtype=np.int32) if k else np.zeros(n + 1, dtype=np.int32)
    )
    return pa.ListArray.from_arrays(offsets, pa.array(values.astype(np.float32).ravel()))


def labels_of(type_index: np.ndarray, labels: Sequence[str | None]) -> np.ndarray:
    lookup = np.array(list(labels), dtype=object)
    return lookup[np.clip(type_index, 0, len(lookup) - 1)]


def cells_table(
    slide_id: str, stitched: Stitched, labels: Sequence[str | None], *, mpp: float
) -> pa.Table:
    """The slide's rows of the ``cells`` table (schema-ordered Arrow table)."""
    n = len(stitched)
    columns = {
        "slide_id": pa.array([slide_id] * n, pa.string()),
        "cell_id": pa.array(np.arange(1, n + 1, dtype=np.int64)),
        "tile_id": pa.array(stitched.tile_id.tolist(), pa.string()),
        "x": pa.array(stitched.x.astype(np.float64)),
        "y": pa.array(stitched.y.astype(np.float64)),
        "polygon": pa.array(stitched.wkb.tolist(), pa.binary()),
        "area_um2": pa.array(stitched.area.astype(np.float64) * mpp * mpp),
        "label": pa.array(labels_of(stitched.type_index, labels).tolist(), pa.string()),
        "type_index": pa.array(stitched.type_index.astype(np.int32)),
        "confidence": pa.array(stitched.confidence.astype(np.float32)),
        "probabilities": list_column(stitched.probs),
        "window": pa.array(stitched.window.astype(np.int32)),
    }
    return pa.table([columns[c] for c in CELLS.column_names], names=CELLS.column_names)


def tissue_mm2(tiles: pd.DataFrame) -> float:
    """Tissue under a slide's tissue tiles: sum of tile area x tissue fraction (mm2)."""
    side_um = tiles["size_level0"].to_numpy(np.float64) * tiles["mpp"].to_numpy(np.float64)
    return float((side_um**2 * tiles["tissue_fraction"].to_numpy(np.float64)).sum() / 1e6)


def counts_table(slide_id: str, labels: pd.Series, tissue: float) -> pd.DataFrame:
    """Cells per type (rows: 'all', each type present, 'untyped') with densities."""
    named = labels.fillna("untyped").astype(str)
    counts = named.value_counts().sort_index()
    total = int(counts.sum())
    rows = [("all", total), *((str(k), int(v)) for k, v in counts.items())]
    frame = pd.DataFrame(rows, columns=["label", "count"])
    frame.insert(0, "slide_id", slide_id)
    frame["share"] = frame["count"] / total if total else 0.0
    frame["density_per_mm2"] = frame["count"] / tissue if tissue > 0 else np.nan
    frame["tissue_mm2"] = tissue
    return frame


def _rounded(wkb: np.ndarray, digits: int = 2) -> np.ndarray:
    """Outlines from WKB with coordinates rounded (shorter GeoJSON)."""
    geoms = shapely.from_wkb(wkb)
    coords = shapely.get_coordinates(geoms)
    return np.asarray(shapely.set_coordinates(geoms, np.round(coords, digits)), dtype=object)


def write_geojson(
    path: Path, cells: pd.DataFrame, colours: dict[str, str], *, chunk: int = 50_000
) -> Path:
    """QuPath detections (one Feature per cell, level-0 pixels), written atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as out:
        out.write('{"type": "FeatureCollection", "features": [')
        first = True
        for start in range(0, len(cells), chunk):
            part = cells.iloc[start : start + chunk]
            shapes = shapely.to_geojson(_rounded(part["polygon"].to_numpy()))
            rows = zip(
                part["cell_id"].to_numpy(np.int64),
                part["label"].to_numpy(object),
                part["confidence"].to_numpy(np.float64),
                part["area_um2"].to_numpy(np.float64),
                part["tile_id"].to_numpy(object),
                shapes,
                strict=True,
            )
            for cell_id, label, confidence, area, tile_id, shape in rows:
                name, colour = display(label if isinstance(label, str) else None, colours)
                props = {
                    "objectType": "detection",
                    "classification": {"name": name, "color": _rgb(colour)},
                    "isLocked": False,
                    "measurements": {
                        "confidence": round(float(confidence), 4),
                        "area um2": round(float(area), 2),
                    },
                    "cell_id": int(cell_id),
                    "tile_id": str(tile_id),
                }
                feature = (
                    f'{{"type": "Feature", "id": "cell-{int(cell_id)}", "geometry": {shape}, '
                    f'"properties": {json.dumps(props)}}}'
                )
                out.write(feature if first else ", " + feature)
                first = False
        out.write("]}\n")
    return path


def draw_thumbnail(
    slide_path: Path,
    cells: pd.DataFrame,
    colours: dict[str, str],
    out: Path,
    *,
    side: int = 1024,
) -> Path:
    """The slide at about ``side`` px with every cell a dot in its type's colour."""
    from histocurate.slides.reader import open_slide

    slide = open_slide(slide_path)
    try:
        base = slide.get_thumbnail((side, side)).convert("RGB")
        width, height = slide.dimensions
    finally:
        slide.close()
    pixels = np.asarray(base).copy()
    if len(cells):
        sx, sy = base.width / width, base.height / height
        ix = np.clip((cells["x"].to_numpy() * sx).astype(int), 0, base.width - 1)
        iy = np.clip((cells["y"].to_numpy() * sy).astype(int), 0, base.height - 1)
        palette: dict[str | None, list[int]] = {}
        rgb = np.array(
            [
                palette.setdefault(v, _rgb(display(v, colours)[1]))
                for v in cells["label"].where(cells["label"].notna(), None)
            ],
            dtype=np.uint8,
        )
        for dy in (0, 1):
            for dx in (0, 1):
                pixels[
                    np.minimum(iy + dy, base.height - 1), np.minimum(ix + dx, base.width - 1)
                ] = rgb
    with atomic_path(out) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")
    return out
