"""Whole-slide access through OpenSlide: opening slides, their resolution, reading tiles."""

from histocurate.slides.reader import SlideInfo, open_slide, slide_info
from histocurate.slides.tile_reader import TileRegion, read_tile

__all__ = ["SlideInfo", "TileRegion", "open_slide", "read_tile", "slide_info"]
