"""Small slide files for tests: pyramidal TIFFs that OpenSlide opens, with or without mpp."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile


def tissue_image(height: int, width: int, *, seed: int = 0) -> np.ndarray:
    """White glass with one pink-purple tissue rectangle in the middle half (RGB uint8)."""
    rng = np.random.default_rng(seed)
    rgb = np.full((height, width, 3), 242, np.uint8)
    y0, y1, x0, x1 = height // 4, 3 * height // 4, width // 4, 3 * width // 4
    noise = rng.integers(-20, 20, size=(y1 - y0, x1 - x0, 1))
    rgb[y0:y1, x0:x1] = np.clip(np.array([205, 120, 185]) + noise, 0, 255).astype(np.uint8)
    return rgb


def write_slide(path: Path, rgb: np.ndarray, *, mpp: float | None = 0.25, levels: int = 3) -> Path:
    """Write ``rgb`` as a tiled pyramidal TIFF; Aperio-style (with MPP) unless ``mpp`` is None."""
    height, width = rgb.shape[:2]
    description = (
        f"Aperio Image Library v12.0.0\r\n{width}x{height} [0,0 {width}x{height}] (256x256) "
        f"JPEG/RGB Q=90|AppMag = 40|MPP = {mpp}"
        if mpp is not None
        else "generic test slide"
    )
    with tifffile.TiffWriter(path, bigtiff=False) as tif:
        level = rgb
        for index in range(levels):
            tif.write(
                level,
                tile=(256, 256),
                photometric="rgb",
                compression="jpeg",
                description=description if index == 0 else None,
                subfiletype=0 if index == 0 else 1,
                metadata=None,
            )
            level = level[::2, ::2]
            if min(level.shape[:2]) < 256:
                break
    return path
