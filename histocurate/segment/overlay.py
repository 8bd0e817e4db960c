"""Overlay pictures of the masks of one tile, for people to look at."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import shapely
from PIL import Image, ImageDraw

from histocurate.io import atomic_path

PALETTE = [(0, 200, 0), (0, 160, 255), (255, 200, 0), (255, 0, 255), (0, 255, 255), (255, 128, 0)]
FALLBACK = (255, 0, 0)


def draw_masks(
    image: np.ndarray, masks: pd.DataFrame, path: str | os.PathLike[str], *, scale: int = 2
) -> Path:
    """Outlines of the masks (one colour per annotator) and clicks (red: fell back to a disc)."""
    base = Image.fromarray(np.ascontiguousarray(image[..., :3])).convert("RGB")
    base = base.resize((base.width * scale, base.height * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(base)
    colours = {
        a: PALETTE[k % len(PALETTE)] for k, a in enumerate(sorted(masks["annotator"].unique()))
    }
    for row in masks.itertuples(index=False):
        colour = colours[row.annotator]
        geom = shapely.from_wkb(row.polygon)
        if not geom.is_empty:
            xy = [(x * scale, y * scale) for x, y in np.asarray(geom.exterior.coords)]
            draw.line(xy, fill=colour, width=1)
        cx, cy = float(row.x) * scale, float(row.y) * scale  # type: ignore[arg-type]
        dot = FALLBACK if row.fallback else colour
        draw.ellipse((cx - 2, cy - 2, cx + 2, cy + 2), fill=dot)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        base.save(tmp, format="PNG")
    return path
