"""Reading instance tables (consensus, predictions) for evaluation, with clear errors.

`evaluate` accepts any Parquet table (a file, or a folder of per-partition files) that has
the columns below with compatible types; other columns are ignored, so consensus.parquet
(many more columns) and the minimal `instances` table both work. A missing or mistyped
column is reported with the file and the column; so are unknown cell types.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

from histocurate.geometry.wkb import from_wkb
from histocurate.metrics.maps import MetricsInputError, as_metrics_error

TypeCheck = Callable[[pa.DataType], bool]


def _is_string(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t))


def _is_binary(t: pa.DataType) -> bool:
    return bool(pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_null(t))


def _is_number(t: pa.DataType) -> bool:
    return bool(pa.types.is_floating(t) or pa.types.is_integer(t))


def _is_string_list(t: pa.DataType) -> bool:
    if pa.types.is_null(t):
        return True
    return bool((pa.types.is_list(t) or pa.types.is_large_list(t)) and _is_string(t.value_type))


INSTANCE_COLUMNS: dict[str, tuple[TypeCheck, str]] = {
    "tile_id": (_is_string, "string"),
    "label": (_is_string, "string (nullable)"),
    "polygon": (_is_binary, "binary WKB"),
    "x": (_is_number, "number"),
    "y": (_is_number, "number"),
    "labels": (_is_string_list, "list<string>"),
}
"""Columns the reader uses: tile_id and label always; polygon, or x and y; labels optional."""


def as_geometries(values: object, *, name: str) -> NDArray[np.object_]:
    """Shapely geometries from WKB (or shapely) values; a bad one is a metrics input error."""
    with as_metrics_error():
        return from_wkb(values, name=name)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Instances:
    """Nuclei of one table, ready for the metrics (rows in file order)."""

    origin: str
    tile_id: NDArray[np.object_]
    label: list[str | None]
    labels: list[list[str] | None] | None
    geometry: NDArray[np.object_] | None  # shapely polygons, when every row has one
    xy: NDArray[np.float64] | None  # centroids (n, 2), from x/y or the polygons

    def __len__(self) -> int:
        return int(self.tile_id.size)

    def subset(self, keep: NDArray[np.bool_]) -> Instances:
        """The rows where ``keep`` is true (e.g. without tiles absent from the truth)."""
        idx = np.flatnonzero(keep)
        return Instances(
            origin=self.origin,
            tile_id=self.tile_id[idx],
            label=[self.label[i] for i in idx],
            labels=None if self.labels is None else [self.labels[i] for i in idx],
            geometry=None if self.geometry is None else self.geometry[idx],
            xy=None if self.xy is None else self.xy[idx],
        )


def _parquet_files(path: Path) -> list[Path]:
    if not path.exists():
        raise MetricsInputError(f"{path}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.glob("*.parquet") if not p.name.startswith("."))
        if not files:
            raise MetricsInputError(f"{path}: folder holds no .parquet file")
        return files
    return [path]


def _check_schema(schema: pa.Schema, origin: str) -> list[str]:
    present = []
    for name, (ok, expected) in INSTANCE_COLUMNS.items():
        idx = schema.get_field_index(name)
        if idx < 0:
            continue
        found = schema.field(idx).type
        if not ok(found):
            raise MetricsInputError(
                f"{origin}: column {name!r} has type {found}, expected {expected}"
            )
        present.append(name)
    missing = [c for c in ("tile_id", "label") if c not in present]
    if missing:
        raise MetricsInputError(
            f"{origin}: missing column(s) {missing}; an instance table needs tile_id, label "
            "and polygon (WKB) or x and y"
        )
    if "polygon" not in present and not {"x", "y"} <= set(present):
        raise MetricsInputError(
            f"{origin}: no geometry; an instance table needs a 'polygon' column (WKB) or "
            "'x' and 'y' columns"
        )
    return present


def read_instances(path: str | os.PathLike[str]) -> Instances:
    """Read and check an instance table (file or partition folder)."""
    root = Path(path)
    tables = []
    for file in _parquet_files(root):
        try:
            schema = pq.read_schema(file)
        except (pa.ArrowInvalid, OSError) as exc:
            raise MetricsInputError(f"{file}: not a readable Parquet file ({exc})") from None
        columns = _check_schema(schema, str(file))
        tables.append(pq.read_table(file, columns=columns).to_pandas())
    frame = pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]
    return instances_from_frame(frame, origin=str(root))


def _none_if_na(value: object) -> str | None:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    return str(value)


def instances_from_frame(frame: pd.DataFrame, *, origin: str) -> Instances:
    """Check a frame with the instance columns and convert it (used by `read_instances`)."""
    _check_schema(pa.Schema.from_pandas(frame, preserve_index=False), origin)
    tile = frame["tile_id"]
    if tile.isna().any():
        row = int(np.flatnonzero(tile.isna().to_numpy())[0])
        raise MetricsInputError(f"{origin}: column 'tile_id' is empty at row {row}")
    tile_id = tile.astype(str).to_numpy(dtype=object)
    label = [_none_if_na(v) for v in frame["label"].tolist()]
    labels = None
    if "labels" in frame.columns:
        labels = [None if v is None else [str(s) for s in v] for v in frame["labels"].tolist()]
    geometry = None
    if "polygon" in frame.columns:
        wkb = frame["polygon"].to_numpy(dtype=object)
        missing = np.array([v is None for v in wkb], dtype=bool)
        if not missing.any():
            geometry = as_geometries(wkb, name=f"{origin}, column 'polygon'")
    xy = None
    if {"x", "y"} <= set(frame.columns):
        xy = frame[["x", "y"]].to_numpy(dtype=np.float64)
        if not np.isfinite(xy).all():
            xy = None
    if xy is None and geometry is not None:
        import shapely

        c = shapely.centroid(geometry)
        xy = np.stack([shapely.get_x(c), shapely.get_y(c)], axis=1)
    if xy is None and geometry is None:
        raise MetricsInputError(
            f"{origin}: some rows have neither a polygon nor finite x and y; every nucleus "
            "needs a position"
        )
    return Instances(origin, tile_id, label, labels, geometry, xy)
