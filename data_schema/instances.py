"""instances: predicted nuclei of a model (one row per nucleus), the input of `evaluate`.

`histocurate evaluate` reads this table and any other with the same required columns
(``tile_id``, ``polygon`` and/or ``x``/``y``, ``label``; consensus.parquet has more
columns, and an optional ``labels`` list when the annotators left several labels): see
`histocurate.metrics.tables.INSTANCE_COLUMNS` for the columns the reader checks.
"""

import pyarrow as pa

from data_schema._table import Column, TableSchema

INSTANCES = TableSchema(
    name="instances",
    version=1,
    doc="Nuclei instances (model predictions) in tile pixels, origin top-left.",
    columns=(
        Column("tile_id", pa.string(), "Tile the nucleus lies in."),
        Column("x", pa.float64(), "Centroid column, tile pixels (origin top-left)."),
        Column("y", pa.float64(), "Centroid row, tile pixels (origin top-left)."),
        Column(
            "polygon",
            pa.binary(),
            "Nucleus outline as WKB, tile pixels; pixel (r, c) is inside when its centre "
            "(c + 0.5, r + 0.5) is.",
        ),
        Column(
            "label",
            pa.string(),
            "Cell type id (histocurate.labels.LABELS); null when the model gives none.",
            nullable=True,
        ),
    ),
)
