"""truth: ground-truth nuclei of a synthetic slide, one row per nucleus."""

import pyarrow as pa

from data_schema._table import Column, TableSchema

TRUTH = TableSchema(
    name="truth",
    version=1,
    doc="Ground-truth nuclei of the synthetic cohort; one Parquet file per slide.",
    partition_by="slide_id",
    columns=(
        Column("nucleus_id", pa.int64(), "Id of the nucleus, unique within its slide."),
        Column("slide_id", pa.string(), "Slide the nucleus lies in."),
        Column("x", pa.float64(), "Centroid x, level-0 pixels."),
        Column("y", pa.float64(), "Centroid y, level-0 pixels (origin top-left)."),
        Column("label", pa.string(), "Cell type id (histocurate.labels.LABELS)."),
        Column("polygon", pa.binary(), "Nucleus outline as WKB, level-0 pixels."),
    ),
)
