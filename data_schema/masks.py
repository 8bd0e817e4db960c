"""masks: one row per click, with the nucleus mask the segmenter drew for it."""

import pyarrow as pa

from data_schema._table import Column, TableSchema
from histocurate.labels import ANNOTATION_LABELS

SEGMENTERS = ("nuclick", "watershed")

MASKS = TableSchema(
    name="masks",
    version=2,
    doc=(
        "Nucleus masks of the clicks (points.parquet) of one campaign, in tile pixels, one "
        "file per tile (campaigns/<project>/masks.parquet/<tile_id>.parquet), drawn on the "
        "pixels exported to Cytomine. Each annotator's clicks of a tile are segmented "
        "together (their other clicks are the exclusion map); overlaps go to the "
        "higher-probability instance. Each file's provenance records the pixels (sha256), "
        "the clicks (digest) and the segmenter it was made from."
    ),
    partition_by="tile_id",
    columns=(
        Column("project", pa.string(), "Campaign (Cytomine project name) of the click."),
        Column("annotation_id", pa.int64(), "Cytomine annotation id of the click (points)."),
        Column("tile_id", pa.string(), "Tile of the click."),
        Column("annotator", pa.string(), "Username of the annotator."),
        Column("x", pa.float64(), "Column of the click, tile pixels (origin top-left)."),
        Column("y", pa.float64(), "Row of the click, tile pixels (origin top-left)."),
        Column(
            "label",
            pa.string(),
            "Cell type id of the click, or 'unknown'.",
            choices=ANNOTATION_LABELS,
        ),
        Column(
            "polygon",
            pa.binary(),
            "Nucleus outline as WKB, tile pixels (x, y; pixel (r, c) covers [c, c+1) x [r, r+1)). "
            "Clicks on the same nucleus by one annotator share one polygon.",
        ),
        Column("segmenter", pa.string(), "What drew the mask.", choices=SEGMENTERS),
        Column("area", pa.float64(), "Area of the polygon, tile pixels squared."),
        Column(
            "fallback",
            pa.bool_(),
            "True when the click fell outside every predicted component and got a small disc.",
        ),
    ),
)
