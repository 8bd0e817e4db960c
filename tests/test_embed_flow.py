"""The embed flow on a 2-worker local Dask cluster gives the same files as the direct run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from histocurate.config import load_config
from histocurate.features import load_features, run_embed
from tests.test_embed_stage import make_workspace


@pytest.mark.prefect
@pytest.mark.slow
def test_dask_flow_equals_in_process_run(tmp_path: Path, prefect_harness: None) -> None:
    from prefect.artifacts import Artifact

    from flows._stage import run_flow
    from flows.embed import embed_flow_on

    ws = make_workspace(tmp_path / "ws", slides=3)
    outcomes = run_flow(embed_flow_on(dask_workers=2), workspace=str(ws)).outcomes
    assert sorted((o.item, o.status) for o in outcomes) == [
        ("s0", "done"),
        ("s1", "done"),
        ("s2", "done"),
    ]
    via_dask = load_features(ws, "builtin")
    config = load_config(ws, {"features": {"num_workers": 0}})
    direct = run_embed(config, force=True).outcomes
    assert {o.status for o in direct} == {"done"}
    here = load_features(ws, "builtin")
    assert here.tile_ids.tolist() == via_dask.tile_ids.tolist()
    np.testing.assert_array_equal(here.values, via_dask.values)
    report = Artifact.get("embed-report")
    assert report is not None and "of 3 slide(s) embedded" in str(report.data)
    # A second run of the flow (threads this time) has nothing left to do.
    again = run_flow(embed_flow_on(), workspace=str(ws)).outcomes
    assert {o.status for o in again} == {"skipped"}
