"""Shared fixtures and helpers of the Cytomine tests (no tests here).

`sandbox`: a sandbox Cytomine server (current release profile) on a free port of
127.0.0.1 with an admin and three annotators created by the admin; each test uses its own
project name. `Bench`: a workspace with tiles and a selection, wired to a sandbox (its
admin's keys in the environment), running the real stages.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_schema.tiles import TILES
from histocurate.config import HistocurateConfig, load_config
from histocurate.cytomine.retry import RetryPolicy
from histocurate.demo.annotation import SandboxCampaign, running_sandbox
from histocurate.io import write_partition
from histocurate.workspace import Workspace, init_workspace

ANNOTATORS = ["alice", "bob", "carol"]
FAST = RetryPolicy(
    attempts=8,
    backoff_s=0.02,
    max_backoff_s=0.2,
    timeout_s=5.0,
    connect_timeout_s=1.0,
    connect_deadline_s=3.0,
    upload_wait_s=20.0,
    poll_s=0.01,
)
FAST_CONFIG = {
    "retries": 8,
    "backoff_s": 0.02,
    "timeout_s": 5.0,
    "connect_deadline_s": 3.0,
    "upload_wait_s": 20.0,
}
IMPORT_DELAY_S = 0.02
_names = itertools.count()


def unique(prefix: str = "project") -> str:
    return f"{prefix}-{next(_names)}"


@pytest.fixture(scope="module", name="sandbox")
def sandbox_fixture() -> Iterator[SandboxCampaign]:
    with running_sandbox(ANNOTATORS, import_delay_s=IMPORT_DELAY_S) as running:
        yield running


def make_tiles(n: int, *, px: int = 32, slide: str = "s1", mpp: float = 0.25) -> pd.DataFrame:
    """A tiles table (all TILES columns) of ``n`` tiles side by side."""
    rows = []
    for i in range(n):
        rows.append(
            {
                "tile_id": f"{slide}_x{i * px}_y0",
                "slide_id": slide,
                "indication": "LUAD",
                "cohort": "test",
                "slide_path": "/nonexistent.tif",
                "x": i * px,
                "y": 0,
                "size_level0": px,
                "mpp": mpp,
                "tile_mpp": mpp,
                "tile_px": px,
                "read_level": 0,
                "read_size": px,
                "resized": False,
                "tissue_fraction": 1.0,
            }
        )
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


def write_selection(path: Path, tiles: pd.DataFrame, indication: str = "LUAD") -> Path:
    """A plain selection file (tile_id, slide_id, indication)."""
    table = pa.table(
        {
            "tile_id": list(tiles["tile_id"]),
            "slide_id": list(tiles["slide_id"]),
            "indication": [indication] * len(tiles),
        }
    )
    pq.write_table(table, path)
    return path


def sorted_clicks(frame: pd.DataFrame) -> pd.DataFrame:
    cols = ["annotator", "tile_id", "x", "y", "label"]
    out = frame[cols].sort_values(cols).reset_index(drop=True)
    return out.astype({"annotator": str, "tile_id": str, "x": float, "y": float, "label": str})


def new_workspace(root: Path, tiles: pd.DataFrame, **cytomine: Any) -> HistocurateConfig:
    """A workspace holding ``tiles`` (one partition per slide), fast Cytomine settings."""
    init_workspace(root, load_config(root, require_file=False, environ={}), exist_ok=True)
    for slide, group in tiles.groupby("slide_id"):
        write_partition(
            group,
            Workspace(root).tiles,
            str(slide),
            TILES,
            provenance={"slide": str(slide), "scan": "1"},
        )
    return load_config(root, {"cytomine": {**FAST_CONFIG, **cytomine}}, environ={})


@dataclass
class Bench:
    """A workspace wired to a sandbox: export, annotate and import with the real stages."""

    sandbox: SandboxCampaign
    config: HistocurateConfig
    tiles: pd.DataFrame
    selection: Path

    @property
    def workspace(self) -> Workspace:
        return Workspace.of(self.config)

    def export(self, project: str, **kw: Any) -> Any:
        from histocurate.cytomine.stage import run_export

        kw.setdefault("annotators", ANNOTATORS)
        kw.setdefault("image_source", image_source)
        return run_export(self.config, selection=self.selection, project=project, **kw)

    def annotate(self, project: str, truth: pd.DataFrame | None = None, **kw: Any) -> Any:
        from histocurate.demo.annotation import annotate

        truth = make_truth(self.tiles) if truth is None else truth
        return annotate(self.sandbox, project=project, truth=truth, policy=FAST, **kw)

    def import_(self, project: str, **kw: Any) -> Any:
        from histocurate.cytomine.stage import run_import

        return run_import(self.config, project=project, **kw)


def bench(
    sandbox: SandboxCampaign,
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
    tiles: pd.DataFrame,
    **cytomine: Any,
) -> Bench:
    """A `Bench` on ``sandbox`` whose stages connect as the sandbox's admin."""
    for key, value in sandbox.env().items():
        monkeypatch.setenv(key, value)
    config = new_workspace(root / "ws", tiles, **cytomine)
    return Bench(sandbox, config, tiles, write_selection(root / "selection.parquet", tiles))
