"""truth_tiles: ground-truth nuclei of the synthetic cohort, in tile pixels."""

import pyarrow as pa

from data_schema._table import Column, TableSchema

TRUTH_TILES = TableSchema(
    name="truth_tiles",
    version=1,
    doc="Synthetic truth mapped into tiles (histocurate.synth.truth_in_tiles); the reference "
    "of the demo's evaluation and the stand-in for a previous campaign's annotations.",
    columns=(
        Column("tile_id", pa.string(), "Tile the nucleus centroid lies in."),
        Column("slide_id", pa.string(), "Slide of the tile."),
        Column("nucleus_id", pa.int64(), "Id of the nucleus in the slide's truth."),
        Column("x", pa.float64(), "Centroid column, tile pixels (origin top-left)."),
        Column("y", pa.float64(), "Centroid row, tile pixels (origin top-left)."),
        Column("label", pa.string(), "Cell type id."),
        Column("polygon", pa.binary(), "Outline as WKB, tile pixels."),
    ),
)
