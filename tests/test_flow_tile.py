"""The tile stage through its Prefect flow: same tables as the direct run, plus artifacts."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_schema import TILES
from histocurate.cli.app import main
from histocurate.io import read_table
from tests.slide_files import tissue_image, write_slide


@pytest.mark.prefect
def test_tile_flow_matches_direct_run_and_reports_failures(
    tmp_path: Path, prefect_harness: None
) -> None:
    from prefect.artifacts import Artifact
    from prefect.states import StateType

    from flows.tile import tile_flow

    for ws in (tmp_path / "direct", tmp_path / "flow"):
        assert main(["init", str(ws)]) == 0
        write_slide(ws / "a.tiff", tissue_image(2048, 2048, seed=1), mpp=0.25)
        (ws / "bad.svs").write_text("not a slide")
        (ws / "slides.csv").write_text(
            "slide_id,path,indication\na,a.tiff,LUAD\nbad,bad.svs,LUAD\n"
        )
    assert main(["tile", "-w", str(tmp_path / "direct"), "--no-prefect"]) == 2
    state = tile_flow(str(tmp_path / "flow"), return_state=True)
    assert state.type == StateType.FAILED and "bad" in (state.message or "")  # not green
    outcomes = state.result(raise_on_failure=False).outcomes
    assert {o.item: o.status for o in outcomes} == {"a": "done", "bad": "failed"}
    direct = read_table(tmp_path / "direct" / "tiles.parquet", TILES)
    via_flow = read_table(tmp_path / "flow" / "tiles.parquet", TILES)
    assert via_flow.drop(columns="slide_path").equals(direct.drop(columns="slide_path"))
    artifact = Artifact.get("tile-items")
    # Artifact.get is sync here (it returns a coroutine only inside async code).
    assert artifact is not None and "bad" in str(getattr(artifact, "data", ""))


@pytest.mark.prefect
def test_cli_runs_the_flow_with_only_the_flags_given(tmp_path: Path, prefect_harness: None) -> None:
    """Unset flags must not reach the flow as None overrides (they would override the file)."""
    ws = tmp_path / "ws"
    assert main(["init", str(ws)]) == 0
    write_slide(ws / "a.tiff", tissue_image(2048, 2048, seed=1), mpp=0.25)
    (ws / "slides.csv").write_text("slide_id,path,indication\na,a.tiff,LUAD\n")
    assert main(["tile", "-w", str(ws), "--prefect", "--tissue-threshold", "0.9"]) == 0
    tiles = read_table(ws / "tiles.parquet", TILES)
    assert len(tiles) == 1 and (tiles["tissue_fraction"] >= 0.9).all()  # 4 at the default 0.5
