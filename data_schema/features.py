"""features: one vector per tile, made by one encoder; one Parquet file per slide.

The vector is a fixed-size list of float32 whose size is the encoder's output dimension,
so the declaration is made per dimension by `features_schema`. ``FEATURES`` is the
dimension-free declaration (for listings); files are written and checked with
``features_schema(dim)``. Every row names the encoder that made it, so a file read on its
own still says where its numbers come from.
"""

from __future__ import annotations

from functools import cache

import pyarrow as pa

from data_schema._table import Column, TableSchema

_NAME = "features"
_VERSION = 1
_DOC = "Tile feature vectors of one encoder; folder features/<encoder>/, one file per slide."


def _columns(values_type: pa.DataType) -> tuple[Column, ...]:
    return (
        Column("tile_id", pa.string(), "Tile the vector describes (tiles.tile_id)."),
        Column("slide_id", pa.string(), "Slide the tile comes from."),
        Column("encoder", pa.string(), "Encoder that made the vector (e.g. 'builtin', 'phikon')."),
        Column("features", values_type, "The feature vector, float32, finite."),
    )


@cache
def features_schema(dim: int) -> TableSchema:
    """The declaration of a features file whose vectors have ``dim`` values."""
    if dim < 1:
        raise ValueError(f"feature dimension must be positive, got {dim}")
    return TableSchema(
        name=_NAME,
        version=_VERSION,
        doc=_DOC,
        partition_by="slide_id",
        columns=_columns(pa.list_(pa.float32(), dim)),
    )


FEATURES = TableSchema(
    name=_NAME,
    version=_VERSION,
    doc=_DOC + " The 'features' column is a fixed-size list (see features_schema(dim)).",
    partition_by="slide_id",
    columns=_columns(pa.list_(pa.float32())),
)
