"""Classical point-seeded segmenter: the fallback when no NuClick weights are at hand.

Haematoxylin from colour deconvolution (`skimage.color.rgb2hed`), smoothed; foreground =
haematoxylin above a threshold (Otsu, on the image or, when a nucleus sits in pale
surroundings, on a window around its click: whichever is lower); a compact watershed on
the inverted haematoxylin grows every click's region, never beyond ``max_radius`` of its
own click. A click that is not on haematoxylin is an anucleate object (a red blood cell):
it is grown the same way on the eosin density instead. A click on neither falls back to a
small disc. Same output as NuClick (`SegmentationResult`), same overlap and double-click
rules.
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
    return stain_densities(image, sigma)[0]


def stain_densities(image: np.ndarray, sigma: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed haematoxylin and eosin optical densities, each (H, W) float32."""
    hed = rgb2hed(image)
    h, e = hed[..., 0].astype(np.float32), hed[..., 1].astype(np.float32)
    if sigma > 0:
        h, e = ndi.gaussian_filter(h, sigma), ndi.gaussian_filter(e, sigma)
    return h, e


def _grow(
    density: np.ndarray,
    rc: np.ndarray,
    clicks: np.ndarray,
    within: np.ndarray,
    opts: WatershedOptions,
    *,
    free: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Regions of ``clicks`` grown on ``density`` (local Otsu foreground, compact watershed
    on the inverted density); returns (labels, clicks not on foreground)."""
    shape = density.shape
    global_t = _otsu(density)
    foreground = np.zeros(shape, dtype=bool)
    w = opts.window
    for i in clicks:
        r, c = rc[i]
        sl = (slice(max(0, r - w), r + w + 1), slice(max(0, c - w), c + w + 1))
        t = min(global_t, _otsu(density[sl]))
        foreground[sl] |= (density[sl] > t) & within[sl]
    if free is not None:
        foreground &= free
    foreground = ndi.binary_opening(foreground, iterations=1)
    markers = np.zeros(shape, dtype=np.int32)
    missed = []
    for i in clicks:
        r, c = rc[i]
        if foreground[r, c]:
            markers[r, c] = i + 1
        else:
            missed.append(i)
    labels = watershed(-density, markers, mask=foreground, compactness=opts.compactness)
    return labels, np.asarray(missed, dtype=np.int64)


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
    h, e = stain_densities(image, opts.sigma)
    # Distance to the nearest click: no pixel may join a click farther than max_radius, and
    # each pixel may only join its own region's click (checked below).
    seeds = np.zeros(shape, dtype=np.int32)
    reps = np.flatnonzero(same_as == np.arange(n))
    seeds[rc[reps, 0], rc[reps, 1]] = reps + 1
    dist = ndi.distance_transform_edt(seeds == 0)
    within = dist <= opts.max_radius
    labels, off_nuclei = _grow(h, rc, reps, within, opts)
    fallback = np.zeros(n, dtype=bool)
    if off_nuclei.size:  # anucleate objects (red blood cells): their eosin, where still free
        eosin, off_both = _grow(e, rc, off_nuclei, within, opts, free=labels == 0)
        labels = np.where(labels > 0, labels, eosin)
        fallback[off_both] = True
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
