"""A histoplus-compatible ``cell_masks.json`` of a slide's cells.

The layout histoplus writes (field note, section 9.1)::

    {"model_name": ..., "inference_mpp": 0.25,
     "cell_masks": [{"level": L, "x": col, "y": row, "width": w, "height": h,
                     "masks": [{"cell_id": 1.0, "cell_type": "Cancer cell",
                                "confidence": 0.93, "coordinates": [[x, y], ...],
                                "centroid": [x, y]}, ...]}, ...]}

``x`` / ``y`` are the column and row of a tile of a DeepZoom pyramid with 224 px tiles and
no overlap (``openslide.deepzoom.DeepZoomGenerator(slide, 224, 0, limit_bounds=False)``) at
``level``, the level nearest 0.5 um/px; ``coordinates`` and ``centroid`` are in that
tile's pixels. Numbers are written as floats (cell ids too), as histoplus does. Cells are
assigned to the tile holding their centroid; ``cell_type`` is the model's class name.

>>> dz = deepzoom_frame(100_000, 80_000, mpp=0.25)
>>> dz.level, dz.downsample, dz.tile0
(16, 2, 448)
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import shapely

from histocurate.io import atomic_path

TILE = 224
TARGET_MPP = 0.5


@dataclass(frozen=True, slots=True)
class DeepZoomFrame:
    """The DeepZoom level cells are written at."""

    level: int
    downsample: int  # level-0 px per pixel of that level
    width: int  # the level's size, px
    height: int

    @property
    def tile0(self) -> int:
        """Side of one tile in level-0 pixels."""
        return TILE * self.downsample


def deepzoom_frame(width: int, height: int, *, mpp: float) -> DeepZoomFrame:
    """DeepZoom levels halve level 0 until 1 x 1 px; pick the one nearest 0.5 um/px."""
    levels = 1
    w, h = width, height
    while w > 1 or h > 1:
        w, h = max(1, math.ceil(w / 2)), max(1, math.ceil(h / 2))
        levels += 1
    k = max(0, min(levels - 1, round(math.log2(TARGET_MPP / mpp))))
    down = 2**k
    return DeepZoomFrame(levels - 1 - k, down, math.ceil(width / down), math.ceil(height / down))


def _num(value: float) -> str:
    return repr(float(round(value, 3)))


def cell_masks_json(
    cells: pd.DataFrame,
    *,
    class_names: Sequence[str],
    width: int,
    height: int,
    mpp: float,
    model_name: str,
    inference_mpp: float,
) -> str:
    """The file's text for a slide's cells (``cells``: rows of the cells table)."""
    frame = deepzoom_frame(width, height, mpp=mpp)
    d = frame.downsample
    col = np.floor(cells["x"].to_numpy() / frame.tile0).astype(np.int64)
    row = np.floor(cells["y"].to_numpy() / frame.tile0).astype(np.int64)
    geoms = shapely.from_wkb(cells["polygon"].to_numpy())
    coords, which = shapely.get_coordinates(shapely.get_exterior_ring(geoms), return_index=True)
    names = ["Background", *class_names]
    types = cells["type_index"].to_numpy()
    conf = cells["confidence"].to_numpy(np.float64)
    ids = cells["cell_id"].to_numpy(np.int64)
    cx_all = cells["x"].to_numpy(np.float64) / d
    cy_all = cells["y"].to_numpy(np.float64) / d
    starts = np.searchsorted(which, np.arange(len(cells) + 1))
    order = np.lexsort((col, row))
    entries = []
    keys = np.stack([row[order], col[order]], axis=1)
    bounds = np.flatnonzero(np.any(np.diff(keys, axis=0) != 0, axis=1)) + 1
    for group in np.split(order, bounds) if order.size else []:
        r, c = int(row[group[0]]), int(col[group[0]])
        ox, oy = c * TILE, r * TILE
        masks = []
        for k in group:
            ring = coords[starts[k] : starts[k + 1]] / d - (ox, oy)
            points = ", ".join(f"[{_num(px)}, {_num(py)}]" for px, py in ring)
            cx, cy = cx_all[k] - ox, cy_all[k] - oy
            kind = names[types[k]] if 0 <= types[k] < len(names) else str(types[k])
            masks.append(
                f'{{"cell_id": {float(ids[k])!r}, "cell_type": {json.dumps(kind)}, '
                f'"confidence": {_num(conf[k])}, "coordinates": [{points}], '
                f'"centroid": [{_num(cx)}, {_num(cy)}]}}'
            )
        w = float(min(TILE, frame.width - ox))
        h = float(min(TILE, frame.height - oy))
        entries.append(
            f'{{"level": {float(frame.level)!r}, "x": {float(c)!r}, "y": {float(r)!r}, '
            f'"width": {w!r}, "height": {h!r}, "masks": [{", ".join(masks)}]}}'
        )
    head = f'{{"model_name": {json.dumps(model_name)}, "inference_mpp": {float(inference_mpp)!r}'
    return f'{head}, "cell_masks": [{", ".join(entries)}]}}\n'


def write_cell_masks(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
