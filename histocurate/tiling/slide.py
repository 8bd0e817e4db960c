"""One slide: its thumbnail, its tissue mask, the tiles kept on tissue, the review overlay.

Pure work on one slide (no workspace, no resume): `histocurate.tiling.stage` calls it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from histocurate.config import TilingConfig
from histocurate.errors import SlideError
from histocurate.io import atomic_path
from histocurate.slides.reader import open_slide, slide_mpp
from histocurate.tiling.grid import grid_positions, tile_geometry, tissue_fractions
from histocurate.tiling.tissue import tissue_mask


@dataclass(frozen=True, slots=True)
class Thumbnail:
    """A low-resolution RGB view of the whole slide and its tissue mask."""

    rgb: np.ndarray
    mask: np.ndarray
    scale_x: float  # thumbnail pixels per level-0 pixel
    scale_y: float


def read_thumbnail(slide: Any, *, mpp: float, thumbnail_mpp: float) -> np.ndarray:
    """The whole slide at about ``thumbnail_mpp``, from the best pyramid level, on white."""
    width, height = slide.dimensions
    downsample = max(thumbnail_mpp / mpp, 1.0)
    level = slide.get_best_level_for_downsample(downsample)
    region = slide.read_region((0, 0), level, slide.level_dimensions[level])
    size = (max(1, round(width / downsample)), max(1, round(height / downsample)))
    if region.size != size:
        region = region.resize(size, Image.Resampling.BOX)
    white = Image.new("RGBA", region.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, region).convert("RGB"))


def tile_slide(
    slide_row: Mapping[str, Any], config: TilingConfig
) -> tuple[pd.DataFrame, Thumbnail]:
    """Tiles of one slide on tissue (rows of the ``tiles`` table) and its thumbnail.

    ``slide_row`` is a row of the ``slides`` table. Raises `SlideError` when the slide cannot
    be read, has no resolution, or is smaller than one tile.
    """
    path = Path(slide_row["path"])
    override = slide_row.get("mpp_override")
    override = None if override is None or pd.isna(override) else float(override)
    slide = open_slide(path)
    try:
        mpp = slide_mpp(slide, path, override)
        width, height = slide.dimensions
        geometry = tile_geometry(
            mpp=mpp,
            tile_size_um=config.tile_size_um,
            level_downsamples=tuple(float(d) for d in slide.level_downsamples),
            target_mpp=config.target_mpp,
        )
        if geometry.size_level0 > min(width, height):
            raise SlideError(
                f"{path}: the slide ({width} x {height} px at {mpp:.3f} um/px) is smaller than "
                f"one tile ({config.tile_size_um} um = {geometry.size_level0} px); lower "
                "[tiling] tile_size_um or drop the slide"
            )
        try:
            rgb = read_thumbnail(slide, mpp=mpp, thumbnail_mpp=config.thumbnail_mpp)
        except Exception as exc:  # OpenSlide reports damaged tiles only when read
            raise SlideError(f"{path}: cannot read the slide's pixels ({exc})") from None
    finally:
        slide.close()

    thumb_mpp = mpp * width / rgb.shape[1]
    mask = tissue_mask(rgb, mpp=thumb_mpp)
    thumbnail = Thumbnail(rgb, mask, rgb.shape[1] / width, rgb.shape[0] / height)
    xs, ys = grid_positions(width, height, geometry.size_level0)
    fractions = tissue_fractions(
        mask,
        scale_x=thumbnail.scale_x,
        scale_y=thumbnail.scale_y,
        x=xs,
        y=ys,
        size=geometry.size_level0,
    )
    keep = fractions >= config.tissue_threshold
    slide_id = str(slide_row["slide_id"])
    tiles = pd.DataFrame(
        {
            "tile_id": [f"{slide_id}_x{x}_y{y}" for x, y in zip(xs[keep], ys[keep], strict=True)],
            "slide_id": slide_id,
            "indication": str(slide_row["indication"]),
            "cohort": str(slide_row["cohort"]),
            "slide_path": str(path),
            "x": xs[keep],
            "y": ys[keep],
            "size_level0": geometry.size_level0,
            "mpp": mpp,
            "tile_mpp": geometry.tile_mpp,
            "tile_px": geometry.tile_px,
            "read_level": geometry.read_level,
            "read_size": geometry.read_size,
            "resized": geometry.resized,
            "tissue_fraction": fractions[keep].astype(np.float64),
        }
    )
    return tiles, thumbnail


OVERLAY_SIDE = 1024  # long side of the review picture, px


def render_tiling_overlay(
    slide_path: Path, thumbnail: Thumbnail, tiles: pd.DataFrame, out: Path
) -> Path:
    """Save a ~1024 px view of the slide, glass shaded blue and kept tiles boxed in green.

    The detection thumbnail (8 um/px) is too small to review, so a larger view is read
    from the pyramid; the mask is scaled up onto it.
    """
    slide = open_slide(slide_path)
    try:
        base = slide.get_thumbnail((OVERLAY_SIDE, OVERLAY_SIDE)).convert("RGBA")
        width, height = slide.dimensions
    finally:
        slide.close()
    scale_x, scale_y = base.width / width, base.height / height
    glass = Image.fromarray(np.where(thumbnail.mask, 0, 255).astype(np.uint8))
    glass = glass.resize(base.size, Image.Resampling.NEAREST)
    shade = Image.new("RGBA", base.size, (0, 0, 80, 90))
    image = Image.composite(Image.alpha_composite(base, shade), base, glass)
    draw = ImageDraw.Draw(image)
    for x, y, size in tiles[["x", "y", "size_level0"]].itertuples(index=False):
        box = (x * scale_x, y * scale_y, (x + size) * scale_x - 1, (y + size) * scale_y - 1)
        draw.rectangle(box, outline=(0, 170, 0, 255), width=2 if size * scale_x > 12 else 1)
    with atomic_path(out) as tmp:
        image.convert("RGB").save(tmp, format="PNG")
    return out
