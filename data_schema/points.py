"""points: one row per pathologist click imported from Cytomine."""

import pyarrow as pa

from data_schema._table import Column, TableSchema
from histocurate.labels import ANNOTATION_LABELS

SHAPES = ("point", "centroid")

POINTS = TableSchema(
    name="points",
    version=3,
    doc=(
        "Point annotations (clicks) imported from Cytomine, in tile pixels, origin top-left; "
        "continuous coordinates: pixel (col i, row j) spans [i, i+1) x [j, j+1), its centre "
        "is (i + 0.5, j + 0.5). Cytomine's y (origin bottom-left) = tile height - y. One "
        "table for every campaign: an import rewrites only its project's rows."
    ),
    columns=(
        Column("project", pa.string(), "Campaign (Cytomine project name) the click belongs to."),
        Column("annotation_id", pa.int64(), "Cytomine annotation id (unique on its server)."),
        Column("tile_id", pa.string(), "Tile the click was made on (the image's tile property)."),
        Column("image_id", pa.int64(), "Cytomine image instance the click was made on."),
        Column("annotator", pa.string(), "Username of the annotator (the annotation's author)."),
        Column("x", pa.float64(), "Column of the click, tile pixels (origin top-left)."),
        Column("y", pa.float64(), "Row of the click, tile pixels (origin top-left)."),
        Column(
            "label",
            pa.string(),
            "Cell type id, or 'unknown' (histocurate.labels).",
            choices=ANNOTATION_LABELS,
        ),
        Column("term_ids", pa.list_(pa.int64()), "Cytomine term ids of the annotation (all)."),
        Column(
            "labelled_by",
            pa.string(),
            "Username whose term gave the label: the author, or a reviewer who relabelled it "
            "(import --label-by).",
        ),
        Column(
            "reviewed",
            pa.bool_(),
            "True for a reviewed copy (a reviewer's accepted annotation, import --reviewed).",
        ),
        Column(
            "assigned",
            pa.bool_(),
            "The annotator was assigned the tile (False only with import --keep-unassigned).",
        ),
        Column(
            "shape",
            pa.string(),
            "'point', or 'centroid' of a polygon (import --polygons centroid).",
            choices=SHAPES,
        ),
        Column("updated_at", pa.timestamp("ms", tz="UTC"), "Last edit time on Cytomine."),
    ),
)
