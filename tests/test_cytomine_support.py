"""Shared fixtures and helpers of the Cytomine tests (no tests here).

`sandbox`: a sandbox Cytomine server on a free port of 127.0.0.1 with an admin and three
annotators created by the admin; each test uses its own project name.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_schema.tiles import TILES
from histocurate.cytomine.client import RetryPolicy
from histocurate.cytomine.demo import SandboxCampaign, running_sandbox

ANNOTATORS = ["alice", "bob", "carol"]
FAST = RetryPolicy(
    attempts=8, backoff_s=0.02, max_backoff_s=0.2, timeout_s=5.0, connect_timeout_s=1.0,
    connect_deadline_s=3.0,
)  # fmt: skip
_names = itertools.count()


def unique(prefix: str = "project") -> str:
    return f"{prefix}-{next(_names)}"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxCampaign]:
    with running_sandbox(ANNOTATORS) as running:
        yield running


def make_tiles(n: int, *, px: int = 32, slide: str = "s1", mpp: float = 0.25) -> pd.DataFrame:
    """A tiles table (all TILES columns) of ``n`` tiles side by side."""
    rows = []
    for i in range(n):
        rows.append(
            {
                "tile_id": f"{slide}_x{i * px}_y0", "slide_id": slide, "indication": "LUAD",
                "cohort": "test", "slide_path": "/nonexistent.tif", "x": i * px, "y": 0,
                "size_level0": px, "mpp": mpp, "tile_mpp": mpp, "tile_px": px, "read_level": 0,
                "read_size": px, "resized": False, "tissue_fraction": 1.0,
            }
        )  # fmt: skip
    return pd.DataFrame(rows, columns=TILES.column_names)


def image_source(tile: pd.Series) -> np.ndarray:
    """Deterministic RGB pixels of a tile (stands in for histocurate.slides.read_tile)."""
    px = int(tile["tile_px"])
    rng = np.random.default_rng(int(tile["x"]))
    return rng.integers(0, 256, (px, px, 3), dtype=np.uint8)


def make_truth(tiles: pd.DataFrame, per_tile: int = 12, seed: int = 0) -> pd.DataFrame:
    """Nuclei in tile pixels (what histocurate.synth.truth_in_tiles gives)."""
    rng = np.random.default_rng(seed)
    labels = ["lymphocyte", "cancer_cell", "eosinophil", "fibroblast", "mitotic_figure"]
    frames = []
    for tile in tiles.itertuples():
        px = tile.tile_px
        frames.append(
            pd.DataFrame(
                {
                    "tile_id": tile.tile_id,
                    "x": rng.uniform(2, px - 2, per_tile),
                    "y": rng.uniform(2, px - 2, per_tile),
                    "label": rng.choice(labels, per_tile),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def write_selection(path: Path, tile_ids: list[str]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"tile_id": tile_ids}), path)
    return path


def sorted_clicks(frame: pd.DataFrame) -> pd.DataFrame:
    cols = ["annotator", "tile_id", "x", "y", "label"]
    out = frame[cols].sort_values(cols).reset_index(drop=True)
    return out.astype({"annotator": str, "tile_id": str, "x": float, "y": float, "label": str})
