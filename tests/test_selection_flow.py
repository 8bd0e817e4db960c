"""The select flow under Prefect: same selection as the plain run, report artifacts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from data_schema import SELECTION
from histocurate.config import load_config
from histocurate.io import read_table
from histocurate.selection.run import run_select
from histocurate.workspace import Workspace


@pytest.mark.prefect
def test_select_flow_matches_plain_run(selection_workspace: Path, prefect_harness: None) -> None:
    workspace = selection_workspace
    from prefect.client.orchestration import get_client

    from flows.select import select_flow

    state = select_flow(str(workspace), indication="LUAD", return_state=True)
    out = state.result()
    assert "# Selection: LUAD" in out.report().to_markdown()
    flow_sel = read_table(Workspace(workspace).selection, SELECTION)
    plain = run_select(load_config(workspace), "LUAD").result
    pd.testing.assert_frame_equal(
        flow_sel.reset_index(drop=True), read_table(Workspace(workspace).selection, SELECTION)
    )
    assert list(flow_sel["tile_id"]) == list(plain.selection["tile_id"])

    async def keys() -> set[str]:
        async with get_client() as client:
            return {a.key for a in await client.read_artifacts() if a.key}

    import asyncio

    found = asyncio.run(keys())
    assert {"select-luad-report", "select-luad-arms"} <= found

    from tests.test_prefect_flows import _task_runs

    tasks = {t.name for t in _task_runs(state.state_details.flow_run_id)}
    assert "fit-presence-models" in tasks  # the model fit is a task between the two passes
    assert {t.split("-")[0] for t in tasks} == {"scan", "fit", "score_slide"}
