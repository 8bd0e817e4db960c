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
from skimage.measure import label as label_regions
from skimage.morphology import disk, remove_small_objects

from histocurate.geometry.outline import polygons_of

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


def clicked_components(
    probs: np.ndarray,
    clicks: np.ndarray,
    *,
    threshold: float = 0.5,
    min_size: int = 10,
    fallback_radius: int = FALLBACK_RADIUS,
) -> list[tuple[PatchMask, tuple[int, int]]]:
    """`keep_clicked_component` for a batch (B, P, P), each mask cut to its bounding box.

    Returns, per patch, the cropped mask and score and the crop's top-left (row, col) in
    the patch. Same result as `keep_clicked_component` followed by a crop, much faster:
    the threshold and the bounding box of the foreground are computed for the whole
    batch; the rest runs on that box plus a one-pixel margin (every pixel outside the box
    is background joined to the border, so holes and components are the same there) and
    fills holes by labelling the background once instead of iterated dilation.
    """
    masks = np.greater(probs, threshold)
    rows_any, cols_any = np.any(masks, axis=2), np.any(masks, axis=1)
    out = []
    for b in range(len(probs)):
        click = (int(clicks[b, 0]), int(clicks[b, 1]))
        found = _component_in_box(
            probs[b], masks[b], rows_any[b], cols_any[b], click, min_size=min_size
        )
        if found is None:
            disc = disc_mask(probs[b].shape, click, fallback_radius)
            const = np.float32(np.nextafter(threshold, 0))
            found = _crop(disc, np.where(disc, const, 0).astype(np.float32), fallback=True)
        out.append(found)
    return out


def _crop(
    mask: np.ndarray, score: np.ndarray, *, fallback: bool
) -> tuple[PatchMask, tuple[int, int]]:
    sl = ndi.find_objects(mask.astype(np.int8))[0]
    assert sl is not None
    return PatchMask(mask[sl].copy(), score[sl].copy(), fallback), (sl[0].start, sl[1].start)


def _component_in_box(
    prob: np.ndarray,
    mask: np.ndarray,
    rows_any: np.ndarray,
    cols_any: np.ndarray,
    click: tuple[int, int],
    *,
    min_size: int,
) -> tuple[PatchMask, tuple[int, int]] | None:
    """The clicked component (small objects removed, holes filled), or None (fallback)."""
    rows, cols = np.flatnonzero(rows_any), np.flatnonzero(cols_any)
    if not len(rows):
        return None
    ra, rb, ca, cb = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    r, c = click
    if not (ra <= r < rb and ca <= c < cb):  # outside the box: background joined to the border
        return None
    box = np.zeros((rb - ra + 2, cb - ca + 2), dtype=bool)
    box[1:-1, 1:-1] = mask[ra:rb, ca:cb]
    labels, _ = ndi.label(box)
    if min_size > 1:
        small = np.bincount(labels.ravel()) < min_size
        small[0] = False
        if small.any():
            labels[small[labels]] = 0
            box = labels > 0
    background, n_background = ndi.label(~box)
    if n_background > 1:  # holes: background not joined to the margin (label 1)
        labels, _ = ndi.label(background != 1)
    k = labels[r - ra + 1, c - ca + 1]
    if not k:
        return None
    sl = ndi.find_objects(labels, max_label=k)[k - 1]
    assert sl is not None
    keep = labels[sl] == k
    r0, c0 = ra - 1 + sl[0].start, ca - 1 + sl[1].start
    window = prob[r0 : r0 + keep.shape[0], c0 : c0 + keep.shape[1]]
    return PatchMask(keep, np.where(keep, window, 0).astype(np.float32), False), (r0, c0)


def resolve_overlaps(
    shape: tuple[int, int],
    rc: np.ndarray,
    patches: list[PatchMask | None],
    origins: np.ndarray,
) -> np.ndarray:
    """Paint every click's mask into one label map (label = index + 1), by score.

    ``patches[i]`` is None for a click that shares another's instance (a duplicate).
    Independent of the order of the clicks: a pixel goes to the highest score, then the
    nearest click, then the click with the smaller (row, column) (then the first click).
    Pixels claimed once are painted directly; only shared pixels are sorted.
    """
    height, width = shape
    labels = np.zeros(shape, dtype=np.int32)
    keys = rc[:, 0].astype(np.int64) * (width + 1) + rc[:, 1]
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    for i, patch in enumerate(patches):
        if patch is None:
            continue
        r0, c0 = origins[i]
        rows, cols = np.nonzero(patch.mask)
        score = patch.score[rows, cols]
        rows, cols = rows + r0, cols + c0
        ok = (rows < height) & (cols < width)  # padded images: drop the padding
        parts.append((rows[ok], cols[ok], score[ok], np.full(int(ok.sum()), i)))
    if not parts:
        return labels
    rows, cols, score, idx = (np.concatenate(p) for p in zip(*parts, strict=True))
    flat = rows * width + cols
    count = np.bincount(flat, minlength=height * width)
    single = count[flat] == 1
    labels.flat[flat[single]] = idx[single] + 1
    shared = ~single
    if shared.any():
        rows, cols, score, idx, flat = (a[shared] for a in (rows, cols, score, idx, flat))
        dist = np.hypot(rows - rc[idx, 0], cols - rc[idx, 1]).astype(np.float32)
        order = np.lexsort((idx, keys[idx], dist, -score, flat))
        first = np.ones(len(order), dtype=bool)
        first[1:] = flat[order][1:] != flat[order][:-1]
        win = order[first]
        labels.flat[flat[win]] = idx[win] + 1
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
    Instances in several pieces are found with one labelling of the whole map (pixels
    join when they touch and carry the same label); only those are split.
    """
    n = len(rc)
    same_as = np.arange(n) if same_as is None else same_as
    labels = labels.copy()
    pieces, n_pieces = label_regions(labels, connectivity=1, background=0, return_num=True)
    piece_of = np.zeros(n_pieces + 1, dtype=np.int64)
    piece_of[pieces.ravel()] = labels.ravel()
    split = np.flatnonzero(np.bincount(piece_of[1:], minlength=n + 1) > 1)
    slices = ndi.find_objects(labels)
    for lab in split:
        sl = slices[lab - 1]
        assert sl is not None
        own = labels[sl] == lab
        comps, _ = ndi.label(own)
        r, c = rc[lab - 1, 0] - sl[0].start, rc[lab - 1, 1] - sl[1].start
        inside = 0 <= r < own.shape[0] and 0 <= c < own.shape[1] and comps[r, c]
        keep = comps[r, c] if inside else np.argmax(np.bincount(comps.ravel())[1:]) + 1
        view = labels[sl]
        view[own & (comps != keep)] = 0
    instance_of = np.zeros(n, dtype=np.int32)
    merged = np.zeros(n, dtype=bool)
    present = np.bincount(labels.ravel(), minlength=n + 1) > 0
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


def assemble(
    shape: tuple[int, int],
    rc: np.ndarray,
    same_as: np.ndarray,
    patches: list[PatchMask | None],
    origins: np.ndarray,
    fallback: np.ndarray,
    *,
    segmenter: str,
) -> SegmentationResult:
    """One image's result from its clicks' cropped masks (``origins``: their top-left)."""
    labels = resolve_overlaps(shape, rc, patches, origins)
    return finalize(labels, rc, fallback=fallback[same_as], same_as=same_as, segmenter=segmenter)


def from_probabilities(
    shape: tuple[int, int],
    rc: np.ndarray,
    same_as: np.ndarray,
    probs: np.ndarray,
    origins: np.ndarray,
    *,
    threshold: float = 0.5,
    min_size: int = 10,
    fallback_radius: int = FALLBACK_RADIUS,
    segmenter: str = "nuclick",
) -> SegmentationResult:
    """One image's result from the probability maps (k, P, P) of its clicks.

    ``probs[k]`` / ``origins[k]`` (patch top-left) belong to the k-th click with
    ``same_as[i] == i`` (the clicks that go through the network), in order. What
    `nuclick.predict` does after the network, in one call (tests, benchmarks).
    """
    n = len(rc)
    run = np.flatnonzero(same_as == np.arange(n))
    found = clicked_components(
        probs,
        rc[run] - origins,
        threshold=threshold,
        min_size=min_size,
        fallback_radius=fallback_radius,
    )
    patches: list[PatchMask | None] = [None] * n
    where = np.zeros((n, 2), dtype=np.int64)
    fallback = np.zeros(n, dtype=bool)
    for (patch, offset), i, origin in zip(found, run, origins, strict=True):
        patches[i], where[i], fallback[i] = patch, origin + offset, patch.fallback
    return assemble(shape, rc, same_as, patches, where, fallback, segmenter=segmenter)
