"""The nightly predict (predict-new-slides) as a scheduled run shows it: one parent run with
tile and predict as subflows under one group tag; a new slide that cannot be tiled does not
keep the others from being predicted, and the parent ends Failed naming the stage and the
slide; an unset checkpoint is refused before any work, naming HISTOCURATE_CHECKPOINT."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from histocurate.cli.app import main
from histocurate.predict import slide as slide_module
from histocurate.predict import stage as stage_module
from histocurate.testing.predict_data import oracle_loader, tiny_checkpoint
from tests.slide_files import tissue_image, write_slide

SETTINGS = {"tiling": {"tile_size_um": 56},
            "predict": {"window_um": 112, "margin_um": 8, "workers": 0}}  # fmt: skip


@pytest.fixture
def oracle(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model finds the dark blobs exactly (no weights, no GPU)."""
    load = oracle_loader()
    monkeypatch.setattr(slide_module, "load_model", load)
    monkeypatch.setattr(stage_module, "load_model", load)


def _runs(tag: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(tags={"all_": [tag]}))


@pytest.mark.prefect
def test_nightly_predict_with_a_broken_new_slide_is_one_failed_parent(
    tmp_path: Path, prefect_harness: None, oracle: None
) -> None:
    from prefect.artifacts import Artifact
    from prefect.client.orchestration import get_client

    from flows.predict import predict_new_slides_flow

    ws = tmp_path / "night-ws"
    assert main(["init", str(ws)]) == 0
    rgb = tissue_image(2048, 2048, seed=7)
    rgb[700:714, 760:774] = (60, 30, 90)  # one nucleus
    write_slide(ws / "a.tiff", rgb, mpp=0.25)
    (ws / "bad.svs").write_text("not a slide")
    (ws / "slides.csv").write_text("slide_id,path,indication\na,a.tiff,LUAD\nbad,bad.svs,LUAD\n")
    tiny_checkpoint(ws / "m.pt")

    state = predict_new_slides_flow(str(ws), checkpoint=str(ws / "m.pt"), overrides=SETTINGS,
                                    return_state=True)  # fmt: skip
    assert state.is_failed()  # not green: the bad slide shows
    message = state.message or ""
    assert message.startswith("1 of 2 stage(s) failed: tile: 1 item(s) failed: bad:"), message
    result = state.result(raise_on_failure=False)
    assert [(o.item, o.status) for o in result["predict"].outcomes] == [("a", "done")]

    with get_client(sync_client=True) as client:
        parent = client.read_flow_run(state.state_details.flow_run_id)
    assert parent.name.startswith("predict-new-slides · night-ws · ")
    assert {"pipeline:predict-new-slides", "workspace:night-ws"} <= set(parent.tags)
    group = next(t for t in parent.tags if t.startswith("group:predict-new-slides-"))
    grouped = {r.name.split(" · ")[0]: r for r in _runs(group)}
    assert set(grouped) == {"predict-new-slides", "tile", "predict"}
    assert grouped["tile"].state.is_failed() and grouped["predict"].state.is_completed()
    assert grouped["tile"].parent_task_run_id and grouped["predict"].parent_task_run_id
    summary = Artifact.get("predict-new-slides-summary")
    assert summary is not None and "**tile** (failed)" in str(summary.data)

    # unset HISTOCURATE_CHECKPOINT: refused before tiling, the run found by its tags
    unset = predict_new_slides_flow(str(ws), checkpoint="", return_state=True)
    assert unset.is_failed() and "HISTOCURATE_CHECKPOINT" in (unset.message or "")
    with get_client(sync_client=True) as client:
        refused = client.read_flow_run(unset.state_details.flow_run_id)
    group = next(t for t in refused.tags if t.startswith("group:predict-new-slides-"))
    assert "workspace:night-ws" in refused.tags
    assert [r.id for r in _runs(group)] == [refused.id]  # no stage ran
