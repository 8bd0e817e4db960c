"""assignments: which annotators are asked to annotate which exported tile (Cytomine), and
the pixels they were shown (frozen at export in the campaign folder)."""

import pyarrow as pa

from data_schema._table import Column, TableSchema

ASSIGNMENTS = TableSchema(
    name="assignments",
    version=2,
    doc=(
        "One row per (tile, annotator) of a Cytomine campaign (`histocurate export`). The "
        "tile's image as uploaded is kept at campaigns/<project>/images/<tile_id>.png; every "
        "later stage reads those pixels (checked against image_sha256), never the slide."
    ),
    columns=(
        Column("project", pa.string(), "Campaign: Cytomine project name (one per campaign)."),
        Column("project_id", pa.int64(), "Cytomine project id holding the image."),
        Column("tile_id", pa.string(), "Exported tile (tiles.tile_id); image name <tile_id>.png."),
        Column("slide_id", pa.string(), "Slide of the tile."),
        Column("indication", pa.string(), "Indication of the slide (the selection it came from)."),
        Column("image_id", pa.int64(), "Cytomine image instance id of the tile."),
        Column("annotator", pa.string(), "Username of an annotator asked to annotate the tile."),
        Column("k", pa.int64(), "Annotators of this tile (all of them outside validation)."),
        Column("tile_mpp", pa.float64(), "Resolution of the exported image, um/px."),
        Column("tile_px", pa.int64(), "Side of the exported image, px."),
        Column("image_sha256", pa.string(), "sha256 of the PNG uploaded (and kept)."),
        Column(
            "tiles_token",
            pa.string(),
            "Provenance token of the slide's tiles when exported: a slide re-scanned since "
            "(retiled) no longer matches.",
        ),
    ),
)
