"""tiles: the tile grid of every slide, one row per tile kept on tissue."""

import pyarrow as pa

from data_schema._table import Column, TableSchema

TILES = TableSchema(
    name="tiles",
    version=1,
    doc="Tiles of 112 um kept on tissue; one Parquet file per slide.",
    partition_by="slide_id",
    columns=(
        Column("tile_id", pa.string(), "Stable id: '<slide_id>_x<x>_y<y>' (level-0 pixels)."),
        Column("slide_id", pa.string(), "Slide the tile comes from."),
        Column("indication", pa.string(), "Cancer indication of the slide."),
        Column("cohort", pa.string(), "Cohort of the slide."),
        Column("slide_path", pa.string(), "Absolute path of the slide file."),
        Column("x", pa.int64(), "Left edge, level-0 pixels."),
        Column("y", pa.int64(), "Top edge, level-0 pixels."),
        Column("size_level0", pa.int64(), "Side of the tile in level-0 pixels."),
        Column("mpp", pa.float64(), "Level-0 resolution of the slide, um/px."),
        Column("tile_mpp", pa.float64(), "Resolution of the tile as read, um/px."),
        Column("tile_px", pa.int64(), "Side of the tile as read, pixels (448 at 0.25 um/px)."),
        Column("read_level", pa.int64(), "Pyramid level the tile is read from."),
        Column("read_size", pa.int64(), "Side of the region read at read_level, pixels."),
        Column("resized", pa.bool_(), "True when read_size != tile_px (the read is resized)."),
        Column("tissue_fraction", pa.float64(), "Fraction of the tile on tissue, 0-1."),
    ),
)
