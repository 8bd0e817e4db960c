"""Match the masks of different annotators into nuclei (the geometry half of consensus).

The rule, in full (tests in ``tests/test_consensus_matching.py`` pin each case):

1. *Candidate pairs.* Two masks can be the same nucleus when they lie on the same tile, come
   from different annotators and have IoU > ``iou_threshold``. Pairs are found with one
   shapely ``STRtree`` over the masks' bounding boxes (each tile shifted to its own strip of
   the plane), so the work grows with the number of overlapping pairs, not with n^2.
2. *Components.* The candidate pairs make a graph; its connected components are solved
   independently. Almost every component is already a clean nucleus: at most one mask per
   annotator and every two of its masks a candidate pair. Those become one group as they are.
3. *Conflicts* (a chain A~B, B~C with A !~ C; or two candidate masks from one annotator).
   A nucleus must be a *clique*: at most one mask per annotator and every two of its masks a
   candidate pair (so in the chain A~B~C, A and C are never merged through B). Among all
   partitions of the component into cliques we pick the one that keeps the most pairwise
   agreements (pairs of masks placed in the same nucleus), ties broken by the largest total
   IoU of those pairs. A triangle therefore beats any split of it; in a chain the stronger
   pair wins and the third mask stays alone; of two candidates from one annotator the better
   overlapping one joins, the other stays alone (or joins another nucleus if it can).

   * With two annotators this objective is a maximum-cardinality, then maximum-IoU,
     bipartite matching, solved exactly by ``scipy.optimize.linear_sum_assignment``.
   * With three or more annotators and at most ``exact_limit`` masks, an exact search over
     clique partitions (memoised on the set of masks left).
   * Larger multi-annotator components (rare: long chains in crowded, sloppy regions) are
     built annotator by annotator, each step an optimal assignment (linear_sum_assignment)
     of the next annotator's masks to the nuclei so far, a mask joining only a nucleus it
     overlaps above threshold with every member. This is optimal per step, not globally.

Masks whose geometry is missing or empty take no part (group -1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import shapely
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

EXACT_LIMIT = 10
"""Largest multi-annotator conflict component solved by exact search."""


@dataclass(frozen=True, slots=True)
class Matching:
    """Result of `match_masks`: a group per mask and the candidate pairs with their IoU.

    ``group[i]`` is the nucleus index of mask ``i`` (0..n_groups-1; -1 when the mask has no
    usable geometry). Each group holds at most one mask per annotator.
    """

    group: np.ndarray  # (n,) int64
    n_groups: int
    pair_i: np.ndarray  # (p,) int64, candidate pairs with IoU > threshold, pair_i < pair_j
    pair_j: np.ndarray
    pair_iou: np.ndarray  # (p,) float64

    def within_group_pairs(self) -> np.ndarray:
        """Boolean mask over the candidate pairs: both masks ended in the same group."""
        gi = self.group[self.pair_i]
        return (gi >= 0) & (gi == self.group[self.pair_j])


def candidate_pairs(
    tile: np.ndarray, annotator: np.ndarray, geoms: np.ndarray, *, iou_threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i < j) of masks on the same tile, from different annotators, IoU > threshold.

    ``tile`` and ``annotator`` are integer codes; ``geoms`` shapely geometries (None or empty
    ones are skipped).
    """
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))
    usable = np.flatnonzero(~(shapely.is_missing(geoms) | shapely.is_empty(geoms)))
    if usable.size < 2:
        return empty
    bounds = shapely.bounds(geoms[usable])
    # Tiles share one pixel frame: shift each tile to its own strip so one tree serves all.
    span = float(np.nanmax(bounds[:, 2]) - np.nanmin(bounds[:, 0])) + 16.0
    shift = tile[usable].astype(np.float64) * span
    boxes = shapely.box(bounds[:, 0] + shift, bounds[:, 1], bounds[:, 2] + shift, bounds[:, 3])
    tree = shapely.STRtree(boxes)
    left, right = tree.query(boxes, predicate="intersects")
    keep = left < right
    left, right = left[keep], right[keep]
    i, j = usable[left], usable[right]
    keep = (annotator[i] != annotator[j]) & (tile[i] == tile[j])
    i, j = i[keep], j[keep]
    # Cheap upper bound first: the intersection is at most the smaller area and the boxes'
    # overlap, which rules out most neighbour pairs before any polygon clipping.
    area = shapely.area(geoms[usable])
    li, rj = left[keep], right[keep]
    box_inter = np.clip(
        np.minimum(bounds[li, 2], bounds[rj, 2]) - np.maximum(bounds[li, 0], bounds[rj, 0]), 0, None
    ) * np.clip(
        np.minimum(bounds[li, 3], bounds[rj, 3]) - np.maximum(bounds[li, 1], bounds[rj, 1]), 0, None
    )
    bound = np.minimum(np.minimum(area[li], area[rj]), box_inter)
    keep = bound > iou_threshold * (area[li] + area[rj] - bound)
    i, j = i[keep], j[keep]
    if i.size == 0:
        return empty
    inter = shapely.area(shapely.intersection(geoms[i], geoms[j]))
    union = shapely.area(geoms[i]) + shapely.area(geoms[j]) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    keep = iou > iou_threshold
    order = np.lexsort((j[keep], i[keep]))
    return i[keep][order], j[keep][order], iou[keep][order]


def match_masks(
    tile: np.ndarray,
    annotator: np.ndarray,
    geoms: np.ndarray,
    *,
    iou_threshold: float = 0.4,
    exact_limit: int = EXACT_LIMIT,
) -> Matching:
    """Group masks into nuclei by the rule in this module's docstring.

    ``tile`` and ``annotator`` are integer codes (one per mask); ``geoms`` shapely geometries.
    Deterministic: the result depends only on the inputs' order-independent content up to
    the row order of equally good solutions.
    """
    n = len(geoms)
    tile = np.asarray(tile, dtype=np.int64)
    annotator = np.asarray(annotator, dtype=np.int64)
    pi, pj, piou = candidate_pairs(tile, annotator, geoms, iou_threshold=iou_threshold)
    group = np.full(n, -1, dtype=np.int64)
    usable = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    if n == 0:
        return Matching(group, 0, pi, pj, piou)

    graph = coo_matrix((np.ones(pi.size), (pi, pj)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    size = np.bincount(comp, minlength=comp.max() + 1)
    edges = np.bincount(comp[pi], minlength=size.size)
    comp_annot = np.unique(np.stack([comp, annotator], axis=1), axis=0)
    distinct = np.bincount(comp_annot[:, 0], minlength=size.size)
    clean = (distinct == size) & (edges == size * (size - 1) // 2)

    group[:] = comp
    next_id = size.size
    conflict = np.flatnonzero(~clean)
    if conflict.size:
        by_comp = _split_by(comp, conflict)
        edge_comp = comp[pi]
        pairs_by_comp = _split_by(edge_comp, conflict)
        for c in conflict.tolist():
            nodes = by_comp[c]
            idx = pairs_by_comp[c]
            iou = {
                (int(a), int(b)): float(w)
                for a, b, w in zip(pi[idx], pj[idx], piou[idx], strict=True)
            }
            for members in resolve_component(
                nodes.tolist(), annotator[nodes].tolist(), iou, exact_limit=exact_limit
            ):
                group[members] = next_id
                next_id += 1
    group[~usable] = -1
    ids, group_dense = np.unique(group[usable], return_inverse=True)
    group[usable] = group_dense
    return Matching(group, int(ids.size), pi, pj, piou)


def _split_by(keys: np.ndarray, wanted: np.ndarray) -> dict[int, np.ndarray]:
    """Positions of each wanted key in ``keys`` (one sort, no per-key scan)."""
    sel = np.flatnonzero(np.isin(keys, wanted))
    order = sel[np.argsort(keys[sel], kind="stable")]
    uniq, starts = np.unique(keys[order], return_index=True)
    return {int(k): part for k, part in zip(uniq, np.split(order, starts[1:]), strict=True)}


def resolve_component(
    nodes: Sequence[int],
    annotators: Sequence[int],
    iou: dict[tuple[int, int], float],
    *,
    exact_limit: int = EXACT_LIMIT,
) -> list[list[int]]:
    """Partition one conflict component into nuclei (cliques); see the module docstring.

    ``iou`` holds the candidate pairs as ``(min node, max node) -> IoU``. Returns the groups
    as lists of nodes (singletons included), each sorted.
    """
    distinct = sorted(set(annotators))
    if len(distinct) == 2:
        groups = _two_annotators(nodes, annotators, iou, distinct)
    elif len(nodes) <= exact_limit:
        groups = _exact(nodes, annotators, iou)
    else:
        groups = _progressive(nodes, annotators, iou)
    return sorted(sorted(g) for g in groups)


def _pair(iou: dict[tuple[int, int], float], a: int, b: int) -> float | None:
    return iou.get((a, b) if a < b else (b, a))


def _two_annotators(
    nodes: Sequence[int],
    annotators: Sequence[int],
    iou: dict[tuple[int, int], float],
    distinct: list[int],
) -> list[list[int]]:
    left = [n for n, a in zip(nodes, annotators, strict=True) if a == distinct[0]]
    right = [n for n, a in zip(nodes, annotators, strict=True) if a == distinct[1]]
    big = min(len(left), len(right)) + 1.0  # one more match always beats any IoU gain
    weight = np.zeros((len(left), len(right)))
    for r, a in enumerate(left):
        for c, b in enumerate(right):
            w = _pair(iou, a, b)
            if w is not None:
                weight[r, c] = big + w
    rows, cols = linear_sum_assignment(weight, maximize=True)
    groups: list[list[int]] = []
    used: set[int] = set()
    for r, c in zip(rows, cols, strict=True):
        if weight[r, c] > 0:
            groups.append([left[r], right[c]])
            used.update((left[r], right[c]))
    groups.extend([n] for n in nodes if n not in used)
    return groups


def _exact(
    nodes: Sequence[int], annotators: Sequence[int], iou: dict[tuple[int, int], float]
) -> list[list[int]]:
    """Best clique partition by memoised search over the bitmask of masks left."""
    k = len(nodes)
    adj = [0] * k
    w = [[0.0] * k for _ in range(k)]
    for a in range(k):
        for b in range(a + 1, k):
            value = _pair(iou, nodes[a], nodes[b])
            if value is not None and annotators[a] != annotators[b]:
                adj[a] |= 1 << b
                adj[b] |= 1 << a
                w[a][b] = w[b][a] = value

    def cliques_with(first: int, allowed: int) -> list[int]:
        found: list[int] = []

        def grow(clique: int, candidates: int, used_annot: frozenset[int]) -> None:
            found.append(clique)
            rest = candidates
            while rest:
                low = rest & -rest
                b = low.bit_length() - 1
                rest ^= low
                if annotators[b] not in used_annot:
                    grow(clique | low, rest & adj[b], used_annot | {annotators[b]})

        grow(1 << first, adj[first] & allowed, frozenset({annotators[first]}))
        return found

    def score_of(clique: int) -> tuple[int, float]:
        members = [b for b in range(k) if clique >> b & 1]
        total = sum(w[a][b] for x, a in enumerate(members) for b in members[x + 1 :])
        return len(members) * (len(members) - 1) // 2, total

    @cache
    def best(left: int) -> tuple[int, float, tuple[int, ...]]:
        if left == 0:
            return 0, 0.0, ()
        first = (left & -left).bit_length() - 1
        rest = left & ~(1 << first)
        top: tuple[int, float, tuple[int, ...]] | None = None
        for clique in cliques_with(first, rest):
            pairs, total = score_of(clique)
            sub_pairs, sub_total, sub_groups = best(left & ~clique)
            cand = (pairs + sub_pairs, total + sub_total, (clique, *sub_groups))
            if top is None or (cand[0], round(cand[1], 12)) > (top[0], round(top[1], 12)):
                top = cand
        assert top is not None
        return top

    _, _, chosen = best((1 << k) - 1)
    return [[nodes[b] for b in range(k) if clique >> b & 1] for clique in chosen]


def _progressive(
    nodes: Sequence[int], annotators: Sequence[int], iou: dict[tuple[int, int], float]
) -> list[list[int]]:
    """Annotator by annotator (most masks first), optimal assignment to the nuclei so far."""
    by_annot: dict[int, list[int]] = {}
    for n, a in zip(nodes, annotators, strict=True):
        by_annot.setdefault(a, []).append(n)
    order = sorted(by_annot, key=lambda a: (-len(by_annot[a]), a))
    groups: list[list[int]] = [[n] for n in by_annot[order[0]]]
    for a in order[1:]:
        masks = by_annot[a]
        big = float(len(nodes) ** 2 + 1)
        weight = np.zeros((len(groups), len(masks)))
        for r, g in enumerate(groups):
            for c, m in enumerate(masks):
                values = [_pair(iou, m, x) for x in g]
                if all(v is not None for v in values):
                    weight[r, c] = big * len(g) + sum(v for v in values if v is not None)
        rows, cols = linear_sum_assignment(weight, maximize=True)
        joined: set[int] = set()
        for r, c in zip(rows, cols, strict=True):
            if weight[r, c] > 0:
                groups[r].append(masks[c])
                joined.add(c)
        groups.extend([m] for c, m in enumerate(masks) if c not in joined)
    return groups
