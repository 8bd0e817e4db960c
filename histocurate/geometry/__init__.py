"""Geometry shared by every stage: WKB in/out, the one rasteriser (with its one overlap
rule), mask outlines, and tile <-> slide pixel transforms."""

from histocurate.geometry.outline import mask_to_polygon, polygons_of
from histocurate.geometry.raster import (
    Raster,
    Spans,
    paint,
    polygon_spans,
    rasterize,
    rasterize_instances,
)
from histocurate.geometry.transforms import TileFrame
from histocurate.geometry.wkb import from_wkb, to_wkb

__all__ = [
    "Raster",
    "Spans",
    "TileFrame",
    "from_wkb",
    "mask_to_polygon",
    "paint",
    "polygon_spans",
    "polygons_of",
    "rasterize",
    "rasterize_instances",
    "to_wkb",
]
