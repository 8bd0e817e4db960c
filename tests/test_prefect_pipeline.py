"""The nightly refresh (import -> segment -> consensus) as a scheduled run sees it, against a
local Cytomine sandbox: one parent run with the stages as subflows under one group tag; a
second night without new clicks changes no file of the workspace and says so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from histocurate.cytomine import stage as stage_module
from tests.cytomine_support import (
    bench,
    image_source,
    make_tiles,
    unique,
)


@pytest.fixture
def env(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(stage_module, "default_source", image_source)
    return sandbox


@pytest.mark.prefect
def test_second_night_without_new_clicks_changes_no_file(
    env: Any, tmp_path: Path, prefect_harness: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.artifacts import Artifact
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter

    from flows.pipeline import refresh_annotations_flow

    b = bench(env, tmp_path, monkeypatch, make_tiles(3, px=64, slide="night"))
    project = unique("night")
    assert not b.export(project, k=2).failed
    b.annotate(project)
    ws = str(b.workspace.root)

    first = refresh_annotations_flow(ws, project=project)
    assert first["import"].written and first["segment"].tiles_done
    changed = first["changed_files"]
    assert any(p.startswith("points.parquet") for p in changed)
    assert any(p.endswith("consensus.parquet") for p in changed)

    state = refresh_annotations_flow(ws, project=project, return_state=True)
    second = state.result()
    assert not second["import"].written and second["segment"].tiles_done == []
    assert second["consensus"].up_to_date
    with get_client(sync_client=True) as client:
        parent = client.read_flow_run(state.state_details.flow_run_id)
        group = next(t for t in parent.tags if t.startswith("group:refresh-annotations-"))
        grouped = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags={"all_": [group]}))
    names = {r.name.split(" · ")[0] for r in grouped}
    assert names == {
        f"refresh-annotations {project}",
        f"import {project}",
        f"segment {project}",
        f"consensus {project}",
    }  # the parent and its three stages, and nothing else, under one tag
    assert f"campaign:{project}" in parent.tags
    # last, what the night must show: nothing written, and the summary says so
    assert second["changed_files"] == []
    summary = Artifact.get("refresh-annotations-summary")
    assert summary is not None
    assert "nothing new: no file of the workspace changed" in str(summary.data)


@pytest.mark.prefect
def test_demo_is_one_parent_run_with_its_stages_as_subflows_under_one_group_tag(
    tmp_path: Path, prefect_harness: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """demo_flow as `histocurate demo --prefect` runs it (its steps are CLI commands run
    in-process), on two cheap steps instead of the whole demo."""
    from prefect.artifacts import Artifact
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter

    from flows.demo import demo_flow
    from histocurate.cli.app import main
    from histocurate.demo import runner
    from tests.slide_files import tissue_image, write_slide

    ws = tmp_path / "mini-demo"
    assert main(["init", str(ws)]) == 0
    write_slide(ws / "a.tiff", tissue_image(1024, 1024, seed=3), mpp=0.25)
    (ws / "slides.csv").write_text("slide_id,path,indication\na,a.tiff,LUAD\n")

    def step(command: str) -> Any:
        def run() -> None:
            assert main([command, "-w", str(ws), "--prefect"]) == 0

        return run

    steps = [("tile", step("tile")), ("embed", step("embed"))]
    monkeypatch.setattr(runner, "demo_steps", lambda options: steps)
    state = demo_flow(str(ws), return_state=True)
    assert state.is_completed(), state.message
    with get_client(sync_client=True) as client:
        parent = client.read_flow_run(state.state_details.flow_run_id)
        group = next(t for t in parent.tags if t.startswith("group:demo-"))
        grouped = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags={"all_": [group]}))
    by_name = {r.name.split(" · ")[0]: r for r in grouped}
    assert set(by_name) == {"demo LUAD", "tile", "embed"}  # one parent, two stages, no other
    assert by_name["demo LUAD"].parent_task_run_id is None
    assert by_name["tile"].parent_task_run_id and by_name["embed"].parent_task_run_id
    assert {"pipeline:demo", "workspace:mini-demo"} <= set(by_name["tile"].tags)
    summary = Artifact.get("demo-summary")
    assert summary is not None and "**tile**" in str(summary.data)
