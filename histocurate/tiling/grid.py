"""The tile grid of a slide: tile geometry per resolution and tissue fraction per tile.

Pure functions over numbers and arrays; `histocurate.tiling.stage` applies them to slides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STANDARD_MPPS: tuple[float, ...] = (0.25, 0.5, 1.0)
"""Resolutions tiles are read at by default: 40x, 20x, 10x (the nearest to the slide's)."""


@dataclass(frozen=True, slots=True)
class TileGeometry:
    """How big a tile is at level 0 and how it is read."""

    size_level0: int  # tile side in level-0 pixels
    tile_mpp: float  # resolution of the pixels handed to later stages
    tile_px: int  # tile side as handed out (448 at 0.25 um/px for 112 um)
    read_level: int  # pyramid level the region is read from
    read_size: int  # side of the region read at that level

    @property
    def resized(self) -> bool:
        return self.read_size != self.tile_px


def nearest_standard_mpp(mpp: float) -> float:
    """The standard resolution (0.25, 0.5 or 1.0 um/px) nearest ``mpp`` on a log scale.

    >>> nearest_standard_mpp(0.499), nearest_standard_mpp(0.2265), nearest_standard_mpp(0.3)
    (0.5, 0.25, 0.25)
    """
    return min(STANDARD_MPPS, key=lambda s: abs(np.log(mpp / s)))


def tile_geometry(
    *,
    mpp: float,
    tile_size_um: float,
    level_downsamples: tuple[float, ...],
    target_mpp: float | None = None,
) -> TileGeometry:
    """Geometry of a ``tile_size_um`` tile on a slide of level-0 resolution ``mpp``.

    The region is read from the coarsest level that still has at least the target
    resolution (never upsampled), then resized to ``tile_px`` when that level's pixels are
    not already the target size.

    >>> g = tile_geometry(mpp=0.25, tile_size_um=112, level_downsamples=(1.0, 4.0))
    >>> (g.size_level0, g.tile_px, g.read_level, g.read_size, g.resized)
    (448, 448, 0, 448, False)
    >>> g = tile_geometry(mpp=0.25, tile_size_um=112, level_downsamples=(1.0, 2.0), target_mpp=0.5)
    >>> (g.size_level0, g.tile_px, g.read_level, g.read_size)
    (448, 224, 1, 224)
    """
    target = target_mpp if target_mpp is not None else nearest_standard_mpp(mpp)
    size_level0 = round(tile_size_um / mpp)
    tile_px = round(tile_size_um / target)
    if size_level0 < 1 or tile_px < 1:
        raise ValueError(f"tile of {tile_size_um} um is below one pixel at {mpp} um/px")
    level = 0
    for index, downsample in enumerate(level_downsamples):
        # Allow 1% slack: pyramid downsamples are often 3.9998 rather than 4.
        if size_level0 / downsample >= tile_px * 0.99:
            level = index
    return TileGeometry(
        size_level0=size_level0,
        tile_mpp=mpp * size_level0 / tile_px,  # the true resolution, rounding included
        tile_px=tile_px,
        read_level=level,
        read_size=round(size_level0 / level_downsamples[level]),
    )


def grid_positions(width: int, height: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners (x, y) of the full tiles of side ``size`` anchored at (0, 0).

    Anchoring at the slide origin keeps tile ids stable whatever the tissue mask says.
    """
    xs = np.arange(0, width - size + 1, size, dtype=np.int64)
    ys = np.arange(0, height - size + 1, size, dtype=np.int64)
    grid_x, grid_y = np.meshgrid(xs, ys)
    return grid_x.ravel(), grid_y.ravel()


def tissue_fractions(
    mask: np.ndarray, *, scale_x: float, scale_y: float, x: np.ndarray, y: np.ndarray, size: int
) -> np.ndarray:
    """Fraction of each tile (level-0 ``x``, ``y``, side ``size``) covered by ``mask``.

    ``scale_x``/``scale_y`` map level-0 pixels to mask pixels. A summed-area table makes
    this one lookup per tile whatever the tile size.
    """
    height, width = mask.shape
    table = np.zeros((height + 1, width + 1), dtype=np.int64)
    table[1:, 1:] = np.cumsum(np.cumsum(mask, axis=0, dtype=np.int64), axis=1)
    x0 = np.clip(np.round(x * scale_x).astype(np.int64), 0, width)
    y0 = np.clip(np.round(y * scale_y).astype(np.int64), 0, height)
    x1 = np.clip(np.maximum(np.round((x + size) * scale_x).astype(np.int64), x0 + 1), 0, width)
    y1 = np.clip(np.maximum(np.round((y + size) * scale_y).astype(np.int64), y0 + 1), 0, height)
    inside = table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]
    area = np.maximum((x1 - x0) * (y1 - y0), 1)
    return inside / area
