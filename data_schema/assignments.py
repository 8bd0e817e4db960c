"""assignments: which annotators are asked to annotate which exported tile (Cytomine)."""

import pyarrow as pa

from data_schema._table import Column, TableSchema

ASSIGNMENTS = TableSchema(
    name="assignments",
    version=1,
    doc="One row per (tile, annotator) of a Cytomine campaign (`histocurate export`).",
    columns=(
        Column("project", pa.string(), "Cytomine project name (one project per campaign)."),
        Column("project_id", pa.int64(), "Cytomine project id."),
        Column("tile_id", pa.string(), "Exported tile (tiles.tile_id); image name <tile_id>.png."),
        Column("image_id", pa.int64(), "Cytomine image instance id of the tile."),
        Column("annotator", pa.string(), "Username of an annotator asked to annotate the tile."),
        Column("k", pa.int64(), "Annotators of this tile (all of them outside validation)."),
    ),
)
