"""Masks to outlines: the polygon of a binary mask or of every instance of a map.

The contour runs through the pixel-edge midpoints of the border pixels (half a pixel
inside the pixel squares' outer edges), in (x, y) pixel-edge coordinates: rasterising it at
pixel centres (`histocurate.geometry.rasterize`) gives the mask back.

>>> import numpy as np
>>> mask = np.zeros((6, 6), bool); mask[1:4, 2:5] = True
>>> poly = mask_to_polygon(mask)
>>> poly.bounds
(2.0, 1.0, 5.0, 4.0)
"""

from __future__ import annotations

import numpy as np
from shapely.geometry import Polygon
from skimage.measure import find_contours


def mask_to_polygon(mask: np.ndarray, offset_rc: tuple[int, int] = (0, 0)) -> Polygon:
    """Outline of a binary mask as a valid polygon; with several pieces, the largest."""
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
    """Polygon of every label of an instance map (all at once: `instances.instance_polygons`;
    the same outlines as `mask_to_polygon` per label)."""
    from histocurate.geometry.instances import instance_polygons

    polys = instance_polygons(labels)
    return {lab: poly for lab, poly in enumerate(polys) if lab > 0 and poly is not None}
