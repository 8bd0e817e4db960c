"""Tile pixels <-> slide pixels: where a tile's coordinates lie on its slide.

A tile is read from level-0 box ``(x, y, size_level0, size_level0)`` and stored as
``tile_px`` x ``tile_px`` pixels, so one tile pixel spans ``size_level0 / tile_px`` level-0
pixels. Both frames use continuous pixel-edge coordinates (x right, y down).

>>> frame = TileFrame(x=1000, y=2000, size_level0=896, tile_px=448)
>>> frame.to_slide([[0.0, 0.0], [448.0, 224.0]]).tolist()
[[1000.0, 2000.0], [1896.0, 2448.0]]
>>> frame.to_tile(frame.to_slide([[10.5, 3.25]])).tolist()
[[10.5, 3.25]]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray


@dataclass(frozen=True, slots=True)
class TileFrame:
    """The placement of one tile on its slide (level-0 pixels)."""

    x: float
    y: float
    size_level0: float
    tile_px: int

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> TileFrame:
        """From a row of the ``tiles`` table."""
        return cls(float(row["x"]), float(row["y"]), float(row["size_level0"]), int(row["tile_px"]))

    @property
    def scale(self) -> float:
        """Level-0 pixels per tile pixel."""
        return self.size_level0 / self.tile_px

    def to_slide(self, xy: ArrayLike) -> NDArray[np.float64]:
        """(N, 2) tile coordinates -> level-0 slide coordinates."""
        points = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        return points * self.scale + np.array([self.x, self.y])

    def to_tile(self, xy: ArrayLike) -> NDArray[np.float64]:
        """(N, 2) level-0 slide coordinates -> tile coordinates."""
        points = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        return (points - np.array([self.x, self.y])) / self.scale

    def geometry_to_slide(self, geom: Any) -> Any:
        """A shapely geometry in tile pixels, moved to slide pixels."""
        return shapely.transform(geom, lambda xy: self.to_slide(xy))

    def geometry_to_tile(self, geom: Any) -> Any:
        """A shapely geometry in slide pixels, moved to tile pixels."""
        return shapely.transform(geom, lambda xy: self.to_tile(xy))
