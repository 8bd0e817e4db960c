"""`read_tile`: the one way later stages get the pixels of a tile.

A tile row (from the ``tiles`` table) says where to read (level-0 x, y), at which pyramid
level and how large (``read_level``, ``read_size``), and the size the pixels must have
(``tile_px``, at ``tile_mpp``). The region is read at that level and resized only when the
level does not already have the target resolution.

OpenSlide handles are cached per process (opening a slide costs milliseconds to seconds for
some formats), so data-loader workers and Dask workers each keep their own.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import openslide
from PIL import Image

from histocurate.errors import SlideError
from histocurate.slides.reader import open_slide

_CACHE_SIZE = 32


@dataclass(frozen=True, slots=True)
class TileRegion:
    """Where a tile lies and how to read it (the columns of the tiles table it needs)."""

    slide_path: str
    x: int
    y: int
    read_level: int
    read_size: int
    tile_px: int

    @classmethod
    def from_row(cls, tile: Mapping[str, Any] | Any) -> TileRegion:
        """From a dict, a pandas row or any object with these fields as attributes."""

        def get(name: str) -> Any:
            try:  # dict or pandas row
                return tile[name]
            except (TypeError, KeyError, IndexError):  # namedtuple (itertuples) or object
                return getattr(tile, name)

        return cls(
            slide_path=str(get("slide_path")),
            x=int(get("x")),
            y=int(get("y")),
            read_level=int(get("read_level")),
            read_size=int(get("read_size")),
            tile_px=int(get("tile_px")),
        )


class _SlideCache:
    """A small per-process LRU of open slides, safe to share between threads."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._slides: OrderedDict[tuple[int, str], openslide.OpenSlide] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str) -> openslide.OpenSlide:
        key = (os.getpid(), path)  # a forked worker must not reuse its parent's handle
        with self._lock:
            slide = self._slides.get(key)
            if slide is not None:
                self._slides.move_to_end(key)
                return slide
        slide = open_slide(path)
        with self._lock:
            self._slides[key] = slide
            while len(self._slides) > self._size:
                _, old = self._slides.popitem(last=False)
                old.close()
        return slide

    def clear(self) -> None:
        with self._lock:
            for slide in self._slides.values():
                slide.close()
            self._slides.clear()


_slides = _SlideCache(_CACHE_SIZE)


def read_tile(tile: Mapping[str, Any] | TileRegion | Any) -> np.ndarray:
    """Pixels of one tile: RGB ``uint8`` array of shape (tile_px, tile_px, 3).

    ``tile`` is a row of the tiles table (dict or pandas row) or a `TileRegion`. Transparent
    pixels outside the scanned area come back white, as on glass.

    >>> # tiles = read_table(workspace.tiles, TILES); rgb = read_tile(tiles.iloc[0])
    """
    region = tile if isinstance(tile, TileRegion) else TileRegion.from_row(tile)
    slide = _slides.get(region.slide_path)
    try:
        rgba = slide.read_region((region.x, region.y), region.read_level, (region.read_size,) * 2)
    except openslide.OpenSlideError as exc:
        raise SlideError(
            f"{region.slide_path}: cannot read the tile at x={region.x}, y={region.y} ({exc})"
        ) from None
    if region.read_size != region.tile_px:
        rgba = rgba.resize((region.tile_px, region.tile_px), Image.Resampling.LANCZOS)
    lowest_alpha = rgba.getchannel("A").getextrema()[0]
    if isinstance(lowest_alpha, int | float) and lowest_alpha < 255:
        # Outside the scanned area OpenSlide gives transparent pixels: show them as glass.
        rgba = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return np.ascontiguousarray(np.asarray(rgba)[..., :3])


def close_all() -> None:
    """Close every cached slide handle of this process (tests, long-lived workers)."""
    _slides.clear()
