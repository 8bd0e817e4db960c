"""Ground truth of a synthetic slide: one polygon per nucleus, and its view per tile.

Polygons are the outlines the renderer draws (same radius tables), in level-0 pixels
with the pixel-centre convention: pixel (col, row) is nuclear when (col + 0.5, row + 0.5)
lies inside. Red blood cells have no nucleus; their truth object is the cell outline.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import shapely
from numpy.typing import NDArray

from histocurate.labels import LABELS
from histocurate.synth.morphology import ANGLES, CellTable

TRUTH_IN_TILES_COLUMNS = ["tile_id", "slide_id", "nucleus_id", "x", "y", "label", "polygon"]


def _ring_coords(cx: NDArray[np.float64], cy: NDArray[np.float64], r: NDArray[np.float32]
                 ) -> NDArray[np.float64]:  # fmt: skip
    """(n, N_ANGLES, 2) vertices of star-shaped outlines around (cx, cy)."""
    cos, sin = np.cos(ANGLES.astype(np.float64)), np.sin(ANGLES.astype(np.float64))
    return np.stack([cx[:, None] + r * cos, cy[:, None] + r * sin], axis=-1)


def cell_polygons(cells: CellTable) -> NDArray[np.object_]:
    """One shapely Polygon per cell (nucleus outline; cell outline for red blood cells)."""
    n = len(cells)
    out = np.empty(n, dtype=object)
    has_nucleus = cells.part_r[:, 0, 0] > 0
    parts = (cells.part_r[:, :, 0] > 0).sum(axis=1)
    single = has_nucleus & (parts == 1)
    if single.any():
        idx = np.flatnonzero(single)
        coords = _ring_coords(
            cells.cx[idx] + cells.part_dx[idx, 0], cells.cy[idx] + cells.part_dy[idx, 0],
            cells.part_r[idx, 0],
        )  # fmt: skip
        out[idx] = shapely.polygons(coords)
    for i in np.flatnonzero(has_nucleus & (parts > 1)):
        lobes = [
            shapely.Polygon(
                _ring_coords(
                    np.array([cells.cx[i] + cells.part_dx[i, p]]),
                    np.array([cells.cy[i] + cells.part_dy[i, p]]),
                    cells.part_r[i, p][None],
                )[0]
            )
            for p in range(parts[i])
        ]
        merged = shapely.union_all(lobes)
        if merged.geom_type != "Polygon":
            merged = merged.buffer(3).buffer(-3)
        if merged.geom_type != "Polygon":
            merged = merged.convex_hull
        out[i] = merged
    rbc = np.flatnonzero(~has_nucleus)
    if len(rbc):
        coords = _ring_coords(
            cells.cx[rbc] + cells.cyto_dx[rbc], cells.cy[rbc] + cells.cyto_dy[rbc],
            cells.cyto_r[rbc],
        )  # fmt: skip
        out[rbc] = shapely.polygons(coords)
    return out


def truth_frame(slide_id: str, cells: CellTable) -> pd.DataFrame:
    """The ``truth`` table of one slide (columns of `data_schema.TRUTH`)."""
    polygons = cell_polygons(cells)
    centroids = shapely.get_coordinates(shapely.centroid(polygons)) if len(polygons) else None
    labels = np.asarray(LABELS, dtype=object)[cells.label.astype(np.int64)]
    return pd.DataFrame(
        {
            "nucleus_id": np.arange(len(cells), dtype=np.int64),
            "slide_id": slide_id,
            "x": centroids[:, 0] if centroids is not None else np.zeros(0),
            "y": centroids[:, 1] if centroids is not None else np.zeros(0),
            "label": labels,
            "polygon": shapely.to_wkb(polygons) if len(polygons) else np.zeros(0, object),
        }
    )


def truth_in_tiles(truth: pd.DataFrame, tiles: pd.DataFrame) -> pd.DataFrame:
    """The nuclei whose centroid lies in each tile, in that tile's pixels as read.

    ``tiles`` needs tile_id, slide_id, x, y (level-0 top-left), size_level0 and tile_px.
    Coordinates become ``(level0 - tile_origin) * tile_px / size_level0`` (x, y and every
    polygon vertex, polygon as WKB). A nucleus on the border of two overlapping tiles is
    listed in both. Output columns: `TRUTH_IN_TILES_COLUMNS`, ordered by tile then nucleus.
    """
    frames = []
    for slide_id, slide_tiles in tiles.groupby("slide_id", sort=False):
        nuclei = truth[truth["slide_id"] == slide_id]
        if nuclei.empty:
            continue
        order = np.argsort(nuclei["x"].to_numpy(), kind="stable")
        nuclei = nuclei.iloc[order]
        nx, ny = nuclei["x"].to_numpy(), nuclei["y"].to_numpy()
        tx = slide_tiles["x"].to_numpy(np.float64)
        ty = slide_tiles["y"].to_numpy(np.float64)
        size = slide_tiles["size_level0"].to_numpy(np.float64)
        scales = slide_tiles["tile_px"].to_numpy(np.float64) / size
        tile_ids = slide_tiles["tile_id"].to_numpy()
        for k in range(len(slide_tiles)):
            lo, hi = np.searchsorted(nx, [tx[k], tx[k] + size[k]], side="left")
            sel = np.arange(lo, hi)
            sel = sel[(ny[sel] >= ty[k]) & (ny[sel] < ty[k] + size[k])]
            if not len(sel):
                continue
            chosen = nuclei.iloc[sel]
            scale, origin = float(scales[k]), np.array([tx[k], ty[k]])
            geoms = shapely.from_wkb(chosen["polygon"].to_numpy())
            geoms = shapely.transform(geoms, lambda c, o=origin, s=scale: (c - o) * s)
            frames.append(
                pd.DataFrame(
                    {
                        "tile_id": tile_ids[k],
                        "slide_id": slide_id,
                        "nucleus_id": chosen["nucleus_id"].to_numpy(),
                        "x": (nx[sel] - tx[k]) * scale,
                        "y": (ny[sel] - ty[k]) * scale,
                        "label": chosen["label"].to_numpy(),
                        "polygon": shapely.to_wkb(geoms),
                    }
                ).sort_values("nucleus_id", kind="stable")
            )
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in TRUTH_IN_TILES_COLUMNS})
    return pd.concat(frames, ignore_index=True)
