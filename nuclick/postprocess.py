"""From per-click probabilities to one instance map and one polygon per click.

Each patch is post-processed on its own, in 2-D (the public versions ran scikit-image on
the stacked batch, which it reads as one 3-D volume, so neighbouring patches merged):
threshold, remove small objects, fill holes, keep the component under the click. A click
outside every component falls back to a small disc and is flagged.

Overlaps between neighbouring nuclei are resolved by score, never by write order: each
pixel goes to the instance with the highest probability there (a fallback disc scores
just below the threshold, so a real mask wins over it); equal scores go to the nearer
click, then to the click with the smaller (row, column): the result does not depend on
the order of the clicks. Each instance then keeps the component under its click.
A click whose whole mask went to a neighbour marks the same nucleus (a double click): it
shares that neighbour's instance and polygon.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi
from shapely.geometry import Polygon
from skimage.measure import find_contours
from skimage.morphology import disk, remove_small_objects

FALLBACK_RADIUS = 4  # px at the model's resolution (0.25 um/px: a 2 um disc)


@dataclass
class PatchMask:
    """The mask kept for one click, in patch coordinates, and its score map."""

    mask: np.ndarray  # (P, P) bool
    score: np.ndarray  # (P, P) float32: probability, or the fallback's constant
    fallback: bool


@dataclass
class SegmentationResult:
    """Instance map of one image and, per click, its instance, polygon and fallback flag.

    ``instance_of[i]`` is the label of click i in ``instance_map`` (labels are click index
    + 1 of the click that owns the instance); ``polygons[i]`` its outline in image pixels
    (x, y; pixel edges, origin top-left); ``fallback[i]`` whether click i fell outside
    every predicted component and got a disc.
    """

    instance_map: np.ndarray
    instance_of: np.ndarray
    polygons: list[Polygon]
    fallback: np.ndarray
    segmenter: str
    merged: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    @property
    def n_fallback(self) -> int:
        return int(self.fallback.sum())


def keep_clicked_component(
    prob: np.ndarray,
    click_rc: tuple[int, int],
    *,
    threshold: float = 0.5,
    min_size: int = 10,
    fallback_radius: int = FALLBACK_RADIUS,
) -> PatchMask:
    """Post-process one (P, P) probability map for the click at ``click_rc`` (patch px)."""
    mask = prob > threshold
    if min_size > 1:
        mask = remove_small_objects(mask, max_size=min_size - 1)
    mask = ndi.binary_fill_holes(mask)
    labels, _ = ndi.label(mask)
    r, c = click_rc
    if labels[r, c]:
        keep = labels == labels[r, c]
        return PatchMask(keep, np.where(keep, prob, 0).astype(np.float32), fallback=False)
    disc = disc_mask(prob.shape, click_rc, fallback_radius)
    score = np.where(disc, np.float32(np.nextafter(threshold, 0)), 0).astype(np.float32)
    return PatchMask(disc, score, fallback=True)


def disc_mask(shape: tuple[int, ...], center_rc: tuple[int, int], radius: int) -> np.ndarray:
    out = np.zeros(shape[:2], dtype=bool)
    r, c = center_rc
    ys, xs = np.nonzero(disk(radius))
    ys, xs = ys + r - radius, xs + c - radius
    ok = (ys >= 0) & (ys < out.shape[0]) & (xs >= 0) & (xs < out.shape[1])
    out[ys[ok], xs[ok]] = True
    return out


def resolve_overlaps(
    shape: tuple[int, int],
    rc: np.ndarray,
    patches: list[PatchMask | None],
    origins: np.ndarray,
) -> np.ndarray:
    """Paint every click's mask into one label map (label = index + 1), by score.

    ``patches[i]`` is None for a click that shares another's instance (a duplicate).
    Independent of the order of the clicks: a pixel goes to the highest score, then the
    nearest click, then the click with the smaller (row, column).
    """
    height, width = shape
    labels = np.zeros(shape, dtype=np.int32)
    best = np.full(shape, -1.0, dtype=np.float32)
    best_dist = np.full(shape, np.inf, dtype=np.float32)
    best_key = np.full(shape, np.iinfo(np.int64).max, dtype=np.int64)
    keys = rc[:, 0].astype(np.int64) * (width + 1) + rc[:, 1]
    for i, patch in enumerate(patches):
        if patch is None:
            continue
        r0, c0 = origins[i]
        rows, cols = np.nonzero(patch.mask)
        rows, cols = rows + r0, cols + c0
        ok = (rows < height) & (cols < width)  # padded images: drop the padding
        rows, cols = rows[ok], cols[ok]
        score = patch.score[rows - r0, cols - c0]
        dist = np.hypot(rows - rc[i, 0], cols - rc[i, 1]).astype(np.float32)
        near = best_dist[rows, cols]
        wins = (score > best[rows, cols]) | (
            (score == best[rows, cols])
            & ((dist < near) | ((dist == near) & (keys[i] < best_key[rows, cols])))
        )
        rows, cols = rows[wins], cols[wins]
        labels[rows, cols] = i + 1
        best[rows, cols] = score[wins]
        best_dist[rows, cols] = dist[wins]
        best_key[rows, cols] = keys[i]
    return labels


def finalize(
    labels: np.ndarray,
    rc: np.ndarray,
    *,
    fallback: np.ndarray,
    same_as: np.ndarray | None = None,
    segmenter: str,
) -> SegmentationResult:
    """Keep each instance's component under its click; polygons; double clicks shared.

    ``same_as[i]`` is the click whose instance click i shares (itself when unique).
    """
    n = len(rc)
    same_as = np.arange(n) if same_as is None else same_as
    labels = labels.copy()
    slices = ndi.find_objects(labels)
    for lab, sl in enumerate(slices, start=1):
        if sl is None:
            continue
        own = labels[sl] == lab
        comps, count = ndi.label(own)
        if count <= 1:
            continue
        r, c = rc[lab - 1, 0] - sl[0].start, rc[lab - 1, 1] - sl[1].start
        inside = 0 <= r < own.shape[0] and 0 <= c < own.shape[1] and comps[r, c]
        keep = comps[r, c] if inside else np.argmax(np.bincount(comps.ravel())[1:]) + 1
        view = labels[sl]
        view[own & (comps != keep)] = 0
    instance_of = np.zeros(n, dtype=np.int32)
    merged = np.zeros(n, dtype=bool)
    present = np.zeros(n + 1, dtype=bool)
    present[np.unique(labels)] = True
    for i in range(n):
        owner = same_as[i]
        if present[owner + 1]:
            instance_of[i] = owner + 1
        else:  # its whole mask went to a neighbour: the same nucleus clicked twice
            instance_of[i] = labels[rc[owner, 0], rc[owner, 1]]
            merged[i] = True
        merged[i] |= owner != i
    polys = polygons_of(labels)
    empty = Polygon()
    polygons = [polys.get(int(lab), empty) for lab in instance_of]
    return SegmentationResult(labels, instance_of, polygons, fallback.copy(), segmenter, merged)


def mask_to_polygon(mask: np.ndarray, offset_rc: tuple[int, int] = (0, 0)) -> Polygon:
    """Outline of a binary mask as a valid polygon in (x, y) pixel-edge coordinates.

    The contour runs through the pixel-edge midpoints of the border pixels (half-pixel
    inside the pixel squares' outer edges); rasterising it at pixel centres gives the
    mask back. With several pieces, the largest is kept.
    """
    padded = np.pad(mask.astype(np.float32), 1)
    contours = find_contours(padded, 0.5)
    if not contours:
        return Polygon()
    best = Polygon()
    for contour in contours:
        if len(contour) < 4:
            continue
        # contour (row, col) in padded pixel-centre indices -> (x, y) in pixel-edge coords
        xy = contour[:, ::-1] - 1 + 0.5 + np.array([offset_rc[1], offset_rc[0]])
        poly = Polygon(xy)
        if not poly.is_valid:
            poly = poly.buffer(0)
            if poly.geom_type == "MultiPolygon":
                poly = max(poly.geoms, key=lambda g: g.area)
        if poly.area > best.area:
            best = poly
    return best if best.geom_type == "Polygon" else Polygon()


def polygons_of(labels: np.ndarray) -> dict[int, Polygon]:
    """Polygon of every label of an instance map."""
    out: dict[int, Polygon] = {}
    for lab, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is not None:
            out[lab] = mask_to_polygon(labels[sl] == lab, (sl[0].start, sl[1].start))
    return out
