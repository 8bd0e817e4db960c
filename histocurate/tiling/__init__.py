"""The tile stage: tissue detection, the 112 um tile grid, and the per-slide tiles table."""

from histocurate.tiling.grid import TileGeometry, grid_positions, tile_geometry, tissue_fractions
from histocurate.tiling.slide import tile_slide
from histocurate.tiling.stage import TileRun, prepare_slides, run_tile, tile_item
from histocurate.tiling.tissue import TissueParams, tissue_mask

__all__ = [
    "TileGeometry",
    "TileRun",
    "TissueParams",
    "grid_positions",
    "prepare_slides",
    "run_tile",
    "tile_geometry",
    "tile_item",
    "tile_slide",
    "tissue_fractions",
    "tissue_mask",
]
