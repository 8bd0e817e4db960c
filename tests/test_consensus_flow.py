"""The consensus Prefect flow (shards as tasks, one merge), under the shared test harness."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_schema import CONSENSUS
from histocurate.config import load_config
from histocurate.io import read_table
from histocurate.workspace import init_workspace
from tests.test_consensus_stage import _masks


@pytest.mark.prefect
def test_consensus_flow(
    prefect_harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.consensus import consensus_flow

    init_workspace(tmp_path, load_config(tmp_path, require_file=False, environ={}))
    monkeypatch.setattr("histocurate.consensus.shards.read_masks", lambda ws: _masks())
    overrides = {"consensus": {"shard_tiles": 1, "overlays": 1}}
    summary = consensus_flow(str(tmp_path), overrides, segment=True)
    assert summary["nuclei"] == 3 and len(summary["overlays"]) == 1
    table = read_table(tmp_path / "consensus.parquet", CONSENSUS)
    assert len(table) == 3
    assert len(list((tmp_path / "consensus_shards" / "nuclei").glob("*.parquet"))) == 2
