"""Consensus stage: table, re-segmentation, GeoJSON, overlays, agreement report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely
from shapely.geometry import Point

from data_schema import CONSENSUS
from histocurate.config import load_config
from histocurate.consensus.agreement import agreement_report, cohen_kappa, fleiss_kappa
from histocurate.consensus.export import UNDETERMINED_NAME, tile_feature_collection
from histocurate.consensus.stage import consensus_shard, finish_consensus, run_consensus
from histocurate.io import read_table
from histocurate.workspace import init_workspace


def _masks() -> pd.DataFrame:
    """Two tiles; t1: 3 annotators, 4 nuclei (one lymphocyte/plasmocyte disagreement, one
    found by A only); t2: A only (no consensus possible)."""
    spec = [
        ("t1", 40, 40, {"A": "lymphocyte", "B": "lymphocyte", "C": "lymphocyte"}),
        ("t1", 100, 40, {"A": "lymphocyte", "B": "plasmocyte"}),
        ("t1", 40, 100, {"A": "unknown", "B": "unknown", "C": "unknown"}),
        ("t1", 100, 100, {"A": "eosinophil"}),
        ("t2", 40, 40, {"A": "fibroblast"}),
    ]
    rows = []
    for tile, cx, cy, votes in spec:
        for k, (annotator, label) in enumerate(votes.items()):
            x, y = cx + k - 1, cy
            rows.append(
                dict(annotation_id=len(rows) + 1, tile_id=tile, annotator=annotator, x=x, y=y,
                     label=label, polygon=shapely.to_wkb(Point(x, y).buffer(9, 8)),
                     segmenter="fake")
            )  # fmt: skip
    return pd.DataFrame(rows)


def _tiles() -> pd.DataFrame:
    return pd.DataFrame({"tile_id": ["t1"], "tile_px": [160]}).set_index("tile_id", drop=False)


def _read_tile(row: pd.Series) -> np.ndarray:
    return np.full((int(row["tile_px"]), int(row["tile_px"]), 3), 200, dtype=np.uint8)


def _segment(image: np.ndarray, points: np.ndarray, mpp: float | None) -> list[object]:
    return [Point(x, y).buffer(7, 8) for x, y in points]


@pytest.fixture
def config(tmp_path: Path):  # type: ignore[no-untyped-def]
    init_workspace(tmp_path, load_config(tmp_path, require_file=False, environ={}))
    return load_config(tmp_path, {"consensus": {"overlays": 5}}, environ={})


def test_stage_writes_table_geojson_overlays_and_report(config) -> None:  # type: ignore[no-untyped-def]
    masks = _masks()
    nuclei, fates, single, missing = consensus_shard(
        config, masks, tiles=_tiles(), segment=_segment, segmenter_name="fake-nuclick",
        read_tile=_read_tile,
    )  # fmt: skip
    assert single == ["t2"] and missing == []
    run = finish_consensus(
        config, nuclei, fates, single_annotator_tiles=single, tiles=_tiles(), read_tile=_read_tile
    )
    table = read_table(run.table, CONSENSUS)
    assert len(table) == 3
    assert (table["polygon_source"] == "resegmented").all()
    assert (table["segmenter"] == "fake-nuclick").all()
    assert table["area"].iloc[0] == pytest.approx(shapely.from_wkb(table["polygon"][0]).area)
    by_x = table.sort_values(["y", "x"]).reset_index(drop=True)
    assert by_x["label"][0] == "lymphocyte" and by_x["label"][1:].isna().all()
    assert [list(v) for v in by_x["labels"]] == [
        ["lymphocyte"],
        ["lymphocyte", "plasmocyte"],
        ["unknown"],
    ]

    geojson = json.loads((config.workspace / "exports" / "qupath" / "t1.geojson").read_text())
    assert geojson["type"] == "FeatureCollection" and len(geojson["features"]) == 3
    classes = sorted(f["properties"]["classification"]["name"] for f in geojson["features"])
    assert classes == ["Cell with unknown type", "Lymphocyte", UNDETERMINED_NAME]
    feature = geojson["features"][0]
    assert feature["geometry"]["type"] == "Polygon"
    assert feature["properties"]["objectType"] == "detection"
    assert len(feature["properties"]["classification"]["color"]) == 3

    assert sorted(p.name for p in run.overlays) == ["t1.png", "t2.png"]
    report_md = (config.workspace / "reports" / "consensus" / "agreement.md").read_text()
    assert "t2" in report_md and "Cohen" in report_md
    per = run.report.per_annotator.set_index("annotator")
    assert per.loc["A", "clicks"] == 5 and per.loc["A", "matched"] == 3
    assert per.loc["B", "label_agreement"] == pytest.approx(1.0)  # 1 compared, agrees
    dropped = run.report.dropped.set_index("label")
    assert dropped.loc["eosinophil", "dropped"] == 1
    assert dropped.loc["fibroblast", "single_annotator_tile"] == 1


def test_without_segmenter_or_pixels_the_best_member_mask_is_kept(config) -> None:  # type: ignore[no-untyped-def]
    masks = _masks()
    nuclei, *_ = consensus_shard(config, masks, tiles=None, segment=None)
    assert (nuclei["polygon_source"] == "member").all()
    assert (nuclei["segmenter"] == "fake").all()
    _, _, _, missing = consensus_shard(config, masks, tiles=None, segment=_segment)
    assert missing == ["t1"]


def test_run_consensus_end_to_end_from_a_frame(config) -> None:  # type: ignore[no-untyped-def]
    run = run_consensus(config, masks=_masks(), read_tile=_read_tile)
    assert run.table.exists() and len(run.nuclei) == 3


def test_label_rule_dawid_skene_from_config(tmp_path: Path) -> None:
    init_workspace(tmp_path, load_config(tmp_path, require_file=False, environ={}))
    config = load_config(
        tmp_path, {"consensus": {"label_rule": "dawid-skene", "overlays": 0}}, environ={}
    )
    run = run_consensus(config, masks=_masks())
    assert (run.nuclei["label_rule"] == "dawid-skene").all()
    assert run.nuclei["label"].equals(run.nuclei["label_dawid_skene"])


def test_kappas_on_known_values() -> None:
    assert cohen_kappa(["a", "a", "b", "b"], ["a", "a", "b", "b"]) == pytest.approx(1.0)
    assert cohen_kappa(["a", "b"], ["b", "a"]) == pytest.approx(-1.0)
    # Fleiss' worked example (Wikipedia): 10 items, 14 raters, 5 categories -> 0.210.
    table = [
        [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
    ]  # fmt: skip
    ratings = [[str(c) for c, n in enumerate(row) for _ in range(n)] for row in table]
    assert fleiss_kappa(ratings) == pytest.approx(0.210, abs=1e-3)


def test_agreement_lists_annotators_with_zero_clicks() -> None:
    masks = _masks()
    ann = masks.assign(status="kept")
    nuclei = pd.DataFrame(
        dict(tile_id=["t1"], members=[[1, 2]], annotators=[["A", "B"]],
             member_labels=[["lymphocyte", "lymphocyte"]], label=["lymphocyte"], mean_iou=[0.9])
    )  # fmt: skip
    expected = pd.DataFrame({"tile_id": ["t1", "t1"], "annotator": ["A", "D"]})
    report = agreement_report(ann, nuclei, expected=expected)
    per = report.per_annotator.set_index("annotator")
    assert per.loc["D", "clicks"] == 0 and per.loc["D", "assigned_tiles"] == 1
    assert np.isnan(per.loc["D", "fraction_matched"])
    assert tile_feature_collection(nuclei.iloc[0:0].assign(polygon=[]))["features"] == []


def test_shards_then_merge_equal_one_run(config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from histocurate.consensus.shards import merge_shards, plan_shards, run_shard, shard_keys

    masks = _masks()
    config.consensus.shard_tiles = 1
    shards = plan_shards(config, masks)
    assert shards == [["t1"], ["t2"]]
    outcomes = [
        run_shard(config, tiles, key, masks=masks)
        for tiles, key in zip(shards, shard_keys(len(shards)), strict=True)
    ]
    merged = merge_shards(config, outcomes)
    whole = run_consensus(config, masks=masks)
    cols = ["consensus_id", "label", "n_annotators", "polygon"]
    assert merged.nuclei[cols].equals(whole.nuclei[cols])
    assert merged.report.single_annotator_tiles == ["t2"]


def test_cli_consensus(config, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from histocurate.cli.app import main

    monkeypatch.setattr("histocurate.consensus.stage.read_masks", lambda ws: _masks())
    code = main(["consensus", "-w", str(config.workspace), "--label-rule", "dawid-skene",
                 "--overlays", "0"])  # fmt: skip
    assert code == 0
    table = read_table(config.workspace / "consensus.parquet", CONSENSUS)
    assert (table["label_rule"] == "dawid-skene").all()
    assert main(["consensus", "-w", str(config.workspace), "--iou-threshold", "1.5"]) == 2
