"""`histocurate select --labels-from predictions` through the CLI: the next active-learning
round learns its presence labels from a model's predicted cells (round N's model) instead of
annotations, and says so; without predictions the error names the command to run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely

from data_schema import CELLS, SELECTION, TILES
from histocurate.cli.app import main
from histocurate.config import load_config
from histocurate.features.store import write_slide_features
from histocurate.io import (
    partition_path,
    provenance_token,
    read_provenance,
    read_table,
    write_partition,
)
from histocurate.predict.store import SlidePredictions
from histocurate.testing.selection_data import SyntheticFeatures
from histocurate.workspace import Workspace, init_workspace
from tests.test_selection_pipeline import COHORT, FAST, _tile_rows

MODEL = "round1"


def predicted_cells(slide_id: str, presence: pd.DataFrame) -> pd.DataFrame:
    """The cells a model found on one slide: one confident cell of each type a tile holds
    (the cohort's presence labels), one cancer cell per tile, and on every tile an
    eosinophil of low type confidence that must not make the tile positive."""
    rows: list[tuple[str, str | None, float]] = []
    for record in presence.to_dict("records"):
        tile = str(record["tile_id"])
        rows.append((tile, "cancer_cell", 0.9))
        rows += [(tile, t, 0.9) for t in COHORT.types if record[t]]
        rows.append((tile, "eosinophil", 0.2))
    n = len(rows)
    return pd.DataFrame({
        "slide_id": slide_id, "cell_id": np.arange(1, n + 1), "tile_id": [r[0] for r in rows],
        "x": 10.0, "y": 10.0, "polygon": [shapely.to_wkb(shapely.box(0, 0, 4, 4))] * n,
        "area_um2": 1.0, "label": [r[1] for r in rows], "type_index": 1,
        "confidence": [r[2] for r in rows], "probabilities": [[0.5, 0.5]] * n, "window": 0,
    })  # fmt: skip


def workspace(root: Path, *, predicted: bool) -> Path:
    """Tiles and features of the synthetic cohort (8 slides, LUAD and LUSC); with
    ``predicted``, the cells of `MODEL` on every slide, made from the current tiles."""
    settings = {"selection": FAST | {"mosaic": False}}
    init_workspace(root, load_config(root, settings, require_file=False, environ={}))
    ws = Workspace(root)
    source = SyntheticFeatures(COHORT)
    slides = COHORT.slides()
    for info in slides.to_dict("records"):
        slide = str(info["slide_id"])
        feats = source.load(slide)
        tiles = _tile_rows(slide, feats.tile_ids, pd.Series(info), root / "unread.svs")
        write_partition(tiles, ws.tiles, slide, TILES, provenance={"tiling": "a"})
        made_from = {"tiles": provenance_token(read_provenance(partition_path(ws.tiles, slide)))}
        for enc in COHORT.encoders:
            write_slide_features(ws.features(enc), slide, enc, list(feats.tile_ids),
                                 feats.values[enc], provenance=made_from)  # fmt: skip
        if predicted:
            prov = {"checkpoint": "runs/round1/best.pt", "settings": "s",
                    "classes": json.dumps(list(COHORT.types)), **made_from}  # fmt: skip
            cells = predicted_cells(slide, COHORT.labels([slide]))
            write_partition(cells, SlidePredictions(root, MODEL).cells_dir, slide, CELLS,
                            provenance=prov)  # fmt: skip
    return root


def test_select_learns_presence_from_the_predictions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = workspace(tmp_path / "ws", predicted=True)
    code = main(["select", "--indication", "LUAD", "--labels-from", "predictions", "-w",
                 str(root), "--no-prefect", "--seed", "3"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    ws = Workspace(root)
    selection = read_table(ws.selection, SELECTION)
    assert len(selection) >= FAST["n_tiles"] and set(selection["indication"]) == {"LUAD"}
    assert selection["tile_id"].is_unique
    # where the labels came from, and the threshold that made them, in the report and printed
    source = (
        f"presence labels: predictions of {MODEL} on {len(COHORT.slides())} slide(s) "
        "(a tile holds a type with >= 1 cell(s) of it of type confidence >= 0.5)"
    )
    folder = ws.reports / "select" / "LUAD"
    report = (folder / "report.md").read_text()
    assert source in report and source in captured.out
    # the presence models learnt from the predicted cells: every tile of the 8 predicted
    # slides is labelled, and the positives per type are the tiles with a confident cell of
    # it (the cohort's presence; the low-confidence eosinophil on every tile counts for none)
    truth = COHORT.labels(COHORT.slides()["slide_id"].tolist())
    assert f"candidates per type, {len(truth)} labelled tiles)" in report
    positives = pd.read_csv(folder / "model_choice.csv").set_index("rare_type")["positives"]
    expected = truth[list(COHORT.types)].sum()
    assert positives.to_dict() == expected.to_dict()
    assert 0 < positives["eosinophil"] < len(truth)
    assert "rare" in set(selection["arm"])


def test_select_from_predictions_without_any_says_what_to_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = workspace(tmp_path / "ws", predicted=False)
    args = ["select", "--indication", "LUAD", "-w", str(root), "--no-prefect"]
    assert main([*args, "--labels-from", "predictions"]) == 2
    err = capsys.readouterr().err
    assert "--labels-from predictions: no predictions in" in err
    assert "run `histocurate predict --checkpoint RUN` first" in err
    assert not Workspace(root).selection.exists() or not any(Workspace(root).selection.iterdir())
