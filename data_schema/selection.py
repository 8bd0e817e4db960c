"""selection: the tiles chosen for annotation, one row per tile, with why each was chosen."""

import pyarrow as pa

from data_schema._table import Column, TableSchema

ARMS = ("diversity", "rare", "uncertainty")

SELECTION = TableSchema(
    name="selection",
    version=1,
    doc="Tiles selected for annotation (`histocurate select`); one Parquet file per indication.",
    partition_by="indication",
    columns=(
        Column("tile_id", pa.string(), "Selected tile (tiles.tile_id)."),
        Column("slide_id", pa.string(), "Slide the tile comes from."),
        Column("indication", pa.string(), "Indication the selection was made for."),
        Column("arm", pa.string(), "Arm that chose the tile.", choices=ARMS),
        Column("encoder", pa.string(), "Encoder whose features chose it (K-means or model)."),
        Column(
            "cluster_id",
            pa.int64(),
            "Per-slide K-means cluster of the tile (diversity, or uncertainty clusters).",
            nullable=True,
        ),
        Column(
            "rare_type",
            pa.string(),
            "Rare type the tile was kept for (rare, uncertainty).",
            nullable=True,
        ),
        Column(
            "rare_score",
            pa.float64(),
            "Mean predicted P(at least one rare_type cell).",
            nullable=True,
        ),
        Column(
            "model", pa.string(), "Presence model (candidate) that scored the tile.", nullable=True
        ),
        Column(
            "bald",
            pa.float64(),
            "BALD (mutual information, bits) of the ensemble for rare_type.",
            nullable=True,
        ),
        Column(
            "entropy",
            pa.float64(),
            "Predictive entropy (bits) of the ensemble mean.",
            nullable=True,
        ),
        Column(
            "variation_ratio",
            pa.float64(),
            "1 - share of members voting the modal class.",
            nullable=True,
        ),
        Column(
            "draw_weight",
            pa.float64(),
            "Probability weight of the tile in its draw (sums to 1 over the pool).",
            nullable=True,
        ),
    ),
)
