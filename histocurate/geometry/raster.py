"""Polygons (WKB, tile pixels) to instance maps, vectorised over many polygons at once:
the one rasteriser of the project (metrics, datasets, NuClick training data).

Convention: pixel ``(row, col)`` covers the unit square ``[col, col+1) x [row, row+1)``
and belongs to a polygon when its centre ``(col + 0.5, row + 0.5)`` lies inside (even-odd
rule, so holes and multi-polygons work). This is GDAL/rasterio's default, and it makes
the pixel area of a polygon an unbiased estimate of its geometric area.

Why not ``skimage.draw.polygon`` in a loop: ~50 us per polygon, i.e. 7 s for the 138,000
nuclei of a 530-tile evaluation with one prediction. The scanline below handles all the
polygons of a table in a few numpy passes: for every edge, the pixel rows whose centre
line it crosses (half-open in y, so a vertex is counted once), the crossing abscissae,
sorted per (polygon, row) and taken in pairs as filled spans.

Overlaps, the one rule: a pixel claimed by several polygons goes to the smallest of them
(ties: the first), so a small nucleus lying on a larger one keeps its pixels instead of
vanishing under it. `rasterize_instances` also says how many pixels and polygons were
contested and which polygons lost every pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from numpy.typing import NDArray

from histocurate.errors import GeometryError
from histocurate.geometry.wkb import from_wkb


@dataclass(frozen=True, slots=True)
class Spans:
    """Filled pixel runs: polygon ``owner`` covers ``row``, columns ``start`` to ``stop - 1``."""

    owner: NDArray[np.int64]
    row: NDArray[np.int64]
    start: NDArray[np.int64]
    stop: NDArray[np.int64]

    def pixels(self, width: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Flat pixel indices (``row * width + col``) and the owner of each."""
        length = self.stop - self.start
        total = int(length.sum())
        owner = np.repeat(self.owner, length)
        first = np.repeat(self.row * width + self.start - np.cumsum(length) + length, length)
        return first + np.arange(total, dtype=np.int64), owner


def polygon_spans(
    geoms: NDArray[np.object_], *, shape: tuple[int, int], name: str = "polygons"
) -> Spans:
    """The pixel runs of every polygon, clipped to a ``shape = (height, width)`` tile.

    ``owner`` is the position of the polygon in ``geoms``. Empty geometries give no span;
    anything other than a (multi)polygon raises `GeometryError`.
    """
    height, width = int(shape[0]), int(shape[1])
    geoms = np.asarray(geoms, dtype=object)
    if geoms.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Spans(empty, empty, empty, empty)
    types = shapely.get_type_id(geoms)
    bad = np.flatnonzero(~np.isin(types, (3, 6)) & ~shapely.is_empty(geoms))
    if bad.size:
        kind = shapely.get_type_id(geoms[bad[0]])
        raise GeometryError(
            f"{name}: row {int(bad[0])} is not a polygon (geometry type id {int(kind)}); "
            "nuclei must be Polygon or MultiPolygon outlines"
        )
    parts, part_of = shapely.get_parts(geoms, return_index=True)
    rings, ring_of = shapely.get_rings(parts, return_index=True)
    xy, coord_ring = shapely.get_coordinates(rings, return_index=True)
    same = coord_ring[1:] == coord_ring[:-1]
    x0, y0 = xy[:-1, 0][same], xy[:-1, 1][same]
    x1, y1 = xy[1:, 0][same], xy[1:, 1][same]
    edge_owner = part_of[ring_of[coord_ring[:-1][same]]].astype(np.int64)

    # Rows r whose centre line y = r + 0.5 satisfies min(y0, y1) <= y < max(y0, y1).
    lo = np.ceil(np.minimum(y0, y1) - 0.5).astype(np.int64)
    hi = np.ceil(np.maximum(y0, y1) - 0.5).astype(np.int64) - 1
    lo, hi = np.maximum(lo, 0), np.minimum(hi, height - 1)
    count = np.maximum(hi - lo + 1, 0)
    edge = np.repeat(np.arange(count.size), count)
    row = np.repeat(lo - np.cumsum(count) + count, count) + np.arange(int(count.sum()))
    e0x, e0y, e1x, e1y = x0[edge], y0[edge], x1[edge], y1[edge]
    x = e0x + (row + 0.5 - e0y) * (e1x - e0x) / (e1y - e0y)
    owner = edge_owner[edge]
    # Dense index of each (polygon, row) group: rows of one polygon are contiguous.
    n_geoms = geoms.size
    first = np.full(n_geoms, np.iinfo(np.int64).max, dtype=np.int64)
    last = np.full(n_geoms, -1, dtype=np.int64)
    np.minimum.at(first, owner, row)
    np.maximum.at(last, owner, row)
    nrows = np.maximum(last - first + 1, 0)
    offset = np.cumsum(nrows) - nrows
    group = offset[owner] + row - first[owner]
    n_groups = int(nrows.sum())
    size = np.bincount(group, minlength=n_groups)
    if np.any(size % 2):
        raise GeometryError(f"{name}: a polygon ring is not closed; cannot rasterise it")
    # Most rows of a nucleus cross its outline twice: the span is [min x, max x).
    xmin = np.full(n_groups, np.inf)
    xmax = np.full(n_groups, -np.inf)
    np.minimum.at(xmin, group, x)
    np.maximum.at(xmax, group, x)
    two = np.flatnonzero(size == 2)
    group_owner = np.repeat(np.arange(n_geoms), nrows)
    group_row = np.arange(n_groups) - np.repeat(offset, nrows) + np.repeat(first.clip(0), nrows)
    owners, rows_, xa, xb = [group_owner[two]], [group_row[two]], [xmin[two]], [xmax[two]]
    # Concave outlines and holes: sort the crossings of those rows and pair them up.
    many = size[group] > 2
    if many.any():
        sub = np.flatnonzero(many)
        order = sub[np.lexsort((x[sub], group[sub]))]
        a, b = order[0::2], order[1::2]
        owners.append(owner[a])
        rows_.append(row[a])
        xa.append(x[a])
        xb.append(x[b])
    span_owner, span_row = np.concatenate(owners), np.concatenate(rows_)
    x_start, x_stop = np.concatenate(xa), np.concatenate(xb)
    start = np.maximum(np.ceil(x_start - 0.5).astype(np.int64), 0)
    stop = np.minimum(np.ceil(x_stop - 0.5).astype(np.int64), width)
    keep = stop > start
    return Spans(span_owner[keep], span_row[keep], start[keep], stop[keep])


def paint(
    spans: Spans,
    *,
    shape: tuple[int, int],
    values: NDArray[np.integer],
    priority: NDArray[np.integer] | None = None,
    out: NDArray[np.int32] | None = None,
) -> NDArray[np.int32]:
    """Write ``values[owner]`` into a map. A contested pixel goes to the owner of highest
    ``priority`` (distinct positive integers, one per owner; see `area_priority`), or, with
    no priority, to the largest value."""
    target = np.zeros(shape, dtype=np.int32) if out is None else out
    flat = target.reshape(-1)
    idx, owner = spans.pixels(int(shape[1]))
    values = np.asarray(values, dtype=np.int32)
    if priority is None:
        np.maximum.at(flat, idx, values[owner])
        return target
    priority = np.asarray(priority, dtype=np.int64)
    best = np.zeros(flat.size, dtype=np.int64)
    np.maximum.at(best, idx, priority[owner])
    lookup = np.zeros(int(priority.max(initial=0)) + 1, dtype=np.int32)
    lookup[priority] = values
    hit = best > 0
    flat[hit] = lookup[best[hit]]
    return target


def area_priority(geoms: NDArray[np.object_]) -> NDArray[np.int64]:
    """The one overlap rule as paint priorities: smaller polygons high, larger low (ties:
    the earlier polygon higher), distinct and from 1."""
    areas = shapely.area(np.asarray(geoms, dtype=object))
    order = np.lexsort((-np.arange(areas.size), -areas))  # big first; among ties, later first
    priority = np.empty(areas.size, dtype=np.int64)
    priority[order] = np.arange(1, areas.size + 1)
    return priority


@dataclass(frozen=True, slots=True)
class Raster:
    """An instance map and what its overlap rule decided."""

    map: NDArray[np.int32]
    contested_pixels: int  # pixels inside more than one polygon
    contested: NDArray[np.int64]  # positions of polygons that lost at least one pixel
    vanished: NDArray[np.int64]  # positions of non-empty polygons left with no pixel


def rasterize_instances(
    geoms: Sequence[object] | NDArray[np.object_], *, shape: tuple[int, int]
) -> Raster:
    """Instance map of ``shape`` with polygon ``k`` drawn as id ``k + 1``; contested pixels
    go to the smallest polygon. Polygons are clipped to the map.

    >>> import shapely
    >>> big, small = shapely.box(0, 0, 4, 4), shapely.box(1, 1, 3, 3)
    >>> r = rasterize_instances([big, small], shape=(4, 4))
    >>> r.map
    array([[1, 1, 1, 1],
           [1, 2, 2, 1],
           [1, 2, 2, 1],
           [1, 1, 1, 1]], dtype=int32)
    >>> r.contested_pixels, r.contested.tolist(), r.vanished.tolist()
    (4, [0], [])
    """
    array = from_wkb(geoms, name="polygons")
    spans = polygon_spans(array, shape=shape)
    ids = np.arange(1, array.size + 1, dtype=np.int32)
    result = paint(spans, shape=shape, values=ids, priority=area_priority(array))
    idx, owner = spans.pixels(int(shape[1]))
    claims = np.bincount(idx, minlength=int(shape[0]) * int(shape[1]))
    drawn = np.bincount(owner, minlength=array.size)
    kept = np.bincount(result.reshape(-1), minlength=array.size + 1)[1:]
    return Raster(
        map=result.astype(np.int32),
        contested_pixels=int((claims > 1).sum()),
        contested=np.flatnonzero(kept < drawn),
        vanished=np.flatnonzero((drawn > 0) & (kept == 0)),
    )


def rasterize(
    geoms: Sequence[object] | NDArray[np.object_], *, shape: tuple[int, int]
) -> NDArray[np.int32]:
    """Instance map of ``shape`` with polygon ``k`` drawn as id ``k + 1`` (contested pixels:
    the smallest polygon's; see `rasterize_instances`)."""
    return rasterize_instances(geoms, shape=shape).map
