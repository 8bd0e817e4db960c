"""The outlines of every instance of a map at once (vectorised marching squares).

The polygon of each instance is the one `histocurate.geometry.mask_to_polygon` traces
(skimage ``find_contours`` at 0.5 on the padded mask, largest piece, pixel-edge (x, y)
coordinates: the vertices are the midpoints between an inside pixel centre and an outside
one; diagonal neighbours are not joined), but without a Python loop per instance: all
boundary segments of all instances are made from the 2x2 cells of the padded map, chained
into rings by a lookup table and pointer jumping, and turned into shapely polygons in one
call: about 10x faster than one ``find_contours`` per nucleus on a 448 px tile of 350
nuclei (5-9 ms against 55-95 ms here). `histocurate.geometry.polygons_of` is this.

>>> labels = np.zeros((5, 6), np.int32); labels[1:4, 2:5] = 7; labels[0, 0] = 2
>>> polys = instance_polygons(labels)
>>> polys[7].bounds, polys[2].area, polys[3] is None
((2.0, 1.0, 5.0, 4.0), 0.5, True)
"""

from __future__ import annotations

import struct
from functools import cache
from typing import Any

import numpy as np
import shapely

# Cell corners (bits) and edges: TL=1, TR=2, BR=4, BL=8; edges top, right, bottom, left,
# at these offsets from the cell centre in (x, y).
_CORNERS = {1: (-0.5, -0.5), 2: (0.5, -0.5), 4: (0.5, 0.5), 8: (-0.5, 0.5)}
_EDGES = np.array([(0.0, -0.5), (0.5, 0.0), (0.0, 0.5), (-0.5, 0.0)])
T, R, B, L = 0, 1, 2, 3
# case -> segments (edge, edge, an inside corner on the segment's side)
_CASES: dict[int, list[tuple[int, int, int]]] = {
    1: [(T, L, 1)], 2: [(T, R, 2)], 4: [(R, B, 4)], 8: [(B, L, 8)],
    3: [(L, R, 1)], 6: [(T, B, 2)], 12: [(L, R, 4)], 9: [(T, B, 1)],
    5: [(T, L, 1), (R, B, 4)], 10: [(T, R, 2), (B, L, 8)],
    7: [(B, L, 1)], 11: [(R, B, 1)], 13: [(T, R, 1)], 14: [(T, L, 4)],
}  # fmt: skip


def _table() -> tuple[np.ndarray, np.ndarray]:
    """(segments per case, oriented (start, end) edges per case): the inside on the right."""
    count = np.zeros(16, dtype=np.int64)
    edges = np.zeros((16, 2, 2), dtype=np.int64)
    for case, segments in _CASES.items():
        count[case] = len(segments)
        for k, (e1, e2, corner) in enumerate(segments):
            p, q = _EDGES[e1], _EDGES[e2]
            d = q - p
            normal = np.array([-d[1], d[0]])  # right-hand side in y-down image coordinates
            if np.dot(np.array(_CORNERS[corner]) - (p + q) / 2, normal) < 0:
                e1, e2 = e2, e1
            edges[case, k] = (e1, e2)
    return count, edges


_COUNT, _EDGE_PAIRS = _table()


def _vertex(ci: np.ndarray, cj: np.ndarray, edge: np.ndarray, wp: int, nh: int) -> np.ndarray:
    """Vertex ids: horizontal pixel pairs (i, j)-(i, j+1) are i*wp + j, vertical pairs
    (i, j)-(i+1, j) are nh + i*wp + j (padded indices)."""
    i = ci + (edge == B)
    j = cj + (edge == R)
    return np.where((edge == T) | (edge == B), i * wp + j, nh + i * wp + j)


def _coords(vertex: np.ndarray, wp: int, nh: int) -> np.ndarray:
    vertical = vertex >= nh
    i, j = np.divmod(np.where(vertical, vertex - nh, vertex), wp)
    x = np.where(vertical, j - 0.5, j.astype(np.float64))
    y = np.where(vertical, i.astype(np.float64), i - 0.5)
    return np.stack([x, y], axis=1)


def _jump_min(succ: np.ndarray, longest: int) -> np.ndarray:
    """The smallest segment index of each cycle of the permutation ``succ`` (no cycle
    longer than ``longest``)."""
    rep = np.arange(len(succ))
    step = succ.copy()
    reach = 1  # rep[i] is the minimum over the next `reach` segments from i
    while reach < longest:
        rep = np.minimum(rep, np.take(rep, step))  # np.take: faster than rep[step]
        step = np.take(step, step)
        reach *= 2
    return rep


def _rank(succ: np.ndarray, rep: np.ndarray) -> np.ndarray:
    """Steps from each segment to the end of its ring when rings start at ``rep``."""
    idx = np.arange(len(succ))
    last = succ == rep  # the segment before the ring's first one
    dist = np.where(last, 0, 1)
    nxt = np.where(last, idx, succ)
    while not np.array_equal(nxt, jumped := np.take(nxt, nxt)):  # every pointer at its end
        dist = dist + np.take(dist, nxt)
        nxt = jumped
    return dist


def _side(vertex: np.ndarray, label: np.ndarray, flat: np.ndarray, wp: int, nh: int) -> np.ndarray:
    """0 when ``label`` is the pixel above / left of the vertex, 1 when below / right."""
    vertical = vertex >= nh
    first = np.where(vertical, vertex - nh, vertex)  # the top / left pixel of the pair
    return (np.take(flat, first) != label).astype(np.int64)


def _mixed_cells(
    a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols), raster order, of the 2x2 cells (corners a, b, c, d) not of one label:
    OpenCV's compare and findNonZero where it takes the type (about 2.5x numpy's)."""
    cv2 = _opencv()
    if cv2 is not None and a.dtype in (np.int16, np.int32):
        mixed = cv2.bitwise_or(cv2.compare(a, b, cv2.CMP_NE), cv2.compare(b, c, cv2.CMP_NE))
        points = cv2.findNonZero(cv2.bitwise_or(mixed, cv2.compare(c, d, cv2.CMP_NE)))
        if points is None:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        points = points.reshape(-1, 2).astype(np.int64)
        return points[:, 1], points[:, 0]
    flat = np.flatnonzero((a != b) | (b != c) | (c != d))
    return np.divmod(flat, a.shape[1])


@cache
def _opencv() -> Any:
    try:
        import cv2
    except ImportError:  # pragma: no cover - the pinned environment has it (albumentations)
        return None
    return cv2


def instance_polygons(labels: np.ndarray) -> list[shapely.Polygon | None]:
    """Polygon of each id of ``labels`` (index = id; None where the id is absent)."""
    n_ids, ring_label, coords, length = outer_rings(labels)
    out: list[shapely.Polygon | None] = [None] * n_ids
    if not len(length):
        return out
    sorted_ids = np.repeat(np.arange(len(length)), length)
    polygons = shapely.polygons(shapely.linearrings(coords, indices=sorted_ids))
    for label, polygon in zip(ring_label, polygons, strict=True):
        out[int(label)] = polygon
    return out


def instance_wkb(labels: np.ndarray) -> list[bytes | None]:
    """The same polygons as little-endian WKB, written directly (no shapely objects).

    >>> import shapely
    >>> lab = np.zeros((4, 4), np.int32); lab[1:3, 1:3] = 1
    >>> shapely.from_wkb(instance_wkb(lab)[1]).equals(instance_polygons(lab)[1])
    True
    """
    n_ids, ring_label, coords, length = outer_rings(labels)
    out: list[bytes | None] = [None] * n_ids
    if not len(length):
        return out
    start = np.concatenate([[0], np.cumsum(length)[:-1]])
    closed_start = start + np.arange(len(length))
    closed = np.empty((len(coords) + len(length), 2))
    where = np.repeat(closed_start - start, length) + np.arange(len(coords))
    closed[where] = coords
    closed[closed_start + length] = coords[start]  # each ring ends on its first point
    body = closed.astype("<f8").tobytes()
    for label, first, count in zip(ring_label, closed_start, length + 1, strict=True):
        head = struct.pack("<BIII", 1, 3, 1, int(count))
        out[int(label)] = head + body[16 * int(first) : 16 * int(first + count)]
    return out


def outer_rings(labels: np.ndarray) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """(number of ids, ring id of each ring, vertices (N, 2) ring after ring, ring lengths):
    the outer ring of each id's largest piece."""
    lab = np.asarray(labels)
    n_ids = int(lab.max()) + 1 if lab.size else 1
    if n_ids == 1:
        return n_ids, np.zeros(0, np.int64), np.zeros((0, 2)), np.zeros(0, np.int64)
    # the narrowest type: the comparisons below run over every pixel
    dtype = np.int16 if n_ids < 2**15 else np.int32 if n_ids < 2**31 else np.int64
    pad = np.zeros((lab.shape[0] + 2, lab.shape[1] + 2), dtype=dtype)
    pad[1:-1, 1:-1] = lab
    hp, wp = pad.shape
    nh = hp * wp
    a, b, c, d = pad[:-1, :-1], pad[:-1, 1:], pad[1:, 1:], pad[1:, :-1]
    ci, cj = _mixed_cells(a, b, c, d)
    corner = ci * wp + cj  # a's pixel in the padded map; b, c, d clockwise from it
    flat = pad.ravel()
    la, lb = np.take(flat, corner), np.take(flat, corner + 1)
    lc, ld = np.take(flat, corner + wp + 1), np.take(flat, corner + wp)
    firsts = [la > 0, (lb > 0) & (lb != la), (lc > 0) & (lc != la) & (lc != lb),
              (ld > 0) & (ld != la) & (ld != lb) & (ld != lc)]  # fmt: skip
    cells = np.concatenate([np.nonzero(f)[0] for f in firsts])
    label = np.concatenate([x[f] for x, f in zip((la, lb, lc, ld), firsts, strict=True)])
    case = (
        (la[cells] == label) * 1 + (lb[cells] == label) * 2
        + (lc[cells] == label) * 4 + (ld[cells] == label) * 8
    )  # fmt: skip
    two = _COUNT[case] == 2
    seg_cell = np.concatenate([cells, cells[two]])
    seg_label = np.concatenate([label, label[two]])
    pairs = np.concatenate([_EDGE_PAIRS[case, 0], _EDGE_PAIRS[case[two], 1]])
    start = _vertex(ci[seg_cell], cj[seg_cell], pairs[:, 0], wp, nh)
    end = _vertex(ci[seg_cell], cj[seg_cell], pairs[:, 1], wp, nh)
    # a vertex lies between two pixels: (vertex, side of the label) names one segment start
    key_start = 2 * start + _side(start, seg_label, flat, wp, nh)
    key_end = 2 * end + _side(end, seg_label, flat, wp, nh)
    n = len(start)
    table = np.empty(4 * nh, dtype=np.int32)  # only written keys are read (checked below)
    table[key_start] = np.arange(n)
    succ = np.clip(np.take(table, key_end), 0, n - 1)
    if not np.array_equal(np.take(key_start, succ), key_end):
        raise AssertionError("outline segments do not close into rings")
    rep = _jump_min(succ, int(np.bincount(seg_label).max()))
    xy0 = _coords(start, wp, nh)
    xy1 = np.take(xy0, succ, axis=0)  # a segment ends where its successor starts
    cross = xy0[:, 0] * xy1[:, 1] - xy1[:, 0] * xy0[:, 1]
    is_rep = rep == np.arange(n)
    rings = np.nonzero(is_rep)[0]
    ring_of = (np.cumsum(is_rep) - 1)[rep]
    area = np.abs(np.bincount(ring_of, weights=cross)) / 2
    ring_label = seg_label[rings]
    by_label = np.lexsort((-area, ring_label))
    first = np.ones(len(by_label), dtype=bool)
    first[1:] = ring_label[by_label][1:] != ring_label[by_label][:-1]
    chosen = np.zeros(len(rings), dtype=bool)
    chosen[by_label[first]] = True
    keep = np.nonzero(chosen[ring_of])[0]
    dist = _rank(succ, rep)[keep]
    # ring k of the chosen ones occupies [offset_k, offset_k + length_k); the first segment
    # (the ring's rep) is the farthest from the ring's end
    new_id = np.cumsum(chosen) - 1
    ring_ids = new_id[ring_of[keep]]
    length = np.bincount(ring_ids)
    offset = np.concatenate([[0], np.cumsum(length)[:-1]])
    position = offset[ring_ids] + (length[ring_ids] - 1 - dist)
    order = np.empty(len(keep), dtype=np.int64)
    order[position] = keep
    return n_ids, ring_label[chosen], np.take(xy0, order, axis=0), length
