"""dataset_nuclei: one row per nucleus of a curated dataset (what its instance map holds)."""

import pyarrow as pa

from data_schema._table import Column, TableSchema
from histocurate.dataset.classes import DATASET_ANNOTATION_LABELS, DATASET_LABELS

NUCLEUS_SOURCES = ("consensus", "single", "imported")

DATASET_NUCLEI = TableSchema(
    name="dataset_nuclei",
    version=1,
    doc=(
        "Nuclei of a curated dataset (datasets/<name>/<version>/nuclei.parquet), in the "
        "pixels of the dataset's tile (after resampling; x right, y down, pixel (r, c) covers "
        "[c, c+1) x [r, r+1)). Every row has at least one pixel in the instance map; nuclei "
        "that vanished on rasterisation are listed in dataset.json instead."
    ),
    columns=(
        Column("tile_id", pa.string(), "Tile of the nucleus (tiles.parquet)."),
        Column("nucleus_id", pa.int32(), "Its value in the tile's instance map (1..n)."),
        Column("x", pa.float64(), "Centroid of its pixels, column (pixel centres at +0.5)."),
        Column("y", pa.float64(), "Centroid of its pixels, row."),
        Column("bbox_x0", pa.int32(), "Bounding box of its pixels: first column."),
        Column("bbox_y0", pa.int32(), "First row."),
        Column("bbox_x1", pa.int32(), "Last column + 1."),
        Column("bbox_y1", pa.int32(), "Last row + 1."),
        Column("area", pa.int32(), "Pixels in the instance map."),
        Column(
            "polygon",
            pa.binary(),
            "Outline, WKB, clipped to the tile (the annotated polygon; imports: the outline "
            "of the instance map).",
        ),
        Column(
            "label",
            pa.string(),
            "Class (dataset.json classes); null when undetermined.",
            nullable=True,
            choices=DATASET_LABELS,
        ),
        Column(
            "labels",
            pa.list_(pa.string()),
            "Label set: the types proposed for it, sorted ('unknown' alone when every "
            "annotator said so). Always filled.",
            choices=DATASET_ANNOTATION_LABELS,
        ),
        Column("type_index", pa.int32(), "Its value in the type map (255: undetermined)."),
        Column("n_annotators", pa.int32(), "Annotators who found it (0 on import)."),
        Column("annotators", pa.list_(pa.string()), "Who found it, sorted."),
        Column(
            "source",
            pa.string(),
            "'consensus', 'single' (one annotator's mask) or 'imported'.",
            choices=NUCLEUS_SOURCES,
        ),
        Column(
            "source_id",
            pa.int64(),
            "Id in the source: consensus_id, the smallest annotation_id of its clicks, or the "
            "instance id of the imported file.",
        ),
        Column("clipped", pa.bool_(), "True when the tile border cut its outline."),
        Column("contested", pa.bool_(), "True when it lost pixels to an overlapping nucleus."),
    ),
)
