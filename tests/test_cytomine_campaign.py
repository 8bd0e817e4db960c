"""Export (frozen pixels, assignments, idempotent re-runs), simulated annotation and
incremental import, with the real stages against the sandbox (current server profile)."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from data_schema.assignments import ASSIGNMENTS
from data_schema.points import POINTS
from histocurate.campaign import AnnotatedTiles
from histocurate.cytomine.assignments import draw_annotators
from histocurate.cytomine.client import connect
from histocurate.cytomine.images import ASSIGNMENT_KEY, IMAGE_CLASS, TILE_KEY, properties
from histocurate.cytomine.projects import project_info
from histocurate.cytomine.rest import SignedSession
from histocurate.cytomine.selected import read_selection
from histocurate.demo.pathologists import simulate_clicks
from histocurate.demo.profiles import DEFAULT_PROFILES, AnnotatorProfile
from histocurate.errors import UserInputError
from histocurate.io import read_table
from histocurate.labels import ANNOTATION_LABELS, cell_type
from tests.cytomine_support import (
    ANNOTATORS,
    FAST,
    bench,
    image_source,
    make_tiles,
    make_truth,
    sorted_clicks,
    unique,
    write_selection,
)


def test_export_freezes_uploads_and_reruns_add_nothing(sandbox, tmp_path, monkeypatch):
    b = bench(sandbox, tmp_path, monkeypatch, make_tiles(4))
    name = unique()
    first = b.export(name, k=2)
    assert first.exit_code == 0 and first.created
    assert [o.extra["image"] for o in first.outcomes] == ["uploaded"] * 4
    assert sorted(first.members_added) == ANNOTATORS
    again = b.export(name, k=2)
    assert not again.created and {o.status for o in again.outcomes} == {"skipped"}
    assert again.report().summary[0].startswith("4 tile(s) of LUAD: 0 uploaded")
    table = read_table(b.workspace.assignments, ASSIGNMENTS)
    assert len(table) == 8 and set(table.groupby("tile_id").size()) == {2}
    assert set(table.indication) == {"LUAD"} and set(table.slide_id) == {"s1"}
    assert set(table.tile_px) == {32} and set(table.tile_mpp) == {0.25}
    campaign = b.workspace.campaign(name)
    annotated = AnnotatedTiles.read(b.workspace.assignments, campaign)
    for tile in b.tiles.itertuples():
        path = campaign.image_path(tile.tile_id)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == annotated.sha256(tile.tile_id)
        np.testing.assert_array_equal(
            annotated.pixels(tile.tile_id), image_source(pd.Series(tile._asdict()))
        )
        with Image.open(path) as img:
            assert round(25400 / img.info["dpi"][0], 6) == 0.25
    with connect(sandbox.credentials(), FAST) as conn:
        info = project_info(conn, name)
        assert info.settings["hideUsersLayers"] and info.settings["isRestricted"]
        terms = conn.get(f"project/{info.id}/term.json")["collection"]
        assert sorted(t["name"] for t in terms) == sorted(
            cell_type(x).name for x in ANNOTATION_LABELS
        )
        images = conn.get(f"project/{info.id}/imageinstance.json")["collection"]
        assert {i["physicalSizeX"] for i in images} == {0.25} and {i["width"] for i in images} == {
            32
        }
        props = properties(conn, IMAGE_CLASS, images[0]["id"])
    tile = props[TILE_KEY]["value"]
    assigned = props[ASSIGNMENT_KEY]["value"].split(",")
    assert sorted(table[table.tile_id == tile].annotator) == sorted(assigned)
    db = sandbox.server.db
    with db.lock:  # one upload per tile, however many runs
        files = db._all("SELECT original_filename FROM uploaded_files")
    names = sorted(f[0] for f in files if f[0].startswith("s1_"))
    assert names == sorted(f"{t}.png" for t in b.tiles.tile_id)


def test_a_missing_frozen_image_is_remade_only_from_unchanged_pixels(
    sandbox, tmp_path, monkeypatch
):
    b = bench(sandbox, tmp_path, monkeypatch, make_tiles(3, slide="frz"))
    name = unique("frozen")
    assert b.export(name).exit_code == 0
    campaign = b.workspace.campaign(name)
    first, second, third = (campaign.image_path(t) for t in b.tiles.tile_id)
    kept = first.read_bytes()
    first.unlink()
    run = b.export(name)
    assert run.exit_code == 0 and run.outcomes[0].extra["frozen"] == "re-made"
    assert first.read_bytes() == kept

    def other_pixels(tile: pd.Series) -> np.ndarray:
        return 255 - image_source(tile)

    second.unlink()
    run = b.export(name, image_source=other_pixels)
    failed = {o.item: o.error for o in run.failed}
    assert (
        list(failed) == [b.tiles.tile_id[1]] and "gives other pixels" in failed[b.tiles.tile_id[1]]
    )
    assert run.exit_code == 2 and not second.exists()
    from data_schema.tiles import TILES
    from histocurate.io import write_partition

    write_partition(
        b.tiles, b.workspace.tiles, "frz", TILES, provenance={"slide": "frz", "scan": "2"}
    )  # re-scanned
    third.unlink()
    run = b.export(name)
    errors = {o.item: o.error or "" for o in run.failed}
    assert "retiled since the export" in errors[b.tiles.tile_id[2]]
    assert b.tiles.tile_id[0] not in errors  # still there: nothing to re-make


def test_draw_annotators_is_stable_and_k_sized():
    people = [f"p{i}" for i in range(9)]
    picks = [draw_annotators(f"t{i}", people, 3, 0) for i in range(200)]
    assert all(len(set(p)) == 3 for p in picks)
    assert picks == [draw_annotators(f"t{i}", people, 3, 0) for i in range(200)]
    counts = pd.Series([p for pick in picks for p in pick]).value_counts()
    assert counts.min() > 40  # every annotator gets a share
    assert draw_annotators("t", people, None, 0) == people


def test_selection_by_indication(tmp_path):
    luad, brca = make_tiles(2, slide="a"), make_tiles(3, slide="b")
    both = pd.concat([luad.assign(indication="LUAD"), brca.assign(indication="BRCA")])
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "sel.parquet"
    pq.write_table(pa.Table.from_pandas(both[["tile_id", "slide_id", "indication"]]), path)
    with pytest.raises(UserInputError, match=r"several indications.*BRCA, LUAD.*--indication"):
        read_selection(path)
    assert list(read_selection(path, "BRCA").tile_id) == list(brca.tile_id)
    with pytest.raises(UserInputError, match="no selection for indication 'COAD'"):
        read_selection(path, "COAD")
    pq.write_table(pa.table({"tile_id": ["x"]}), tmp_path / "bad.parquet")
    with pytest.raises(UserInputError, match="slide_id"):
        read_selection(tmp_path / "bad.parquet")
    assert list(read_selection(write_selection(tmp_path / "one.parquet", luad)).slide_id) == [
        "a",
        "a",
    ]


def test_simulated_clicks_follow_the_profile():
    truth = pd.DataFrame(
        {
            "x": np.linspace(5, 90, 40),
            "y": np.linspace(90, 5, 40),
            "label": ["eosinophil", "lymphocyte"] * 20,
        }
    )
    perfect = AnnotatorProfile(
        "p", miss_rate=0, jitter_um=0, confusion_rate=0, unknown_rate=0, false_click_rate=0
    )
    rng = np.random.default_rng(0)
    clicks = simulate_clicks(truth, perfect, mpp=0.25, width=96, height=96, rng=rng)
    assert np.allclose(clicks.x, truth.x, atol=1 / 512) and list(clicks.label) == list(truth.label)
    assert (clicks.x * 256 == np.round(clicks.x * 256)).all()
    skipper = AnnotatorProfile(
        "q", miss_rate=0, skip_rare_rate=1.0, unknown_rate=0, false_click_rate=0, confusion_rate=0
    )
    clicks = simulate_clicks(truth, skipper, mpp=0.25, width=96, height=96, rng=rng)
    assert set(clicks.label) == {"lymphocyte"}
    assert len(DEFAULT_PROFILES) == 9 and len({p.username for p in DEFAULT_PROFILES}) == 9


def test_round_trip_is_exact_and_reimport_writes_nothing(sandbox, tmp_path, monkeypatch):
    b = bench(sandbox, tmp_path, monkeypatch, make_tiles(3, slide="rt"))
    name = unique()
    b.export(name)
    truth = make_truth(b.tiles)
    profiles = [AnnotatorProfile(a) for a in ANNOTATORS]
    made = b.annotate(name, truth, profiles=profiles)
    again = b.annotate(name, truth, profiles=profiles)
    assert sum(again.posted.values()) == 0  # resumable: nothing posted twice
    first = b.import_(name)
    assert first.written and first.totals["new"] == len(made.clicks) > 0
    points = read_table(b.workspace.points, POINTS)
    pd.testing.assert_frame_equal(sorted_clicks(points), sorted_clicks(made.clicks))
    assert set(points.project) == {name} and points.assigned.all() and not points.reviewed.any()
    assert (points.labelled_by == points.annotator).all()
    mtime = b.workspace.points.stat().st_mtime_ns
    second = b.import_(name)
    assert not second.written and second.totals["unchanged"] == len(made.clicks)
    assert {o.status for o in second.outcomes} == {"skipped"}
    assert b.workspace.points.stat().st_mtime_ns == mtime


def test_a_tile_in_two_projects_keeps_both_projects_clicks(sandbox, tmp_path, monkeypatch):
    b = bench(sandbox, tmp_path, monkeypatch, make_tiles(2, slide="two"))
    first, second = unique("first"), unique("second")
    b.export(first)
    b.export(second)
    made_first = b.annotate(first)
    made_second = b.annotate(second, seed=1)
    b.import_(first)
    b.import_(second)
    points = read_table(b.workspace.points, POINTS)
    assert (points.project == first).sum() == len(made_first.clicks) > 0
    assert (points.project == second).sum() == len(made_second.clicks) > 0
    b.import_(first)  # re-importing one project leaves the other's rows alone
    again = read_table(b.workspace.points, POINTS)
    pd.testing.assert_frame_equal(
        again.sort_values("annotation_id").reset_index(drop=True),
        points.sort_values("annotation_id").reset_index(drop=True),
    )


def test_edits_relabels_deletions_and_rejects(sandbox, tmp_path, monkeypatch):
    b = bench(sandbox, tmp_path, monkeypatch, make_tiles(2, slide="edit", px=40))
    name = unique()
    b.export(name)
    alice = SignedSession(sandbox.host, *sandbox.keys["alice"], policy=FAST)
    admin = SignedSession(sandbox.host, *sandbox.keys[sandbox.admin], policy=FAST)
    assigned = read_table(b.workspace.assignments, ASSIGNMENTS)
    img = int(assigned[assigned.tile_id == b.tiles.tile_id[0]].image_id.iloc[0])
    with connect(sandbox.credentials(), FAST) as conn:
        info = project_info(conn, name)
    lym, eos = info.term_by_label["lymphocyte"], info.term_by_label["eosinophil"]

    def post(location, terms, image=img):
        body = {"location": location, "image": image, "project": info.id, "term": terms}
        return alice.request("POST", "/api/annotation.json", body=body)["annotation"]["id"]

    centre = post("POINT (10.5 29.5)", [lym])  # pixel (col 10, row 10) centre, height 40
    edited, relabelled, deleted = (post(f"POINT ({x} 20)", [lym]) for x in (1, 2, 3))
    post("POLYGON ((1 1, 5 1, 5 5, 1 1))", [lym])
    post("POINT (4 4)", [])
    post("POINT (6 6)", [lym, eos])
    post("POINT (50 6)", [lym])  # x > width
    artefact = {"name": "Artefact", "ontology": info.ontology_id, "color": "#111111"}
    extra = admin.request("POST", "/api/term.json", body=artefact)
    post("POINT (7 7)", [extra["term"]["id"]])
    first = b.import_(name)
    points = read_table(b.workspace.points, POINTS).set_index("annotation_id")
    row = points.loc[centre]
    assert (row.x, row.y, row.label, row.annotator) == (10.5, 10.5, "lymphocyte", "alice")
    assert first.rejected == {
        "not_a_point": 1,
        "no_term": 1,
        "several_terms": 1,
        "outside_image": 1,
        "unknown_term": 1,
    }
    assert first.annotations == first.points + sum(first.rejected.values())

    alice.request("PUT", f"/api/annotation/{edited}.json", body={"location": "POINT (1 21)"})
    alice.request("POST", f"/api/annotation/{relabelled}/term/{eos}/clearBefore.json", body={})
    alice.request("DELETE", f"/api/annotation/{deleted}.json")
    second = b.import_(name)
    totals = second.totals
    assert (totals["new"], totals["changed"], totals["deleted"]) == (0, 2, 1)
    assert second.deleted == 1
    points = read_table(b.workspace.points, POINTS).set_index("annotation_id")
    assert points.loc[edited, "y"] == 19.0 and points.loc[relabelled, "label"] == "eosinophil"
    assert deleted not in points.index
