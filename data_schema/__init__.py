"""Table declarations: one module per table, each a versioned `TableSchema`.

Import a declaration from here (``from data_schema import TILES``) and pass it to
`histocurate.io.write_table` / `read_table`.
"""

from data_schema._table import Column, TableSchema
from data_schema.assignments import ASSIGNMENTS
from data_schema.cells import CELL_COUNTS, CELLS, TILE_CELLS
from data_schema.consensus import CONSENSUS, CONSENSUS_FATES
from data_schema.dataset_nuclei import DATASET_NUCLEI
from data_schema.dataset_tiles import DATASET_TILES
from data_schema.evaluation import EVALUATION
from data_schema.features import FEATURES, features_schema
from data_schema.import_rejects import IMPORT_REJECTS
from data_schema.instances import INSTANCES
from data_schema.masks import MASKS
from data_schema.points import POINTS
from data_schema.selection import SELECTION
from data_schema.slides import SLIDES
from data_schema.tiles import TILES
from data_schema.train_metrics import TRAIN_METRICS
from data_schema.truth import TRUTH
from data_schema.truth_tiles import TRUTH_TILES

ALL_SCHEMAS: dict[str, TableSchema] = {
    s.name: s
    for s in (
        ASSIGNMENTS,
        CELL_COUNTS,
        CELLS,
        CONSENSUS,
        CONSENSUS_FATES,
        DATASET_NUCLEI,
        DATASET_TILES,
        EVALUATION,
        FEATURES,
        IMPORT_REJECTS,
        INSTANCES,
        MASKS,
        POINTS,
        SELECTION,
        SLIDES,
        TILE_CELLS,
        TILES,
        TRAIN_METRICS,
        TRUTH,
        TRUTH_TILES,
    )
}

__all__ = [
    "ALL_SCHEMAS",
    "ASSIGNMENTS",
    "CELLS",
    "CELL_COUNTS",
    "CONSENSUS",
    "CONSENSUS_FATES",
    "DATASET_NUCLEI",
    "DATASET_TILES",
    "EVALUATION",
    "FEATURES",
    "IMPORT_REJECTS",
    "INSTANCES",
    "MASKS",
    "POINTS",
    "SELECTION",
    "SLIDES",
    "TILES",
    "TILE_CELLS",
    "TRAIN_METRICS",
    "TRUTH",
    "TRUTH_TILES",
    "Column",
    "TableSchema",
    "features_schema",
]
