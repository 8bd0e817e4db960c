"""dataset_tiles: one row per tile of a curated dataset (image, instance and type maps)."""

import pyarrow as pa

from data_schema._table import Column, TableSchema
from data_schema.selection import ARMS

TILE_SOURCES = ("consensus", "single", "imported")

DATASET_TILES = TableSchema(
    name="dataset_tiles",
    version=1,
    doc=(
        "Tiles of a curated dataset (datasets/<name>/<version>/tiles.parquet), one row group "
        "per tile so that a reader fetches one tile without reading the others. Pixels and "
        "maps are lossless PNG: the image as RGB 8-bit (the frozen image exported to Cytomine, "
        "byte for byte, unless it was resampled), the instance map as 16-bit grey (0 "
        "background, nucleus_id of nuclei.parquet elsewhere), the type map as 8-bit grey (0 "
        "background, the class index of dataset.json, 255 for an undetermined nucleus)."
    ),
    columns=(
        Column("tile_id", pa.string(), "Tile id (tiles.tile_id, or '<format>-...' on import)."),
        Column("slide_id", pa.string(), "Slide of the tile (the fold group)."),
        Column("indication", pa.string(), "Indication (PanNuke: tissue type)."),
        Column("cohort", pa.string(), "Cohort of the slide (PanNuke, CoNSeP, Lizard on import)."),
        Column("project", pa.string(), "Campaign it was annotated in; null on import.", True),
        Column("mpp", pa.float64(), "Resolution of the image and maps, um/px."),
        Column("source_mpp", pa.float64(), "Resolution it was annotated (or imported) at."),
        Column("resampled", pa.bool_(), "True when the tile was resampled to mpp."),
        Column("width", pa.int32(), "Width of the image and maps, px."),
        Column("height", pa.int32(), "Height of the image and maps, px."),
        Column("image", pa.binary(), "RGB image, PNG bytes."),
        Column("inst_map", pa.binary(), "Instance map, 16-bit grey PNG bytes."),
        Column("type_map", pa.binary(), "Type map, 8-bit grey PNG bytes (255: undetermined)."),
        Column("fold", pa.int32(), "Fold, 0-based (grouped by slide)."),
        Column("arm", pa.string(), "Selection arm that chose the tile.", True, choices=ARMS),
        Column(
            "source",
            pa.string(),
            "Where its nuclei come from: 'consensus', 'single' (one annotator's masks) or "
            "'imported'.",
            choices=TILE_SOURCES,
        ),
        Column("n_nuclei", pa.int32(), "Nuclei in the instance map (rows of nuclei.parquet)."),
        Column("n_undetermined", pa.int32(), "Of which undetermined (type map 255)."),
    ),
)
