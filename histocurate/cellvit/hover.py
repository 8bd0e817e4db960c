"""HoVer-Net's instance map from NP and HV maps (steps 1-4 of
`histocurate.cellvit.postprocess`), and its settings.

A blob holding one marker is that marker's nucleus (the watershed would flood it whole),
so the watershed runs only on blobs with several, packed into one small mosaic. Filters
and connected components are OpenCV's where it is installed, their scipy / numpy
equivalents otherwise (`histocurate.cellvit.filters`).

>>> HoverOptions.for_mpp(0.5).sobel_ksize
11
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from histocurate.cellvit.filters import (
    blur3,
    drop_small,
    fill_holes,
    label4,
    minmax,
    open_ellipse5,
    sobel_x,
    sobel_y,
)

FORTY_X_MAX_MPP = 0.375  # below: 40x settings (0.25 um/px); above: 20x (0.5 um/px)


@dataclass(frozen=True, kw_only=True)
class HoverOptions:
    """Post-processing settings (40x defaults; `for_mpp` picks them by resolution)."""

    np_threshold: float = 0.5
    sobel_ksize: int = 21
    marker_threshold: float = 0.4
    min_size: int = 10
    marker_min_size: int = 10
    drop_untyped: bool = False
    polygons: bool = True

    def __post_init__(self) -> None:
        if self.sobel_ksize < 3 or self.sobel_ksize % 2 == 0:
            raise ValueError(f"sobel_ksize must be odd and >= 3, got {self.sobel_ksize}")

    @classmethod
    def for_mpp(cls, mpp: float, **overrides: Any) -> HoverOptions:
        """40x (ksize 21, min sizes 10) up to 0.375 um/px, 20x (11, 5) above."""
        if not mpp > 0:
            raise ValueError(f"mpp must be positive, got {mpp}")
        base = cls() if mpp <= FORTY_X_MAX_MPP else cls(sobel_ksize=11, min_size=5,
                                                          marker_min_size=5)  # fmt: skip
        return replace(base, **overrides)


def instance_map(np_prob: np.ndarray, hv: np.ndarray, options: HoverOptions) -> np.ndarray:
    """Steps 1-4: the int32 instance map, ids 1..n contiguous."""
    blobs, blob_sizes, _ = label4(np_prob >= options.np_threshold, boxes=False)
    blobs = drop_small(blobs, blob_sizes, options.min_size)
    nuclei = blobs > 0
    k = options.sobel_ksize
    # HoVer-Net min-max scales the HV maps first: Sobel is linear and its kernels sum to 0,
    # so that positive scaling and shift vanish in the min-max scaling after it
    sob_h = 1.0 - minmax(sobel_x(hv[0], k))
    sob_v = 1.0 - minmax(sobel_y(hv[1], k))
    energy = np.maximum(sob_h, sob_v)
    np.multiply(energy, nuclei, out=energy)  # 0 outside nuclei (faster than a masked set)
    markers = nuclei & (energy < options.marker_threshold)
    markers = open_ellipse5(fill_holes(markers))
    seeds, seed_sizes, _ = label4(markers, boxes=False)
    present = seed_sizes >= options.marker_min_size  # the seeds kept (HoVer-Net: size < min)
    present[0] = False
    if not present.any():
        return np.zeros(np_prob.shape, dtype=np.int32)
    compact = np.cumsum(present) * present  # seed id -> 1..n (0: too small, dropped)
    ids = np.flatnonzero(present)
    # each seed lies inside one blob; blobs with one seed are that seed's nucleus (the
    # watershed would flood it whole); ids are made contiguous on the small tables
    where = np.flatnonzero(seeds)
    blob_of_seed = np.zeros(len(present), dtype=np.int64)
    blob_of_seed[seeds.ravel()[where]] = blobs.ravel()[where]  # one blob per seed
    per_blob = np.bincount(blob_of_seed[ids], minlength=len(blob_sizes))
    lone = per_blob[blob_of_seed[ids]] == 1
    single = np.zeros(len(per_blob), dtype=np.int32)
    single[blob_of_seed[ids[lone]]] = compact[ids[lone]]
    out = np.take(single, blobs)  # (np.take: about 2x faster than single[blobs] here)
    crowded = np.flatnonzero(per_blob > 1)
    if len(crowded):
        dist = -blur3((1.0 - energy) * nuclei)
        _flood_crowded(out, blobs, seeds, compact, dist, crowded)
    return out.astype(np.int32, copy=False)


def _flood_crowded(
    out: np.ndarray,
    blobs: np.ndarray,
    seeds: np.ndarray,
    seed_ids: np.ndarray,
    dist: np.ndarray,
    ids: np.ndarray,
) -> None:
    """Watershed of the blobs ``ids`` (several seeds each, renumbered by ``seed_ids``),
    written into ``out``.

    Their bounding boxes are packed into one small mosaic (rows of boxes, one empty pixel
    between them) and flooded in one call: each blob floods alone either way, so the
    result is the whole-tile watershed's, at the cost of the blobs' area only. Seed pixels
    with no unlabelled neighbour are left out of the flood (and copied back after): the
    watershed would queue each of them once and find nothing to label from it.
    """
    boxes = ndi.find_objects(blobs)
    items = sorted(
        ((boxes[i - 1], int(i)) for i in ids), key=lambda t: t[0][0].start - t[0][0].stop
    )  # tallest first
    width = max(out.shape[1], max(s[1].stop - s[1].start for s, _ in items)) + 1
    places, x, y, shelf = [], 0, 0, 0
    for box, _ in items:
        h, w = box[0].stop - box[0].start, box[1].stop - box[1].start
        if x + w > width:
            x, y, shelf = 0, y + shelf + 1, 0
        places.append((y, x))
        x, shelf = x + w + 1, max(shelf, h)
    height = y + shelf
    m_dist = np.zeros((height, width), dtype=dist.dtype)
    m_seed = np.zeros((height, width), dtype=seed_ids.dtype)
    m_mask = np.zeros((height, width), dtype=bool)
    for (box, blob), (py, px) in zip(items, places, strict=True):
        h, w = box[0].stop - box[0].start, box[1].stop - box[1].start
        spot = slice(py, py + h), slice(px, px + w)
        mine = blobs[box] == blob
        m_mask[spot] = mine
        m_dist[spot] = dist[box]
        m_seed[spot] = np.where(mine, seed_ids[seeds[box]], 0)
    open_ = m_mask & (m_seed == 0)  # what the flood labels
    inert = m_seed > 0
    inert[1:] &= ~open_[:-1]
    inert[:-1] &= ~open_[1:]
    inert[:, 1:] &= ~open_[:, :-1]
    inert[:, :-1] &= ~open_[:, 1:]
    flood = watershed(m_dist, np.where(inert, 0, m_seed), mask=m_mask & ~inert)
    flood = np.where(inert, m_seed, flood)
    for (box, _), (py, px) in zip(items, places, strict=True):
        h, w = box[0].stop - box[0].start, box[1].stop - box[1].start
        spot = slice(py, py + h), slice(px, px + w)
        out[box] = np.where(m_mask[spot], flood[spot], out[box])
