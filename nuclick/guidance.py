"""Patches and guidance maps: what the network sees for one click.

A patch is ``patch_size`` pixels square, centred on the click and shifted to stay inside
the image (an image smaller than the patch is padded with white, like glass). Its five
channels are RGB / 255, the inclusion map (the click, one pixel) and the exclusion map
(the other clicks that fall inside the patch, one pixel each).

Coordinates: points are (x, y) in pixels with the origin at the top-left corner of the
image; pixel (row r, column c) covers [c, c + 1) x [r, r + 1), so a click at x lies in
column floor(x).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nuclick.errors import NuClickError

PAD_VALUE = 255  # white: what lies around tissue on a slide


def check_image(image: np.ndarray, *, name: str = "image") -> np.ndarray:
    """Return ``image`` as (H, W, 3) uint8, or raise naming what is wrong."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise NuClickError(
            f"{name} must be RGB (H, W, 3), got shape {image.shape}; convert grey or RGBA first"
        )
    if image.dtype != np.uint8:
        if np.issubdtype(image.dtype, np.floating) and image.size and image.max() <= 1.0:
            image = image * 255.0
        image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return image


def check_points(points: np.ndarray, shape: tuple[int, int], *, name: str = "points") -> np.ndarray:
    """Return ``points`` as (N, 2) float64 (x, y); raise if any lies outside the image."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.size == 0:
        return np.zeros((0, 2), dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise NuClickError(f"{name} must be an (N, 2) array of (x, y), got shape {pts.shape}")
    height, width = shape
    bad = ~np.isfinite(pts).all(axis=1)
    bad |= (pts[:, 0] < 0) | (pts[:, 0] >= width) | (pts[:, 1] < 0) | (pts[:, 1] >= height)
    if bad.any():
        idx = np.flatnonzero(bad)
        shown = ", ".join(f"#{i} ({pts[i, 0]:g}, {pts[i, 1]:g})" for i in idx[:5])
        raise NuClickError(
            f"{len(idx)} of {name} lie outside the {width} x {height} image: {shown}; "
            "drop or clip them first"
        )
    return pts


def click_pixels(points: np.ndarray) -> np.ndarray:
    """(N, 2) int (row, col) of the pixel each (x, y) click falls in."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return np.floor(pts[:, ::-1]).astype(np.int64)


def patch_origins(rc: np.ndarray, shape: tuple[int, int], patch_size: int) -> np.ndarray:
    """Top-left (row, col) of the patch centred on each click, kept inside the image.

    When the image is smaller than the patch the origin is 0 (the image gets padded).
    """
    limits = np.maximum(np.asarray(shape) - patch_size, 0)
    return np.clip(np.asarray(rc) - patch_size // 2, 0, limits).astype(np.int64)


def pad_to_patch(image: np.ndarray, patch_size: int) -> np.ndarray:
    """Pad (bottom/right, white) so that both sides are at least ``patch_size``."""
    height, width = image.shape[:2]
    pad_h, pad_w = max(0, patch_size - height), max(0, patch_size - width)
    if not pad_h and not pad_w:
        return image
    return np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), constant_values=PAD_VALUE)


def build_inputs(
    image: np.ndarray,
    rc: np.ndarray,
    index: Sequence[int] | np.ndarray,
    *,
    patch_size: int,
    exclusion_rc: np.ndarray | None = None,
    same_nucleus: np.ndarray | None = None,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Network input (len(index), 5, P, P) float32 for the clicks ``rc[index]``.

    ``out``: where to write it (a slice of a reused batch buffer), else a new array.

    ``image`` is already padded (`pad_to_patch`). Exclusion points are ``exclusion_rc``
    (default: all of ``rc``) minus the click itself; ``same_nucleus`` (N,) groups clicks
    known to mark one nucleus (duplicates), which never exclude each other.
    Returns the inputs and the patch origins (row, col).
    """
    index = np.asarray(index, dtype=np.int64)
    others = rc if exclusion_rc is None else exclusion_rc
    origins = patch_origins(rc[index], image.shape[:2], patch_size)
    n = len(index)
    batch = np.empty((n, 5, patch_size, patch_size), dtype=np.float32) if out is None else out
    windows = np.lib.stride_tricks.sliding_window_view(image, (patch_size, patch_size), (0, 1))
    np.divide(windows[origins[:, 0], origins[:, 1]], np.float32(255.0), out=batch[:, :3])
    batch[:, 3:] = 0.0
    ks = np.arange(n)
    click = rc[index] - origins
    batch[ks, 3, click[:, 0], click[:, 1]] = 1.0
    local = others[None, :, :] - origins[:, None, :]  # (n, N, 2)
    inside = ((local >= 0) & (local < patch_size)).all(axis=2)
    if exclusion_rc is None:
        inside[ks, index] = False
        if same_nucleus is not None:
            inside &= same_nucleus[None, :] != same_nucleus[index][:, None]
    kk, jj = np.nonzero(inside)
    batch[kk, 4, local[kk, jj, 0], local[kk, jj, 1]] = 1.0
    return batch, origins
