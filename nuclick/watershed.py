"""Classical point-seeded segmenter: the fallback when no NuClick weights are at hand.

Haematoxylin from colour deconvolution (`skimage.color.rgb2hed`), smoothed; foreground =
haematoxylin above a threshold (Otsu, on the image or, when a nucleus sits in pale
surroundings, on a window around its click: whichever is lower); a compact watershed on
the inverted haematoxylin grows every click's region, never beyond ``max_radius`` of its
own click. A click on a pixel that is not foreground falls back to a small disc.
Same output as NuClick (`SegmentationResult`), same overlap and double-click rules.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.color import rgb2hed
from skimage.filters import threshold_otsu
from skimage.segmentation import watershed

from nuclick.guidance import check_image, check_points, click_pixels
from nuclick.postprocess import FALLBACK_RADIUS, SegmentationResult, disc_mask, finalize
from nuclick.predict import duplicate_groups


@dataclass(frozen=True)
class WatershedOptions:
    """Settings in pixels at 0.25 um/px (scale them for other resolutions)."""

    max_radius: float = 22.0  # a nucleus is at most ~11 um across
    sigma: float = 1.0
    compactness: float = 0.01
    window: int = 48  # half-side of the local Otsu window
    min_size: int = 10
    fallback_radius: int = FALLBACK_RADIUS
    duplicate_px: float = 2.0


def haematoxylin(image: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Smoothed haematoxylin optical density (H, W) float32."""
    hed = rgb2hed(image)
    h = hed[..., 0].astype(np.float32)
    return ndi.gaussian_filter(h, sigma) if sigma > 0 else h


def _otsu(values: np.ndarray) -> float:
    return float(threshold_otsu(values)) if values.size and np.ptp(values) > 0 else np.inf


def watershed_segment(
    image: np.ndarray, points: np.ndarray, *, options: WatershedOptions | None = None
) -> SegmentationResult:
    """Segment the nuclei clicked at ``points`` ((N, 2) x, y) in one RGB image."""
    opts = options or WatershedOptions()
    image = check_image(image)
    shape = (int(image.shape[0]), int(image.shape[1]))
    pts = check_points(points, shape)
    n = len(pts)
    rc = click_pixels(pts)
    same_as = duplicate_groups(pts, opts.duplicate_px)
    if n == 0:
        return finalize(
            np.zeros(shape, np.int32), rc, fallback=np.zeros(0, bool), segmenter="watershed"
        )
    h = haematoxylin(image, opts.sigma)
    global_t = _otsu(h)
    # Distance to the nearest click, and which click: no pixel may join a click farther
    # than max_radius, and each pixel may only join its own region's click (checked below).
    seeds = np.zeros(shape, dtype=np.int32)
    reps = np.flatnonzero(same_as == np.arange(n))
    seeds[rc[reps, 0], rc[reps, 1]] = reps + 1
    dist, (near_r, near_c) = ndi.distance_transform_edt(seeds == 0, return_indices=True)
    within = dist <= opts.max_radius
    foreground = np.zeros(shape, dtype=bool)
    w = opts.window
    for i in reps:
        r, c = rc[i]
        sl = (slice(max(0, r - w), r + w + 1), slice(max(0, c - w), c + w + 1))
        t = min(global_t, _otsu(h[sl]))
        foreground[sl] |= (h[sl] > t) & within[sl]
    foreground = ndi.binary_opening(foreground, iterations=1)
    fallback = np.zeros(n, dtype=bool)
    markers = np.zeros(shape, dtype=np.int32)
    for i in reps:
        r, c = rc[i]
        if foreground[r, c]:
            markers[r, c] = i + 1
        else:
            fallback[i] = True
    labels = watershed(-h, markers, mask=foreground, compactness=opts.compactness)
    # Keep each pixel only if it lies within max_radius of its own click.
    lab_idx = np.maximum(labels - 1, 0)
    far = np.hypot(
        np.arange(shape[0])[:, None] - rc[lab_idx, 0], np.arange(shape[1])[None, :] - rc[lab_idx, 1]
    )
    labels[(labels > 0) & (far > opts.max_radius)] = 0
    labels = _clean(labels, opts.min_size)
    for i in reps:
        r, c = rc[i]
        if not fallback[i] and labels[r, c] != i + 1:
            fallback[i] = True
        if fallback[i]:  # a disc, only on pixels no other nucleus holds
            disc = disc_mask(shape, (int(r), int(c)), opts.fallback_radius)
            labels[disc & (labels == 0)] = i + 1
            labels[r, c] = i + 1
    del near_r, near_c
    return finalize(labels, rc, fallback=fallback[same_as], same_as=same_as, segmenter="watershed")


def _clean(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Fill each region's holes; drop regions under ``min_size`` pixels."""
    out = np.zeros_like(labels)
    for lab, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        region = ndi.binary_fill_holes(labels[sl] == lab)
        if region.sum() < min_size:
            continue
        view = out[sl]
        view[region & ((labels[sl] == lab) | (labels[sl] == 0))] = lab
    return out
