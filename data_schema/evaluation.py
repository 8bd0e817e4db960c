"""evaluation: metrics of one or two predictions against a truth, with bootstrap intervals."""

import pyarrow as pa

from data_schema._table import Column, TableSchema

EVALUATION = TableSchema(
    name="evaluation",
    version=1,
    doc="One row per (prediction, metric, cell type); differences of two predictions too.",
    columns=(
        Column(
            "prediction",
            pa.string(),
            "Name of the prediction, or '<second> - <first>' for a paired difference.",
        ),
        Column("kind", pa.string(), "'value' (a metric) or 'difference' (second - first)."),
        Column(
            "metric",
            pa.string(),
            "dq, sq, pq (binary, all nuclei), f1_mean (mean of per-class F1), "
            "f1, precision, recall (per cell type).",
        ),
        Column(
            "cell_type", pa.string(), "Label id for per-class metrics, else null.", nullable=True
        ),
        Column(
            "value",
            pa.float64(),
            "The metric on all tiles; null when undefined (e.g. a class absent on both sides).",
            nullable=True,
        ),
        Column(
            "ci_low",
            pa.float64(),
            "Lower bound of the bootstrap percentile interval (null without resamples).",
            nullable=True,
        ),
        Column(
            "ci_high",
            pa.float64(),
            "Upper bound of the bootstrap percentile interval (null without resamples).",
            nullable=True,
        ),
        Column(
            "p_value",
            pa.float64(),
            "Two-sided paired bootstrap p-value of no difference (difference rows only).",
            nullable=True,
        ),
        Column("support", pa.int64(), "True nuclei counted (of the class, for per-class rows)."),
        Column("n_tiles", pa.int64(), "Tiles evaluated."),
        Column("n_boot", pa.int64(), "Bootstrap resamples of tiles."),
        Column("confidence", pa.float64(), "Coverage of the interval (0.95)."),
        Column("aggregate", pa.string(), "'pooled' (sums over tiles) or 'tile_mean' (DQ/SQ/PQ)."),
    ),
)
