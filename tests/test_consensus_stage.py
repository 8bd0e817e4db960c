"""Consensus stage: table, re-segmentation, GeoJSON, overlays, agreement report."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely
from shapely.geometry import Point

from data_schema import CONSENSUS, CONSENSUS_FATES, POINTS
from histocurate.config import load_config
from histocurate.consensus.agreement import agreement_report, cohen_kappa, fleiss_kappa
from histocurate.consensus.export import UNDETERMINED_NAME, tile_feature_collection
from histocurate.consensus.stage import run_consensus
from histocurate.errors import UserInputError
from histocurate.io import read_table
from histocurate.workspace import Workspace, init_workspace
from nuclick.postprocess import SegmentationResult
from tests.campaigns import campaign_from_masks, write_points


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
                dict(
                    annotation_id=len(rows) + 1,
                    tile_id=tile,
                    annotator=annotator,
                    x=x,
                    y=y,
                    label=label,
                    polygon=shapely.to_wkb(Point(x, y).buffer(9, 8)),
                    segmenter="watershed",
                )
            )
    return pd.DataFrame(rows)


PROJECT = "p1"


@dataclass
class CirclesSegmenter:
    """A stand-in segmenter: a disc of radius 7 at every point (known outlines)."""

    name: str = "nuclick"
    mpp: float = 0.25

    def segment_many(self, images: list[np.ndarray], points: list[np.ndarray]) -> list[object]:
        out = []
        for image, pts in zip(images, points, strict=True):
            polys = [Point(x, y).buffer(7, 8) for x, y in pts]
            n = len(pts)
            inst = np.zeros(image.shape[:2], np.int32)
            out.append(
                SegmentationResult(inst, np.arange(1, n + 1), polys, np.zeros(n, bool), "nuclick")
            )
        return out


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    init_workspace(tmp_path, load_config(tmp_path, require_file=False, environ={}))
    campaign_from_masks(tmp_path, PROJECT, _masks())
    monkeypatch.setattr("histocurate.consensus.stage.segmenter_for", lambda c: CirclesSegmenter())
    return load_config(tmp_path, {"consensus": {"overlays": 5}}, environ={})


def test_stage_writes_table_geojson_overlays_and_report(config) -> None:  # type: ignore[no-untyped-def]
    run = run_consensus(config)
    assert run.tiles_without_pixels == [] and run.exit_code == 0
    campaign = Workspace.of(config).campaign(PROJECT)
    table = read_table(run.table, CONSENSUS)
    assert run.table == campaign.consensus and len(table) == 3
    assert set(table["project"]) == {PROJECT}
    assert (table["polygon_source"] == "resegmented").all()
    assert (table["segmenter"] == "nuclick").all()
    assert table["area"].iloc[0] == pytest.approx(shapely.from_wkb(table["polygon"][0]).area)
    by_x = table.sort_values(["y", "x"]).reset_index(drop=True)
    assert by_x["label"][0] == "lymphocyte" and by_x["label"][1:].isna().all()
    assert [list(v) for v in by_x["labels"]] == [
        ["lymphocyte"],
        ["lymphocyte", "plasmocyte"],
        ["unknown"],
    ]

    geojson = json.loads((campaign.qupath / "t1.geojson").read_text())
    assert geojson["type"] == "FeatureCollection" and len(geojson["features"]) == 3
    classes = sorted(f["properties"]["classification"]["name"] for f in geojson["features"])
    assert classes == ["Cell with unknown type", "Lymphocyte", UNDETERMINED_NAME]
    feature = geojson["features"][0]
    assert feature["geometry"]["type"] == "Polygon"
    assert feature["properties"]["objectType"] == "detection"
    assert len(feature["properties"]["classification"]["color"]) == 3

    assert sorted(p.name for p in run.overlays) == ["t1.png", "t2.png"]
    report_md = (campaign.reports("consensus") / "agreement.md").read_text()
    assert "t2" in report_md and "Cohen" in report_md
    assert run.agreement is not None
    per = run.agreement.per_annotator.set_index("annotator")
    assert per.loc["A", "clicks"] == 5 and per.loc["A", "matched"] == 3
    assert per.loc["B", "label_agreement"] == pytest.approx(1.0)  # 1 compared, agrees
    dropped = run.agreement.dropped.set_index("label")
    assert dropped.loc["eosinophil", "dropped"] == 1
    assert dropped.loc["fibroblast", "single_annotator_tile"] == 1
    fates = read_table(campaign.consensus_fates, CONSENSUS_FATES)
    assert len(fates) == len(_masks()) and set(fates["project"]) == {PROJECT}


def test_a_second_run_with_nothing_new_writes_nothing(config) -> None:  # type: ignore[no-untyped-def]
    first = run_consensus(config)
    before = first.table.stat().st_mtime_ns, first.table.read_bytes()
    again = run_consensus(config)
    assert again.up_to_date and "nothing written" in again.report().summary[0]
    assert (again.table.stat().st_mtime_ns, again.table.read_bytes()) == before
    # another label rule is another consensus: redone
    other = load_config(config.workspace, {"consensus": {"label_rule": "dawid-skene"}}, environ={})
    assert not run_consensus(other).up_to_date


def test_masks_older_than_the_clicks_are_refused(config) -> None:  # type: ignore[no-untyped-def]
    points = read_table(Workspace.of(config).points, POINTS)
    moved = points.assign(x=points["x"] + (points["annotation_id"] == 1) * 3.0)
    write_points(config.workspace, PROJECT, moved.drop(columns="project"))
    with pytest.raises(UserInputError, match="histocurate segment --project p1"):
        run_consensus(config)


def test_without_resegmentation_the_best_member_mask_is_kept(tmp_path: Path) -> None:
    init_workspace(tmp_path, load_config(tmp_path, require_file=False, environ={}))
    campaign_from_masks(tmp_path, PROJECT, _masks())
    config = load_config(tmp_path, {"consensus": {"resegment": False, "overlays": 0}}, environ={})
    nuclei = run_consensus(config).nuclei
    assert (nuclei["polygon_source"] == "member").all()
    assert (nuclei["segmenter"] == "watershed").all()  # the members' segmenter (masks: 'x')


def test_label_rule_dawid_skene_from_config(config) -> None:  # type: ignore[no-untyped-def]
    ds = load_config(
        config.workspace, {"consensus": {"label_rule": "dawid-skene", "overlays": 0}}, environ={}
    )
    run = run_consensus(ds)
    assert (run.nuclei["label_rule"] == "dawid-skene").all()
    assert run.nuclei["label"].equals(run.nuclei["label_dawid_skene"])


def test_kappas_on_known_values() -> None:
    assert cohen_kappa(["a", "a", "b", "b"], ["a", "a", "b", "b"]) == pytest.approx(1.0)
    assert cohen_kappa(["a", "b"], ["b", "a"]) == pytest.approx(-1.0)
    # Fleiss' worked example (Wikipedia): 10 items, 14 raters, 5 categories -> 0.210.
    table = [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
    ratings = [[str(c) for c, n in enumerate(row) for _ in range(n)] for row in table]
    assert fleiss_kappa(ratings) == pytest.approx(0.210, abs=1e-3)


def test_agreement_lists_annotators_with_zero_clicks() -> None:
    masks = _masks()
    ann = masks.assign(status="kept")
    nuclei = pd.DataFrame(
        dict(
            tile_id=["t1"],
            members=[[1, 2]],
            annotators=[["A", "B"]],
            member_labels=[["lymphocyte", "lymphocyte"]],
            label=["lymphocyte"],
            mean_iou=[0.9],
        )
    )
    expected = pd.DataFrame({"tile_id": ["t1", "t1"], "annotator": ["A", "D"]})
    report = agreement_report(ann, nuclei, expected=expected)
    per = report.per_annotator.set_index("annotator")
    assert per.loc["D", "clicks"] == 0 and per.loc["D", "assigned_tiles"] == 1
    assert np.isnan(per.loc["D", "fraction_matched"])
    assert tile_feature_collection(nuclei.iloc[0:0].assign(polygon=[]))["features"] == []


def test_shards_equal_one_run(config) -> None:  # type: ignore[no-untyped-def]
    one = run_consensus(config, force=True)
    config.consensus.shard_tiles = 1
    two = run_consensus(config, force=True)
    assert [o.item for o in two.outcomes] == ["shard-0000", "shard-0001"]
    cols = ["consensus_id", "label", "n_annotators", "polygon"]
    assert two.nuclei[cols].equals(one.nuclei[cols])
    assert two.agreement is not None and two.agreement.single_annotator_tiles == ["t2"]


def test_cli_consensus(config) -> None:  # type: ignore[no-untyped-def]
    from histocurate.cli.app import main

    code = main(
        ["consensus", "-w", str(config.workspace), "--label-rule", "dawid-skene", "--overlays", "0"]
    )
    assert code == 0
    table = read_table(Workspace.of(config).campaign(PROJECT).consensus, CONSENSUS)
    assert (table["label_rule"] == "dawid-skene").all()
    assert main(["consensus", "-w", str(config.workspace), "--iou-threshold", "1.5"]) == 2
