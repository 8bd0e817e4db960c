"""WKB in and out: how every table stores a nucleus outline (tile pixels, x right, y down).

>>> import shapely
>>> data = to_wkb([shapely.box(0, 0, 2, 1)])
>>> from_wkb(data)[0].area
2.0
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely
from numpy.typing import NDArray

from histocurate.errors import GeometryError


def from_wkb(
    values: Sequence[object] | NDArray[np.object_], *, name: str = "polygons"
) -> NDArray[np.object_]:
    """Shapely geometries from shapely objects or WKB bytes; `GeometryError` otherwise."""
    array = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=object)
    if array.size and isinstance(array.flat[0], (bytes, bytearray, memoryview)):
        try:
            array = shapely.from_wkb(array)
        except Exception as exc:  # shapely raises its own GEOSException types
            raise GeometryError(f"{name}: polygon is not valid WKB ({exc})") from None
    return array


def to_wkb(geoms: Sequence[object] | NDArray[np.object_]) -> NDArray[np.object_]:
    """WKB bytes of shapely geometries (what a ``polygon`` column holds)."""
    return np.asarray(shapely.to_wkb(np.asarray(list(geoms), dtype=object)), dtype=object)
