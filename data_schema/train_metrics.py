"""train_metrics: what a CellViT training run measured, per step and per validation."""

import pyarrow as pa

from data_schema._table import Column, TableSchema

METRIC_KINDS = ("train", "validation")

TRAIN_METRICS = TableSchema(
    name="train_metrics",
    version=1,
    doc=(
        "runs/<run>/metrics.parquet, long format: one row per (step or validation, metric). "
        "Train rows every optimiser step: loss (the weighted total), its seven terms (np_ft, "
        "np_dice, hv_mse, hv_msge, nt_ce, nt_dice, nt_ft, unweighted), lr and images_per_s. "
        "Validation rows after the epochs the run validates: bpq (mean of per-tile binary "
        "PQ, CellViT's), dq, sq (tile means), pq_pooled, dq_pooled, sq_pooled, f1_detection, "
        "f1_<class> (12 px centroid pairing at 40x) and mf1 (their mean), on the held-out fold."
    ),
    columns=(
        Column("run", pa.string(), "Run name (the folder under runs/)."),
        Column(
            "kind",
            pa.string(),
            "'train' (one optimiser step) or 'validation'.",
            choices=METRIC_KINDS,
        ),
        Column("epoch", pa.int32(), "Epoch, 0-based (a validation: the epoch it follows)."),
        Column("step", pa.int64(), "Optimiser steps done, all epochs (1 after the first)."),
        Column("images", pa.int64(), "Training tiles seen so far (all processes)."),
        Column("seconds", pa.float64(), "Training wall time so far, s (resumes included)."),
        Column("metric", pa.string(), "Metric name (see the table's description)."),
        Column("value", pa.float64(), "Its value; null when undefined (a class absent).", True),
    ),
)
