"""The straightforward post-processing, one click at a time: the reference for the fast path.

This is the code `nuclick.predict` ran before it was vectorised (per click: threshold,
`remove_small_objects`, `binary_fill_holes`, label, keep the clicked component, crop; per
image: paint the masks by score one click after another, split instances by labelling
each one, trace each outline). It stays as the definition of the results: the tests
check that the fast path gives the same instance maps, flags and polygons, and
`benchmarks/nuclick_cpu.py` times both. Not used by the pipeline.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from shapely.geometry import Polygon

from histocurate.geometry.outline import mask_to_polygon
from nuclick.postprocess import (
    FALLBACK_RADIUS,
    PatchMask,
    SegmentationResult,
    keep_clicked_component,
)


def crop_to_mask(patch: PatchMask, origin: np.ndarray) -> tuple[PatchMask, np.ndarray]:
    """Keep only the bounding box of the mask."""
    sl = ndi.find_objects(patch.mask.astype(np.int8))[0]
    assert sl is not None
    cropped = PatchMask(patch.mask[sl].copy(), patch.score[sl].copy(), patch.fallback)
    return cropped, origin + np.array([sl[0].start, sl[1].start])


def resolve_overlaps_loop(
    shape: tuple[int, int],
    rc: np.ndarray,
    patches: list[PatchMask | None],
    origins: np.ndarray,
) -> np.ndarray:
    """Paint the masks one click after another; a pixel changes hands on a strictly
    higher score, then a nearer click, then a smaller (row, column) key."""
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
        ok = (rows < height) & (cols < width)
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


def finalize_loop(
    labels: np.ndarray,
    rc: np.ndarray,
    *,
    fallback: np.ndarray,
    same_as: np.ndarray | None = None,
    segmenter: str,
) -> SegmentationResult:
    """Label every instance on its own to keep its clicked piece; one outline per label."""
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
        else:
            instance_of[i] = labels[rc[owner, 0], rc[owner, 1]]
            merged[i] = True
        merged[i] |= owner != i
    polys: dict[int, Polygon] = {}
    for lab, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is not None:
            polys[lab] = mask_to_polygon(labels[sl] == lab, (sl[0].start, sl[1].start))
    empty = Polygon()
    polygons = [polys.get(int(lab), empty) for lab in instance_of]
    return SegmentationResult(labels, instance_of, polygons, fallback.copy(), segmenter, merged)


def reference_from_probabilities(
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
    """One image's result from the probability maps of its clicks, the slow, plain way.

    ``probs[k]`` / ``origins[k]`` belong to the k-th click with ``same_as[i] == i`` (the
    clicks that go through the network), in order.
    """
    n = len(rc)
    run = np.flatnonzero(same_as == np.arange(n))
    patches: list[PatchMask | None] = [None] * n
    where = np.zeros((n, 2), dtype=np.int64)
    fallback = np.zeros(n, dtype=bool)
    for prob, i, origin in zip(probs, run, origins, strict=True):
        click = rc[i] - origin
        patch = keep_clicked_component(
            prob,
            (int(click[0]), int(click[1])),
            threshold=threshold,
            min_size=min_size,
            fallback_radius=fallback_radius,
        )
        patches[i], where[i] = crop_to_mask(patch, np.asarray(origin))
        fallback[i] = patch.fallback
    labels = resolve_overlaps_loop(shape, rc, patches, where)
    return finalize_loop(
        labels, rc, fallback=fallback[same_as], same_as=same_as, segmenter=segmenter
    )
