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


@dataclass(frozen=True, slots=True)
class _Handle:
    """An open slide and what read_tile needs to know about it, read once."""

    slide: openslide.OpenSlide
    width: int
    height: int
    downsamples: tuple[float, ...]
    # Formats with a bounding box (MRXS, sparse scans) may have transparent holes anywhere.
    sparse: bool


class _SlideCache:
    """A small per-process LRU of open slides, safe to share between threads."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._handles: OrderedDict[tuple[int, str, int, int, int], _Handle] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str) -> _Handle:
        # a forked worker must not reuse its parent's handle; a file replaced under the same
        # path (re-scanned slide) must not be read through the old file's handle
        try:
            stat = os.stat(path)
        except OSError:
            open_slide(path)  # raises the SlideError that names the problem
            raise
        key = (os.getpid(), path, stat.st_ino, stat.st_mtime_ns, stat.st_size)
        with self._lock:
            handle = self._handles.get(key)
            if handle is not None:
                self._handles.move_to_end(key)
                return handle
        slide = open_slide(path)
        handle = _Handle(
            slide=slide,
            width=slide.dimensions[0],
            height=slide.dimensions[1],
            downsamples=tuple(slide.level_downsamples),
            sparse=openslide.PROPERTY_NAME_BOUNDS_X in slide.properties,
        )
        with self._lock:
            for stale in [k for k in self._handles if k[:2] == key[:2] and k != key]:
                self._handles.pop(stale).slide.close()
            self._handles[key] = handle
            while len(self._handles) > self._size:
                _, old = self._handles.popitem(last=False)
                old.slide.close()
        return handle

    def clear(self) -> None:
        with self._lock:
            for handle in self._handles.values():
                handle.slide.close()
            self._handles.clear()


_slides = _SlideCache(_CACHE_SIZE)


def read_tile(tile: Mapping[str, Any] | TileRegion | Any) -> np.ndarray:
    """Pixels of one tile: read-only, C-contiguous RGB ``uint8`` array (tile_px, tile_px, 3).

    ``tile`` is a row of the tiles table (dict or pandas row) or a `TileRegion`. Transparent
    pixels outside the scanned area come back white, as on glass.

    >>> # tiles = read_table(workspace.tiles, TILES); rgb = read_tile(tiles.iloc[0])
    """
    region = tile if isinstance(tile, TileRegion) else TileRegion.from_row(tile)
    handle = _slides.get(region.slide_path)
    try:
        rgba = handle.slide.read_region(
            (region.x, region.y), region.read_level, (region.read_size, region.read_size)
        )
    except openslide.OpenSlideError as exc:
        raise SlideError(
            f"{region.slide_path}: cannot read the tile at x={region.x}, y={region.y} ({exc})"
        ) from None
    if region.read_size != region.tile_px:
        rgba = rgba.resize((region.tile_px, region.tile_px), Image.Resampling.LANCZOS)
    extent = region.read_size * handle.downsamples[region.read_level]
    outside = region.x + extent > handle.width or region.y + extent > handle.height
    if (outside or handle.sparse or region.x < 0 or region.y < 0) and _transparent(rgba):
        # Outside the scanned area OpenSlide gives transparent pixels: show them as glass.
        rgba = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    # Pillow packs RGBA into RGB bytes in C (0.1 ms for 448 px); numpy's strided slice of
    # the RGBA array would take 1.4 ms and convert("RGB") + asarray 0.37 ms.
    size = rgba.size
    return np.frombuffer(rgba.tobytes("raw", "RGB"), np.uint8).reshape(size[1], size[0], 3)


def _transparent(image: Image.Image) -> bool:
    lowest = image.getchannel("A").getextrema()[0]
    return isinstance(lowest, int | float) and lowest < 255


def close_all() -> None:
    """Close every cached slide handle of this process (tests, long-lived workers)."""
    _slides.clear()
