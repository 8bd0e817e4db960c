"""import_rejects: Cytomine annotations that `histocurate import` kept aside, with why."""

import pyarrow as pa

from data_schema._table import Column, TableSchema

REJECT_REASONS = (
    "not_a_point",
    "no_term",
    "several_terms",
    "unknown_term",
    "outside_image",
    "unknown_image",
    "unknown_user",
    "bad_geometry",
    "not_assigned",
    "not_reviewed",
    "superseded_by_review",
    "consensus_layer",
)

IMPORT_REJECTS = TableSchema(
    name="import_rejects",
    version=2,
    doc=(
        "Annotations not imported into points, one row each, with the reason: with the "
        "points, every annotation of the campaign on the server is accounted for."
    ),
    columns=(
        Column("annotation_id", pa.int64(), "Cytomine annotation id."),
        Column("project", pa.string(), "Campaign (Cytomine project name)."),
        Column("image_id", pa.int64(), "Cytomine image instance id."),
        Column("tile_id", pa.string(), "Tile of the image, if a known tile.", nullable=True),
        Column("annotator", pa.string(), "Username of the author, when known.", nullable=True),
        Column("reason", pa.string(), "Why it was kept aside.", choices=REJECT_REASONS),
        Column("detail", pa.string(), "Human-readable detail (geometry type, term ids...)."),
        Column("location", pa.string(), "The geometry as WKT (Cytomine coordinates)."),
        Column("term_ids", pa.list_(pa.int64()), "Cytomine term ids of the annotation."),
        Column("reviewed", pa.bool_(), "True for a reviewed copy (import --reviewed)."),
        Column("updated_at", pa.timestamp("ms", tz="UTC"), "Last edit time on Cytomine."),
    ),
)
