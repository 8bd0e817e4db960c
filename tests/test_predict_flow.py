"""The predict flow: the same cells as the plain run, one task per slide, the report (with
the thumbnails inline) as artifacts, and a failed slide failing the run but not the others."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_schema import CELLS
from histocurate.cli.app import main
from histocurate.config import load_config
from histocurate.io import read_table
from histocurate.predict import slide as slide_module
from histocurate.predict import stage as stage_module
from histocurate.predict.stage import run_predict
from histocurate.predict.store import SlidePredictions
from histocurate.testing.predict_data import oracle_loader, tiny_checkpoint
from histocurate.tiling import run_tile
from tests.slide_files import tissue_image, write_slide

SETTINGS = {"tiling": {"tile_size_um": 56},
            "predict": {"window_um": 112, "margin_um": 8, "workers": 0}}  # fmt: skip


def workspace(root: Path) -> Path:
    assert main(["init", str(root)]) == 0
    rgb = tissue_image(2048, 2048, seed=7)
    rgb[700:714, 760:774] = (60, 30, 90)  # one nucleus on a core border (x = 768)
    write_slide(root / "a.tiff", rgb, mpp=0.25)
    (root / "slides.csv").write_text("slide_id,path,indication\na,a.tiff,LUAD\n")
    assert not run_tile(load_config(root, SETTINGS, environ={})).failed
    tiny_checkpoint(root / "m.pt")
    return root


@pytest.mark.prefect
def test_predict_flow_matches_the_plain_run(
    tmp_path: Path, prefect_harness: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.artifacts import Artifact

    from flows._stage import run_flow
    from flows.predict import predict_flow, predict_new_slides_flow

    load = oracle_loader()
    monkeypatch.setattr(slide_module, "load_model", load)
    monkeypatch.setattr(stage_module, "load_model", load)
    plain, flow = workspace(tmp_path / "plain"), workspace(tmp_path / "flow")
    direct = run_predict(load_config(plain, SETTINGS, environ={}), checkpoint=str(plain / "m.pt"))
    run = run_flow(predict_flow, workspace=str(flow), checkpoint=str(flow / "m.pt"),
                   slides=["a", "missing"], overrides=SETTINGS)  # fmt: skip
    status = {o.item: o.status for o in run.outcomes}
    assert status == {"a": "done", "missing": "failed"}
    a = read_table(SlidePredictions(plain, "m").cells("a"), CELLS)
    b = read_table(SlidePredictions(flow, "m").cells("a"), CELLS)
    assert len(a) == len(b) == direct.outcomes[0].count == 1
    assert a[["x", "y", "label"]].equals(b[["x", "y", "label"]])
    report = Artifact.get("predict-report")
    assert report is not None and "data:image/jpeg;base64" in str(report.data)
    assert "missing" in str(report.data)
    # the nightly flow: nothing new to tile, slide a up to date
    nightly = run_flow(predict_new_slides_flow, workspace=str(flow),
                       checkpoint=str(flow / "m.pt"), overrides=SETTINGS)  # fmt: skip
    assert [(o.item, o.status) for o in nightly["predict"].outcomes] == [("a", "skipped")]
