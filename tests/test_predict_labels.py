"""The next round: a model's predicted cells as presence labels for `select`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely

from data_schema import CELLS, TILES
from histocurate.cli.app import main
from histocurate.config import load_config
from histocurate.errors import UserInputError
from histocurate.io import provenance_token, write_partition
from histocurate.predict.labels import main as share_main
from histocurate.predict.labels import prediction_annotations, rare_share
from histocurate.predict.store import SlidePredictions
from histocurate.selection.presence import presence_labels
from histocurate.selection.run import read_annotations
from histocurate.workspace import Workspace, init_workspace

# (tile, label, confidence) of the predicted cells of slide s1
CELLS_S1 = [("t1", "eosinophil", 0.9), ("t2", "eosinophil", 0.3), ("t3", "mitotic_figure", 0.8),
            ("t3", "mitotic_figure", 0.7), ("t4", "mitotic_figure", 0.8),
            ("t4", "cancer_cell", 0.9), ("t4", None, 0.2)]  # fmt: skip


def tiles_frame() -> pd.DataFrame:
    rows = [(f"t{k}", "s1" if k <= 5 else "s2") for k in range(1, 8)]
    return pd.DataFrame({
        "tile_id": [t for t, _ in rows], "slide_id": [s for _, s in rows], "indication": "LUAD",
        "cohort": "c", "slide_path": "/x.tiff", "x": np.arange(7) * 448, "y": 0,
        "size_level0": 448, "mpp": 0.25, "tile_mpp": 0.25, "tile_px": 448, "read_level": 0,
        "read_size": 448, "resized": False, "tissue_fraction": 1.0,
    })  # fmt: skip


def write_cells(ws: Path, model: str, rows: list[tuple[str, str | None, float]]) -> None:
    n = len(rows)
    frame = pd.DataFrame({
        "slide_id": "s1", "cell_id": np.arange(1, n + 1), "tile_id": [r[0] for r in rows],
        "x": 10.0, "y": 10.0, "polygon": [shapely.to_wkb(shapely.box(0, 0, 4, 4))] * n,
        "area_um2": 1.0, "label": [r[1] for r in rows], "type_index": 1,
        "confidence": [r[2] for r in rows], "probabilities": [[0.5, 0.5]] * n, "window": 0,
    })  # fmt: skip
    prov = {"checkpoint": "x", "tiles": provenance_token({"tiling": "a"}), "settings": "s",
            "classes": json.dumps(["eosinophil"])}  # fmt: skip
    write_partition(frame, SlidePredictions(ws, model).cells_dir, "s1", CELLS, provenance=prov)


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    init_workspace(root, load_config(root, environ={}, require_file=False))
    tiles = tiles_frame()
    for slide, part in tiles.groupby("slide_id"):
        write_partition(part, Workspace(root).tiles, str(slide), TILES,
                        provenance={"tiling": "a"})  # fmt: skip
    write_cells(root, "round1", CELLS_S1)
    return root


def labels(ws: Path, **predict: object) -> pd.DataFrame:
    cfg = load_config(ws, {"predict": {"selection_labels_from": "predictions", **predict}},
                      environ={})  # fmt: skip
    rows, ids, source = read_annotations(Workspace(ws), cfg, tiles_frame())
    assert ids is not None and "predictions of round1 on 1 slide(s)" in source
    return presence_labels(rows, ["eosinophil", "mitotic_figure"], tile_ids=ids)


def test_a_tile_holds_a_type_with_one_confident_cell(ws: Path) -> None:
    table = labels(ws)
    assert sorted(table.index) == ["t1", "t2", "t3", "t4", "t5"]  # every tile of s1, none of s2
    assert table["eosinophil"].to_dict() == {"t1": True, "t2": False, "t3": False, "t4": False,
                                             "t5": False}  # fmt: skip
    assert table["mitotic_figure"][["t3", "t4", "t5"]].tolist() == [True, True, False]


def test_the_thresholds_are_settings(ws: Path) -> None:
    table = labels(ws, presence_min_cells=2)
    assert table["mitotic_figure"][["t3", "t4"]].tolist() == [True, False]
    loose = labels(ws, presence_min_confidence=0.25)
    assert loose["eosinophil"]["t2"]


def test_which_predictions_and_when_they_are_stale(ws: Path) -> None:
    write_cells(ws, "round2", [("t5", "eosinophil", 1.0)])  # the newest model is the default
    assert labels(ws, selection_labels_from="predictions:round1")["eosinophil"]["t1"]
    cfg = load_config(ws, {"predict": {"selection_labels_from": "predictions"}}, environ={})
    rows, _, source = prediction_annotations(Workspace(ws), cfg, tiles_frame())
    assert "round2" in source and rows["tile_id"].tolist() == ["t5"]
    bad = load_config(ws, {"predict": {"selection_labels_from": "predictions:nope"}}, environ={})
    with pytest.raises(UserInputError, match=r"no predictions of 'nope'.*round1, round2"):
        prediction_annotations(Workspace(ws), bad, tiles_frame())
    tiles = tiles_frame()  # s1 retiled since its prediction:
    s1 = tiles[tiles.slide_id == "s1"]
    write_partition(s1, Workspace(ws).tiles, "s1", TILES, provenance={"tiling": "b"})
    with pytest.raises(UserInputError, match=r"slide\(s\) \['s1'\] were made from tiles"):
        prediction_annotations(Workspace(ws), cfg, tiles)


def test_labels_and_labels_from_predictions_are_exclusive(ws: Path) -> None:
    overrides = {"predict": {"selection_labels_from": "predictions"},
                 "selection": {"labels": str(ws / "truth.csv")}}  # fmt: skip
    with pytest.raises(UserInputError, match="give one of them"):
        read_annotations(Workspace(ws), load_config(ws, overrides, environ={}), tiles_frame())


def test_no_predictions_says_what_to_run(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    init_workspace(root, load_config(root, environ={}, require_file=False))
    cfg = load_config(root, {"predict": {"selection_labels_from": "predictions"}}, environ={})
    with pytest.raises(UserInputError, match="run `histocurate predict --checkpoint RUN`"):
        read_annotations(Workspace(root), cfg, tiles_frame())


def test_select_cli_takes_the_option(ws: Path) -> None:
    assert main(["select", "--indication", "LUAD", "--labels-from", "guesses", "-w", str(ws),
                 "--no-prefect"]) == 2  # fmt: skip


def test_rare_share_of_selections(ws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    truth = pd.DataFrame(
        {
            "tile_id": ["t1", "t1", "t2", "t3"],
            "label": ["eosinophil", "cancer_cell", "cancer_cell", "lymphocyte"],
        }
    )
    share = rare_share(["t1", "t2"], truth)  # fmt: skip
    assert share == {"tiles": 2.0, "tiles_with_rare": 0.5, "rare_nuclei_share": 1 / 3}
    truth.to_parquet(ws / "truth.parquet")
    pd.DataFrame({"tile_id": ["t1", "t2"]}).to_parquet(ws / "round1.parquet")
    pd.DataFrame({"tile_id": ["t2", "t3"]}).to_parquet(ws / "round2.parquet")
    share_main(["-w", str(ws), "--truth", "truth.parquet", "round1.parquet", "round2.parquet"])
    out = capsys.readouterr().out.splitlines()
    assert "50.0%" in out[1] and "0.0%" in out[2]
