"""A very large synthetic slide (e.g. 100k x 80k px), written in minutes on two cores.

For the tiling benchmark the layout matters (tissue pieces and holes on white, so tissue
detection has something to find) and pixels must look like tissue, but rendering billions
of pixels one by one would take hours. So a small pool of full-tissue 512 px tiles is
rendered once with the cohort renderer (nuclei included) and JPEG-encoded once; each tile
of the big slide is then the encoded blank tile, a pool tile (flipped/rotated variants),
or, on the tissue border only, a pool tile blended with the background and encoded anew.
Every level is written the same way from the same layout, tiles streamed to the file.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import tifffile
from numpy.typing import NDArray

from histocurate.io import atomic_path
from histocurate.synth.layout import _tissue, build_slide
from histocurate.synth.noise import periodic_noise, ramp, sample_scaled
from histocurate.synth.profiles import Stain
from histocurate.synth.render import Renderer, concentrations_to_rgb
from histocurate.synth.tiff import aperio_description, downsample, level_sizes

U8 = NDArray[np.uint8]
TILE = 512
GRID = 64  # level-0 px per value of the layout field


def _encode(tile: U8, quality: int) -> bytes:
    return bytes(
        imagecodecs.jpeg8_encode(
            tile, level=quality, colorspace="RGB", outcolorspace="YCBCR", subsampling=(2, 2)
        )
    )


def _variants(tile: U8) -> list[U8]:
    return [np.ascontiguousarray(np.rot90(t, k)) for t in (tile, tile[:, ::-1]) for k in range(4)]


def _pool(seed: int, mpp: float, levels: int) -> tuple[list[list[U8]], Stain]:
    """Full-tissue tiles per level: level 0 from a rendered 2048 px block, then downsampled."""
    size = 2048
    model = build_slide(
        indication="LUAD", cohort="synth-a", width=size + 1024, height=size + 1024, mpp=mpp,
        seed=seed,
    )  # fmt: skip
    model.tissue[:] = 1000.0  # all tissue
    block = Renderer(model).region(512, 512, size, size)
    pools: list[list[U8]] = []
    base = [
        block[y : y + TILE, x : x + TILE]
        for y in range(0, size, TILE)
        for x in range(0, size, TILE)
    ]
    pools.append([v for t in base[:4] for v in _variants(t)])
    current = block
    for _ in range(1, levels):
        current = downsample(current) if current.shape[0] > TILE // 4 else current
        reps = -(-TILE // current.shape[0])
        tiled = np.tile(current, (reps, reps, 1))[:TILE, :TILE]
        pools.append(_variants(tiled))
    return pools, model.stain


def write_benchmark_slide(
    path: Path, *, width_px: int, height_px: int, seed: int = 0, mpp: float = 0.25,
    quality: int = 80,
) -> Path:  # fmt: skip
    """Write a large pyramidal TIFF (Aperio-style, OpenSlide-readable) at ``path``."""
    path = Path(path)
    rng = np.random.default_rng([seed, 99])
    gy, gx = np.meshgrid(
        (np.arange(height_px // GRID + 2) + 0.5) * GRID,
        (np.arange(width_px // GRID + 2) + 0.5) * GRID,
        indexing="ij",
    )
    field = _tissue(rng, gy, gx, width_px, height_px, mpp * GRID / 32)
    speck = periodic_noise(rng, TILE, 1.0)
    sizes = level_sizes(width_px, height_px, TILE)
    pools, stain = _pool(seed, mpp, len(sizes))
    zero = np.zeros((TILE, TILE), np.float32)
    blank_tile = concentrations_to_rgb(zero, zero, zero, stain, speck)
    blank = _encode(blank_tile, quality)
    encoded = [[_encode(t, quality) for t in pool] for pool in pools]

    def tiles(level: int) -> Iterator[bytes]:
        w, h = sizes[level]
        scale = width_px / w
        for ty in range(math.ceil(h / TILE)):
            for tx in range(math.ceil(w / TILE)):
                y0, x0 = ty * TILE * scale, tx * TILE * scale
                values = sample_scaled(field, GRID, y0, x0, TILE // 16, TILE // 16, 16 * scale)
                pick = (tx * 7919 + ty * 104729 + level) % len(pools[level])
                if values.max() < -12 * scale:
                    yield blank
                elif values.min() > 12 * scale:
                    yield encoded[level][pick]
                else:
                    full = sample_scaled(field, GRID, y0, x0, TILE, TILE, scale)
                    alpha = ramp(full / scale + 3 * speck, -2.0, 2.0)[..., None]
                    mixed = pools[level][pick] * alpha + blank_tile * (1 - alpha)
                    yield _encode(mixed.astype(np.uint8), quality)

    options: dict[str, Any] = {"photometric": "rgb", "compression": "jpeg", "tile": (TILE, TILE),
               "metadata": None, "dtype": np.uint8}  # fmt: skip
    desc = aperio_description(width_px, height_px, mpp=mpp, tile=TILE, quality=quality,
                              name=path.stem)  # fmt: skip
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=True) as writer:
        for level, (w, h) in enumerate(sizes):
            writer.write(
                tiles(level), shape=(h, w, 3), description=desc if level == 0 else f"level {level}",
                **options,
            )  # fmt: skip
    return path
