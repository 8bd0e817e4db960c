"""Polygons (WKB, tile pixels) to instance maps, vectorised over many polygons at once.

Convention: pixel ``(row, col)`` covers the unit square ``[col, col+1) x [row, row+1)``
and belongs to a polygon when its centre ``(col + 0.5, row + 0.5)`` lies inside (even-odd
rule, so holes and multi-polygons work). This is GDAL/rasterio's default, and it makes
the pixel area of a polygon an unbiased estimate of its geometric area.

Why not ``skimage.draw.polygon`` in a loop: ~50 us per polygon, i.e. 7 s for the 138,000
nuclei of a 530-tile evaluation with one prediction. The scanline below handles all the
polygons of a table in a few numpy passes: for every edge, the pixel rows whose centre
line it crosses (half-open in y, so a vertex is counted once), the crossing abscissae,
sorted per (polygon, row) and taken in pairs as filled spans.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from numpy.typing import NDArray

from histocurate.metrics.maps import MetricsInputError


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


def as_geometries(
    values: Sequence[object] | NDArray[np.object_], *, name: str
) -> NDArray[np.object_]:
    """Shapely geometries from shapely objects or WKB bytes; `MetricsInputError` otherwise."""
    array = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=object)
    if array.size and isinstance(array.flat[0], (bytes, bytearray, memoryview)):
        try:
            array = shapely.from_wkb(array)
        except Exception as exc:  # shapely raises its own GEOSException types
            raise MetricsInputError(f"{name}: polygon is not valid WKB ({exc})") from None
    return array


def polygon_spans(
    geoms: NDArray[np.object_], *, shape: tuple[int, int], name: str = "polygons"
) -> Spans:
    """The pixel runs of every polygon, clipped to a ``shape = (height, width)`` tile.

    ``owner`` is the position of the polygon in ``geoms``. Empty geometries give no span;
    anything other than a (multi)polygon raises `MetricsInputError`.
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
        raise MetricsInputError(
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
        raise MetricsInputError(f"{name}: a polygon ring is not closed; cannot rasterise it")
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
    out: NDArray[np.int32] | None = None,
) -> NDArray[np.int32]:
    """Write ``values[owner]`` into a map; where spans overlap the largest value wins."""
    target = np.zeros(shape, dtype=np.int32) if out is None else out
    idx, owner = spans.pixels(int(shape[1]))
    np.maximum.at(target.reshape(-1), idx, np.asarray(values, dtype=np.int32)[owner])
    return target


def rasterize(
    geoms: Sequence[object] | NDArray[np.object_], *, shape: tuple[int, int]
) -> NDArray[np.int32]:
    """Instance map of ``shape`` with polygon ``k`` drawn as id ``k + 1`` (later ones on top)."""
    array = as_geometries(geoms, name="polygons")
    spans = polygon_spans(array, shape=shape)
    return paint(spans, shape=shape, values=np.arange(1, array.size + 1))
