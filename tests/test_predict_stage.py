"""`run_predict` on whole slides: outputs, resume, staleness, and every bad input.

The workspace holds small slides (2048 px at 0.25 um/px, tissue in the middle half, tiles
of 56 um, windows of 448 px with 32 px margins: 384 px cores). A tiny random CellViT in the
real checkpoint layout checks the plumbing; the `OracleModel` (dark blobs are nuclei)
checks that nuclei placed on window borders come out once each.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely
import torch

from data_schema import CELL_COUNTS, CELLS, TILES
from histocurate.cli.app import main
from histocurate.config import HistocurateConfig, load_config
from histocurate.errors import UserInputError
from histocurate.io import partition_path, read_provenance, read_table, write_partition
from histocurate.predict import slide as slide_module
from histocurate.predict import stage as stage_module
from histocurate.predict.stage import run_predict
from histocurate.predict.store import SlidePredictions
from histocurate.testing.predict_data import oracle_loader, tiny_checkpoint
from histocurate.tiling import run_tile
from tests.slide_files import tissue_image, write_slide

# discs (x, y) on core borders (768, 1152), read-box edges (736, 800, 1120, 1184), corners
DISCS = [(768, 600), (1152, 650), (736, 700), (800, 900), (1120, 1000), (1184, 1100),
         (768, 768), (1152, 1152), (960, 960), (600, 1400), (1400, 768)]  # fmt: skip
RADIUS = 7


@pytest.fixture(autouse=True)
def one_thread() -> object:
    """Tiny models run faster on one thread than on two contended ones (shared machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def settings(**extra: object) -> dict[str, object]:
    predict = {"window_um": 112, "margin_um": 8, "workers": 0, "batch_size": 4, **extra}
    return {"tiling": {"tile_size_um": 56}, "predict": predict}


def slide_image(seed: int, discs: list[tuple[int, int]]) -> np.ndarray:
    rgb = tissue_image(2048, 2048, seed=seed)
    rr, cc = np.mgrid[0:2048, 0:2048]
    for x, y in discs:
        rgb[(cc + 0.5 - x) ** 2 + (rr + 0.5 - y) ** 2 <= RADIUS**2] = (60, 30, 90)
    return rgb


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("predict") / "ws"
    assert main(["init", str(root)]) == 0
    write_slide(root / "a.tiff", slide_image(1, DISCS), mpp=0.25)
    write_slide(root / "b.tiff", slide_image(2, []), mpp=0.25)
    write_slide(root / "c20x.tiff", tissue_image(2048, 2048, seed=3), mpp=0.5)
    rgb = slide_image(4, [(700, 700), (1300, 1300)])
    rgb[1290:1300, 690:700] = (0, 0, 255)  # makes the oracle's outputs NaN where it is seen
    write_slide(root / "n.tiff", rgb, mpp=0.25)
    (root / "slides.csv").write_text(
        "slide_id,path,indication\na,a.tiff,LUAD\nb,b.tiff,LUAD\nc20x,c20x.tiff,LUAD\n"
        "n,n.tiff,LUAD\n"
    )
    run = run_tile(load_config(root, settings(), environ={}))
    assert not run.failed
    where = partition_path(root / "tiles.parquet", "n")  # plus a tile on bare glass
    tiles = read_table(where, TILES)
    glass = tiles.iloc[[0]].assign(x=0, y=0, tile_id="n_x0_y0")
    write_partition(pd.concat([tiles, glass], ignore_index=True), root / "tiles.parquet", "n",
                    TILES, provenance=read_provenance(where))  # fmt: skip
    tiny_checkpoint(root / "runs" / "tiny" / "best.pt")
    return root


def config(ws: Path, **extra: object) -> HistocurateConfig:
    return load_config(ws, settings(**extra), environ={})


def oracle(monkeypatch: pytest.MonkeyPatch, ws: Path) -> None:
    """Every model load gives the oracle (the checkpoint file is still read and digested)."""
    load = oracle_loader()
    monkeypatch.setattr(slide_module, "load_model", load)
    monkeypatch.setattr(stage_module, "load_model", load)


def check_outputs(ws: Path, model: str, slide: str, n_cells: int) -> None:
    """The cells table and the files made from it agree."""
    out = SlidePredictions(ws, model)
    cells = read_table(out.cells(slide), CELLS)
    assert len(cells) == n_cells
    tiles = read_table(partition_path(ws / "tiles.parquet", slide), TILES)
    assert set(cells["tile_id"]) <= set(tiles["tile_id"])
    assert cells["cell_id"].tolist() == list(range(1, len(cells) + 1))
    assert cells["probabilities"].map(len).eq(4).all()
    geojson = json.loads(out.geojson(slide).read_text())
    assert [f["properties"]["cell_id"] for f in geojson["features"]] == cells["cell_id"].tolist()
    masks = json.loads(out.cell_masks(slide).read_text())
    assert masks["model_name"] == model and masks["inference_mpp"] == 0.25
    assert sum(len(t["masks"]) for t in masks["cell_masks"]) == len(cells)
    counts = read_table(out.counts(slide), CELL_COUNTS).set_index("label")
    assert counts.loc["all", "count"] == len(cells)
    tissue = (tiles["tissue_fraction"] * (224 * 0.25e-3) ** 2).sum()
    assert counts.loc["all", "tissue_mm2"] == pytest.approx(tissue)
    assert out.thumbnail(slide).exists() and read_provenance(out.cells(slide))["checkpoint"]


def test_tiny_cellvit_runs_and_writes(ws: Path) -> None:
    run = run_predict(config(ws), checkpoint="tiny", slides=["b"])
    (outcome,) = run.outcomes
    assert outcome.status == "done" and run.model == "tiny", run.failure_lines()
    assert outcome.extra["windows"] == 16 and outcome.extra["forward"] > 0  # 4 batches of 4
    check_outputs(ws, "tiny", "b", outcome.count)
    report = run.report()
    assert SlidePredictions(ws, "tiny").thumbnail("b") in report.images
    assert "cells per type" in report.tables and "forward" in report.summary[1]


def test_nuclei_on_window_borders_are_found_once_and_resume(
    ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    oracle(monkeypatch, ws)
    ckpt = tiny_checkpoint(ws / "oracle.pt")
    cfg = config(ws)
    run = run_predict(cfg, checkpoint=str(ckpt), slides=["a"])
    (outcome,) = run.outcomes
    assert outcome.status == "done", run.failure_lines()
    out = SlidePredictions(ws, "oracle")
    cells = read_table(out.cells("a"), CELLS)
    found = cells[["x", "y"]].to_numpy()
    assert len(found) == len(DISCS)
    nearest = np.sqrt(((found[:, None] - np.array(DISCS, float)[None]) ** 2).sum(-1))
    assert (nearest.min(axis=0) < 1.5).all() and (nearest.min(axis=1) < 1.5).all()
    areas = shapely.area(shapely.from_wkb(cells["polygon"].to_numpy()))
    assert np.allclose(areas, np.pi * RADIUS**2, rtol=0.2)
    assert (cells["label"] == "cancer_cell").all() and outcome.extra["duplicates"] > 0
    check_outputs(ws, "oracle", "a", len(DISCS))
    features = json.loads(out.geojson("a").read_text())["features"]
    assert {f["properties"]["classification"]["name"] for f in features} == {"Cancer cell"}
    # up to date: skipped; a checkpoint newer than the prediction: stale, redone
    again = run_predict(cfg, checkpoint=str(ckpt), slides=["a"])
    assert [o.status for o in again.outcomes] == ["skipped"]
    earlier = ckpt.stat().st_mtime - 60  # the prediction predates its checkpoint
    os.utime(out.cells("a"), (earlier, earlier))
    redone = run_predict(cfg, checkpoint=str(ckpt), slides=["a"])
    assert [o.status for o in redone.outcomes] == ["done"]
    assert [o.status for o in run_predict(cfg, checkpoint=str(ckpt), slides=["a"]).outcomes] == [
        "skipped"
    ]


def test_nan_outputs_name_the_window_and_glass_windows_are_skipped(
    ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    oracle(monkeypatch, ws)
    run = run_predict(config(ws), checkpoint=str(tiny_checkpoint(ws / "nan.pt")), slides=["n"])
    (outcome,) = run.outcomes
    assert outcome.status == "done" and outcome.extra["nan"] >= 1
    warned = [w for w in run.report().warnings if "NaN" in w]
    assert warned and all("window" in w and "n_x" in w for w in warned)
    assert outcome.extra["blank"] >= 1  # the glass tile's window: not run
    cells = read_table(SlidePredictions(ws, "nan").cells("n"), CELLS)
    assert len(cells) >= 1  # the disc away from the blue patch is still found


def test_bad_checkpoints_are_named(ws: Path, tmp_path: Path) -> None:
    cfg = config(ws)
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(UserInputError, match=r"notes\.pt: not a PyTorch checkpoint file \(it is"):
        run_predict(cfg, checkpoint=str(text))
    partial = tmp_path / "partial.pt"
    torch.save({"format": "histocurate.cellvit", "state_dict": {}}, partial)
    with pytest.raises(UserInputError, match=r"partial\.pt: checkpoint lacks config, classes"):
        run_predict(cfg, checkpoint=str(partial))
    with pytest.raises(UserInputError, match=r"no checkpoint 'nope'.*runs there: tiny"):
        run_predict(cfg, checkpoint="nope")
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(UserInputError, match=r"without best\.pt or last\.pt"):
        run_predict(cfg, checkpoint=str(tmp_path / "empty_run"))


def test_slides_without_tiles_or_at_a_coarser_mpp_fail_alone(
    ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    oracle(monkeypatch, ws)
    run = run_predict(config(ws), checkpoint="tiny", slides=["zz", "c20x", "a"])
    status = {o.item: o for o in run.outcomes}
    assert status["a"].status in ("done", "skipped")
    assert status["zz"].status == "failed" and "run `histocurate tile`" in (
        status["zz"].error or ""
    )
    error = status["c20x"].error or ""
    assert status["c20x"].status == "failed" and "coarser than the 0.25 um/px" in error
    assert run.exit_code == 2


def test_a_model_at_another_mpp_reads_resampled_windows(ws: Path, tmp_path: Path) -> None:
    path = tiny_checkpoint(tmp_path / "m20x.pt", mpp=0.5)
    run = run_predict(config(ws, window_um=224, margin_um=16), checkpoint=str(path),
                      slides=["b"])  # fmt: skip
    (outcome,) = run.outcomes
    assert outcome.status == "done"
    assert any("resampled" in w for w in run.report().warnings)
    cells = read_table(SlidePredictions(ws, "m20x").cells("b"), CELLS)
    assert cells["x"].between(448, 1600).all()  # in level-0 pixels of the 0.25 um/px slide


def test_cli_exit_codes(ws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = {"window_um": "112", "margin_um": "8", "workers": "0"}
    for key, value in env.items():
        os.environ[f"HISTOCURATE_PREDICT__{key.upper()}"] = value
    try:
        assert main(["predict", "--checkpoint", "tiny", "-w", str(ws), "--slides", "b",
                     "--no-prefect"]) == 0  # fmt: skip
        assert main(["predict", "--checkpoint", "missing", "-w", str(ws), "--no-prefect"]) == 2
        capsys.readouterr()
        # every slide failed: said so (nothing written), with the input-error code
        assert main(["predict", "--checkpoint", "tiny", "-w", str(ws), "--slides", "zz,yy",
                     "--no-prefect"]) == 2  # fmt: skip
        err = capsys.readouterr().err
        assert "failed zz: slide zz has no tiles" in err and "failed yy:" in err
        assert "every slide (2) failed; no prediction was written" in err
        assert "the others were written" not in err
        # one failed beside one up to date: what became of the other is said as it is
        assert main(["predict", "--checkpoint", "tiny", "-w", str(ws), "--slides", "zz,b",
                     "--no-prefect"]) == 2  # fmt: skip
        err = capsys.readouterr().err
        assert "1 slide(s) failed; of the others 1 up to date (not redone)" in err
    finally:
        for key in env:
            del os.environ[f"HISTOCURATE_PREDICT__{key.upper()}"]
