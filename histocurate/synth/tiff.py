"""Pyramidal TIFF writing that OpenSlide reads as an Aperio slide (with its mpp).

One top-level IFD per level (downsample 4 between levels, like Aperio), JPEG tiles, an
Aperio-style ImageDescription on level 0 (``MPP = 0.25|AppMag = 40``) and no tifffile
metadata. Level 0 is streamed strip by strip from a callback, never held whole; level 1
is built from the strips as they pass (1/16 of the pixels), the rest from level 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from numpy.typing import NDArray

from histocurate.io import atomic_path

U8 = NDArray[np.uint8]
DOWNSAMPLE = 4


def aperio_description(width: int, height: int, *, mpp: float, tile: int, quality: int,
                       name: str = "") -> str:  # fmt: skip
    """An Aperio-like ImageDescription: OpenSlide takes ``openslide.mpp-x`` from ``MPP``."""
    mag = round(10.0 / mpp)
    fields = [
        f"Aperio Image Library v12.0.0 (histocurate synthetic)\r\n{width}x{height} "
        f"[0,0 {width}x{height}] ({tile}x{tile}) JPEG/RGB Q={quality}",
        f"AppMag = {mag}",
        f"MPP = {mpp:.4f}",
        "ScanScope ID = HISTOCURATE",
    ]
    if name:
        fields.append(f"Filename = {name}")
    return "|".join(fields)


def level_sizes(width: int, height: int, tile: int) -> list[tuple[int, int]]:
    """(width, height) of each level: divide by 4 until the level fits in one tile."""
    sizes = [(width, height)]
    while max(sizes[-1]) > tile:
        w, h = sizes[-1]
        sizes.append((math.ceil(w / DOWNSAMPLE), math.ceil(h / DOWNSAMPLE)))
    return sizes


def downsample(image: U8, factor: int = DOWNSAMPLE) -> U8:
    """Box-filter ``image`` by ``factor`` (edges padded by repetition)."""
    h, w = image.shape[:2]
    ph, pw = -h % factor, -w % factor
    if ph or pw:
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)), mode="edge")
    h2, w2 = image.shape[0] // factor, image.shape[1] // factor
    blocks = image.reshape(h2, factor, w2, factor, 3).astype(np.float32)
    return (blocks.mean(axis=(1, 3)) + 0.5).astype(np.uint8)


def write_pyramid(
    path: Path,
    *,
    width: int,
    height: int,
    render_strip: Callable[[int, int], U8],
    mpp: float,
    tile: int = 512,
    quality: int = 85,
    name: str = "",
) -> list[tuple[int, int]]:
    """Write a pyramidal TIFF atomically; ``render_strip(y0, h)`` gives rows y0..y0+h-1.

    Strips are requested top to bottom with ``h == tile`` (shorter at the bottom), so
    ``tile`` must be a multiple of 16 (JPEG) and of the downsample factor.
    """
    sizes = level_sizes(width, height, tile)
    level1: U8 | None = None
    if len(sizes) > 1:
        level1 = np.zeros((sizes[1][1], sizes[1][0], 3), np.uint8)
    cols = math.ceil(width / tile)

    def tiles() -> Iterator[U8]:
        for y0 in range(0, height, tile):
            h = min(tile, height - y0)
            strip = render_strip(y0, h)
            if level1 is not None:
                small = downsample(strip)
                level1[y0 // DOWNSAMPLE : y0 // DOWNSAMPLE + small.shape[0]] = small[
                    :, : level1.shape[1]
                ]
            padded = np.zeros((tile, cols * tile, 3), np.uint8)
            padded[:h, :width] = strip
            for c in range(cols):
                yield padded[:, c * tile : (c + 1) * tile]

    options: dict[str, Any] = {
        "photometric": "rgb",
        "compression": "jpeg",
        "compressionargs": {"level": quality},
        "tile": (tile, tile),
        "metadata": None,
    }
    bigtiff = width * height * 3 > 2**31
    description = aperio_description(width, height, mpp=mpp, tile=tile, quality=quality, name=name)
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=bigtiff) as writer:
        writer.write(
            tiles(), shape=(height, width, 3), dtype=np.uint8, description=description,
            **options,
        )  # fmt: skip
        current = level1
        for index in range(1, len(sizes)):
            assert current is not None
            writer.write(current, description=f"level {index}", **options)
            if index + 1 < len(sizes):
                current = downsample(current)
    return sizes
