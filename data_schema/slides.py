"""slides: the validated cohort manifest, one row per slide."""

import pyarrow as pa

from data_schema._table import Column, TableSchema

SLIDES = TableSchema(
    name="slides",
    version=1,
    doc="One row per slide of the cohort, as validated from the manifest.",
    columns=(
        Column("slide_id", pa.string(), "Unique slide identifier (from the manifest)."),
        Column("path", pa.string(), "Absolute path of the slide file."),
        Column("indication", pa.string(), "Cancer indication (TCGA study code, e.g. LUAD)."),
        Column("cohort", pa.string(), "Data source the slide comes from (for grouped CV)."),
        Column(
            "mpp_override",
            pa.float64(),
            "Level-0 resolution in um/px given by the manifest, overriding the slide's.",
            nullable=True,
        ),
    ),
)
