"""The consensus Prefect flow (shards as tasks, one merge) equals the plain run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from data_schema import CONSENSUS
from histocurate.config import load_config
from histocurate.consensus.stage import run_consensus
from histocurate.io import read_table
from histocurate.workspace import Workspace, init_workspace
from tests.campaigns import campaign_from_masks
from tests.test_consensus_stage import PROJECT, _masks


@pytest.mark.prefect
def test_consensus_flow_equals_plain_run(prefect_harness: None, tmp_path: Path) -> None:
    from flows.consensus import consensus_flow

    init_workspace(tmp_path, load_config(tmp_path, require_file=False, environ={}))
    campaign_from_masks(tmp_path, PROJECT, _masks())
    overrides = {"consensus": {"shard_tiles": 1, "overlays": 1, "resegment": False}}
    run = consensus_flow(str(tmp_path), overrides=overrides)
    assert len(run.nuclei) == 3 and len(run.overlays) == 1 and len(run.outcomes) == 2
    campaign = Workspace(tmp_path).campaign(PROJECT)
    via_flow = read_table(campaign.consensus, CONSENSUS)
    assert not (campaign.root / ".consensus-shards").exists()  # merged and cleared
    again = consensus_flow(str(tmp_path), overrides=overrides)
    assert again.up_to_date  # nothing new: nothing written
    plain = run_consensus(load_config(tmp_path, overrides, environ={}), force=True)
    assert not plain.up_to_date
    pd.testing.assert_frame_equal(read_table(campaign.consensus, CONSENSUS), via_flow)
