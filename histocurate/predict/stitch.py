"""Stitching the nuclei of overlapping windows into one set per slide.

Rules, in order:

1. A nucleus is *cut* when it reaches an edge of its window beyond which another window
   runs (that window saw more of it). One reaching an edge with no window beyond (the end
   of the tissue) is not cut: nowhere holds more of it.
2. Ranking, best first: whole before cut; then the *owner* (its window's core holds its
   centroid); then the deepest inside its window (distance of its box to the window's
   edges that have a neighbour); then window and row order (deterministic).
3. Duplicates: outlines of different windows are the same nucleus when either one's
   centroid lies inside the other (two windows' outlines of a nucleus nearly coincide, a
   cut piece lies inside the whole; two distinct nuclei never hold each other's centre),
   or, for two cut pieces, when they overlap by a tenth of the smaller; they are found with
   STRtrees (centroids in boxes; boxes of cut pieces), then exact point-in-outline tests
   and intersections. Non-maximum suppression keeps the
   best ranked of each group: a nucleus counts once, and one cut in its owner window is
   taken from the window where it lies whole. A nucleus cut in every window that sees it
   (wider than twice the margin) is kept once, as its owner's piece (``partial``). Nuclei
   wholly inside a window's core shrunk by the margin are seen by no other window and skip
   the search.
4. A kept nucleus belongs to the tissue tile holding its centroid (``tile_id``); one whose
   centroid lies on no tissue tile is outside the analysed area and dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import shapely

from histocurate.predict.windows import WindowGrid
from histocurate.predict.worker import WindowCells

CUT_OVERLAP = 0.1  # two cut pieces overlapping by this share of the smaller: one nucleus


@dataclass
class Stitched:
    """The nuclei kept on one slide (arrays of equal length, level-0 pixels)."""

    tile_id: np.ndarray
    x: np.ndarray
    y: np.ndarray
    wkb: np.ndarray
    area: np.ndarray  # level-0 px squared
    type_index: np.ndarray
    confidence: np.ndarray
    probs: np.ndarray
    window: np.ndarray
    found: int  # nuclei the windows gave
    cut: int  # dropped: cut by a window edge, found whole (or a larger piece) elsewhere
    duplicates: int  # dropped: whole, and found whole in a better placed window too
    partial: int  # kept although cut: no window holds them whole
    off_tissue: int  # dropped: centroid on no tissue tile

    def __len__(self) -> int:
        return int(self.x.size)


def _concat(parts: Sequence[WindowCells], n_classes: int) -> dict[str, np.ndarray]:
    parts = [p for p in parts if len(p)]
    if not parts:
        empty = WindowCells.empty(-1, n_classes)
        parts = [empty]
    keys = np.array([p.key for p in parts], dtype=np.int64)
    out = {
        name: np.concatenate([getattr(p, name) for p in parts])
        for name in ("x", "y", "bbox", "touch", "area", "type_index", "confidence", "probs", "wkb")
    }
    out["window"] = np.repeat(keys, [len(p) for p in parts])
    return out


def _pairs(tree_of: np.ndarray, query: np.ndarray, predicate: str) -> tuple[np.ndarray, ...]:
    """(query row, tree row) pairs of two geometry arrays (STRtree bulk query)."""
    if not tree_of.size or not query.size:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    found = shapely.STRtree(tree_of).query(query, predicate=predicate)
    return found[0], found[1]


def _conflicts(
    c: dict[str, np.ndarray], cut: np.ndarray, idx: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Pairs (a, b) of rows of ``idx`` (different windows) that are one nucleus:

    - either centroid lies inside the other's outline (two windows' outlines of a nucleus
      nearly coincide, or one is a piece of the other; distinct nuclei never hold each
      other's centre): found as the centroids inside each other's box (an STRtree of the
      centroids queried by the boxes), then exact point-in-outline tests;
    - two cut pieces: their outlines overlap by `CUT_OVERLAP` of the smaller one at least
      (pieces of one wide nucleus cut by two windows: neither need hold the other's centre).
    """
    bbox, window, area = c["bbox"], c["window"], c["area"]
    boxes = shapely.box(*bbox[idx].T) if idx.size else np.zeros(0, object)
    qa, tb = _pairs(shapely.points(c["x"][idx], c["y"][idx]), boxes, "intersects")
    a, b = idx[qa], idx[tb]
    keep = window[a] != window[b]
    a, b = a[keep], b[keep]
    rows, inverse = np.unique(a, return_inverse=True)
    geoms = shapely.from_wkb(c["wkb"][rows]) if rows.size else rows
    inside = shapely.contains_xy(geoms[inverse], c["x"][b], c["y"][b]) if a.size else a
    a, b = a[inside.astype(bool)], b[inside.astype(bool)]
    pieces = idx[cut[idx]]
    qa, tb = _pairs(boxes[cut[idx]], boxes[cut[idx]], "intersects") if pieces.size else (a[:0],) * 2
    pa, pb = pieces[qa], pieces[tb]
    keep = (pa < pb) & (window[pa] != window[pb])
    pa, pb = pa[keep], pb[keep]
    if pa.size:
        ga = shapely.make_valid(shapely.from_wkb(c["wkb"][pa]))
        gb = shapely.make_valid(shapely.from_wkb(c["wkb"][pb]))
        need = CUT_OVERLAP * np.minimum(area[pa], area[pb])
        same = shapely.area(shapely.intersection(ga, gb)) >= need
        pa, pb = pa[same], pb[same]
    return np.concatenate([a, pa]), np.concatenate([b, pb])


def suppress(rank: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Greedy non-maximum suppression on the conflict graph (edges a-b): True where kept.

    A node is kept when it outranks every undecided neighbour; its undecided neighbours are
    then dropped; repeat (vectorised rounds, as many as the longest chain of conflicts).

    >>> suppress(np.array([3, 2, 1]), np.array([0, 1]), np.array([1, 2])).tolist()
    [True, False, True]
    """
    n = rank.size
    state = np.zeros(n, np.int8)  # 0 undecided, 1 kept, -1 dropped
    src, dst = np.concatenate([a, b]), np.concatenate([b, a])
    while (state == 0).any():
        live = (state[src] == 0) & (state[dst] == 0)
        best = np.full(n, -1, np.int64)
        np.maximum.at(best, src[live], rank[dst[live]])
        win = (state == 0) & (best < rank)
        state[win] = 1
        loser = dst[win[src] & (state[dst] == 0)]
        state[loser] = -1
    return state == 1


def tile_lookup(tiles: pd.DataFrame, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The tissue tile (``tiles`` rows of one slide) holding each point; None off tissue."""
    out = np.full(x.size, None, dtype=object)
    if not len(tiles) or not x.size:
        return out
    size = float(tiles["size_level0"].iloc[0])
    col = np.floor(tiles["x"].to_numpy(np.float64) / size).astype(np.int64)
    row = np.floor(tiles["y"].to_numpy(np.float64) / size).astype(np.int64)
    width = int(max(col.max(), np.floor(x.max() / size))) + 2
    known = pd.Index(row * width + col + 1)
    qc, qr = np.floor(x / size).astype(np.int64), np.floor(y / size).astype(np.int64)
    found = known.get_indexer(np.where((qc >= 0) & (qr >= 0), qr * width + qc + 1, -1))
    ids = tiles["tile_id"].to_numpy(object)
    out[found >= 0] = ids[found[found >= 0]]
    return out


def stitch(
    grid: WindowGrid, parts: Sequence[WindowCells], tiles: pd.DataFrame, *, n_classes: int
) -> Stitched:
    """One slide's nuclei from its windows' (``WindowCells.key``: the window index)."""
    c = _concat(parts, n_classes)
    n = c["x"].size
    keys = np.array([w.index for w in grid.windows], dtype=np.int64)
    near_w = np.array([w.neighbours for w in grid.windows], dtype=bool).reshape(-1, 4)
    box_w = np.array(
        [(w.x0, w.y0, w.x0 + w.side0, w.y0 + w.side0) for w in grid.windows], dtype=np.float64
    ).reshape(-1, 4)
    core_w = np.array([w.core for w in grid.windows], dtype=np.float64).reshape(-1, 4)
    at = np.searchsorted(keys, c["window"])  # windows are sorted by index
    if n and (at.max() >= keys.size or (keys[at] != c["window"]).any()):
        raise ValueError("nuclei from a window that is not in the grid")
    near, box0, core = near_w[at], box_w[at], core_w[at]
    bbox = c["bbox"]
    cut = (c["touch"] & near).any(axis=1)
    gap = np.stack(
        [
            bbox[:, 0] - box0[:, 0],
            bbox[:, 1] - box0[:, 1],
            box0[:, 2] - bbox[:, 2],
            box0[:, 3] - bbox[:, 3],
        ],
        axis=1,
    )
    depth = np.where(near, gap, np.inf).min(axis=1) if n else np.zeros(0)
    depth = np.where(np.isfinite(depth), depth, 1e18)
    owner = grid.owner(c["x"], c["y"]) == c["window"]
    m = grid.margin0
    alone = (
        (bbox[:, 0] >= core[:, 0] + m)
        & (bbox[:, 1] >= core[:, 1] + m)
        & (bbox[:, 2] <= core[:, 2] - m)
        & (bbox[:, 3] <= core[:, 3] - m)
    )
    area = c["area"]
    a, b = _conflicts(c, cut, np.flatnonzero(~alone))
    order = np.lexsort((np.arange(n), c["window"], -depth, ~owner, cut))  # best first
    rank = np.empty(n, np.int64)
    rank[order] = n - np.arange(n)
    kept = suppress(rank, a, b)
    tile = tile_lookup(tiles, c["x"], c["y"])
    on_tissue = kept & (tile != None)  # noqa: E711 (element-wise)
    idx = np.flatnonzero(on_tissue)
    idx = idx[np.lexsort((c["x"][idx], c["y"][idx], tile[idx].astype(str)))]
    return Stitched(
        tile_id=tile[idx],
        x=c["x"][idx],
        y=c["y"][idx],
        wkb=c["wkb"][idx],
        area=area[idx],
        type_index=c["type_index"][idx],
        confidence=c["confidence"][idx],
        probs=c["probs"][idx],
        window=c["window"][idx],
        found=n,
        cut=int((cut & ~kept).sum()),
        duplicates=int((~cut & ~kept).sum()),
        partial=int((cut & kept).sum()),
        off_tissue=int(kept.sum() - on_tissue.sum()),
    )
