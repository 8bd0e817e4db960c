"""cells, tile_cells, cell_counts: what `histocurate predict` writes.

- ``cells``: the nuclei a CellViT model found on a whole slide, stitched across windows
  (``predictions/<model>/cells.parquet/<slide>.parquet``), in level-0 slide pixels;
- ``tile_cells``: the nuclei it found on the tiles of a dataset version
  (``datasets/<name>/<version>/predictions/<model>/cells.parquet``), in tile pixels: the
  table `histocurate evaluate` reads beside the dataset's ``nuclei.parquet``;
- ``cell_counts``: counts and densities per type of each slide
  (``predictions/<model>/counts.parquet/<slide>.parquet``).

Coordinates: x right, y down, continuous pixel-edge coordinates (pixel (r, c) covers
[c, c+1) x [r, r+1)), as every table of the project. ``probabilities[k]`` is the mean
probability of the model's output class k over the nucleus' pixels (k = 0 background); the
class names are in the file's provenance (``classes``, JSON) and in the checkpoint.
"""

import pyarrow as pa

from data_schema._table import Column, TableSchema

_LABEL_DOC = (
    "Cell type: the ontology id (histocurate.labels) of the model's class when it maps to "
    "one, else the checkpoint's class name; null when every pixel voted background."
)
_COMMON = (
    Column("label", pa.string(), _LABEL_DOC, nullable=True),
    Column("type_index", pa.int32(), "Output class of the model (1..n; 0: no type)."),
    Column("confidence", pa.float32(), "Share of the nucleus' pixels voting for its type."),
    Column(
        "probabilities",
        pa.list_(pa.float32()),
        "Mean probability of each output class (index 0 background) over the nucleus.",
    ),
)

CELLS = TableSchema(
    name="cells",
    version=1,
    doc="Nuclei predicted on a whole slide, stitched across windows; one file per slide.",
    partition_by="slide_id",
    columns=(
        Column("slide_id", pa.string(), "Slide."),
        Column("cell_id", pa.int64(), "Id of the nucleus in its slide (1..n, by tile then y, x)."),
        Column("tile_id", pa.string(), "Tissue tile (tiles.parquet) holding its centroid."),
        Column("x", pa.float64(), "Centroid, level-0 slide pixels (column)."),
        Column("y", pa.float64(), "Centroid, level-0 slide pixels (row)."),
        Column("polygon", pa.binary(), "Outline as WKB, level-0 slide pixels."),
        Column("area_um2", pa.float64(), "Area of the outline, square micrometres."),
        *_COMMON,
        Column("window", pa.int32(), "Inference window it was taken from (row-major index)."),
    ),
)

TILE_CELLS = TableSchema(
    name="tile_cells",
    version=1,
    doc="Nuclei predicted on the tiles of a dataset version, in each tile's pixels.",
    columns=(
        Column("tile_id", pa.string(), "Tile of the dataset (its tiles.parquet)."),
        Column("cell_id", pa.int64(), "Id of the nucleus in its tile (1..n)."),
        Column("x", pa.float64(), "Centroid, tile pixels (column)."),
        Column("y", pa.float64(), "Centroid, tile pixels (row)."),
        Column("polygon", pa.binary(), "Outline as WKB, tile pixels."),
        Column("area_px", pa.float64(), "Area, tile pixels."),
        *_COMMON,
    ),
)

CELL_COUNTS = TableSchema(
    name="cell_counts",
    version=1,
    doc="Cells per type of one slide and their density on its tissue; one file per slide.",
    partition_by="slide_id",
    columns=(
        Column("slide_id", pa.string(), "Slide."),
        Column("label", pa.string(), "Cell type ('all': every cell; 'untyped': no type)."),
        Column("count", pa.int64(), "Cells of that type."),
        Column("share", pa.float64(), "Share of the slide's cells."),
        Column(
            "density_per_mm2",
            pa.float64(),
            "Cells per mm2 of tissue (tissue = sum over tissue tiles of area x tissue fraction).",
        ),
        Column("tissue_mm2", pa.float64(), "Tissue area the density is taken over, mm2."),
    ),
)
