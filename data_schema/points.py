"""points: one row per pathologist click imported from Cytomine."""

import pyarrow as pa

from data_schema._table import Column, TableSchema
from histocurate.labels import ANNOTATION_LABELS

POINTS = TableSchema(
    name="points",
    version=2,
    doc=(
        "Point annotations (clicks) imported from Cytomine, in tile pixels, origin top-left; "
        "continuous coordinates: pixel (col i, row j) spans [i, i+1) x [j, j+1), its centre "
        "is (i + 0.5, j + 0.5). Cytomine's y (origin bottom-left) = tile height - y."
    ),
    columns=(
        Column("project", pa.string(), "Campaign (Cytomine project name) the click belongs to."),
        Column("annotation_id", pa.int64(), "Cytomine annotation id (unique on its server)."),
        Column("tile_id", pa.string(), "Tile the click was made on (the image's tile property)."),
        Column("annotator", pa.string(), "Username of the annotator."),
        Column("x", pa.float64(), "Column of the click, tile pixels (origin top-left)."),
        Column("y", pa.float64(), "Row of the click, tile pixels (origin top-left)."),
        Column(
            "label",
            pa.string(),
            "Cell type id, or 'unknown' (histocurate.labels).",
            choices=ANNOTATION_LABELS,
        ),
        Column("term_ids", pa.list_(pa.int64()), "Cytomine term ids of the annotation."),
        Column("updated_at", pa.timestamp("ms", tz="UTC"), "Last edit time on Cytomine."),
    ),
)
