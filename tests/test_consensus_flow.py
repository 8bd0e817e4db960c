"""The consensus Prefect flow (shards as tasks, one merge), under the shared test harness."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_schema import CONSENSUS, MASKS
from histocurate.config import load_config
from histocurate.io import read_table, write_partition
from histocurate.workspace import init_workspace
from tests.test_consensus_stage import _masks


@pytest.mark.prefect
def test_consensus_flow(prefect_harness: None, tmp_path: Path) -> None:
    from flows.consensus import consensus_flow

    workspace = init_workspace(tmp_path, load_config(tmp_path, require_file=False, environ={}))
    masks = _masks().assign(area=100.0, fallback=False)
    for tile_id, rows in masks.groupby("tile_id"):
        write_partition(rows, workspace.masks, str(tile_id), MASKS)
    overrides = {"consensus": {"shard_tiles": 1, "overlays": 1}}
    # segment=False: the masks are given (the segment subflow has its own test).
    summary = consensus_flow(str(tmp_path), overrides, segment=False)
    assert summary["nuclei"] == 3 and len(summary["overlays"]) == 1
    table = read_table(tmp_path / "consensus.parquet", CONSENSUS)
    assert len(table) == 3
    assert len(list((tmp_path / "consensus_shards" / "nuclei").glob("*.parquet"))) == 2
