"""The tile stage: tissue detection, the 112 um tile grid, and the per-slide tiles table."""

from histocurate.tiling.grid import TileGeometry, grid_positions, tile_geometry, tissue_fractions
from histocurate.tiling.stage import SlideOutcome, prepare_slides, tile_one_slide, tile_slide
from histocurate.tiling.tissue import TissueParams, tissue_mask

__all__ = [
    "SlideOutcome",
    "TileGeometry",
    "TissueParams",
    "grid_positions",
    "prepare_slides",
    "tile_geometry",
    "tile_one_slide",
    "tile_slide",
    "tissue_fractions",
    "tissue_mask",
]
