"""Export, simulated annotation and incremental import against the sandbox server."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from cytomine.models import ImageInstanceCollection, Ontology, Project, Term, TermCollection
from PIL import Image

from data_schema.assignments import ASSIGNMENTS
from data_schema.points import POINTS
from histocurate.cytomine import api
from histocurate.cytomine.client import connect
from histocurate.cytomine.export import (
    ExportIncompleteError,
    draw_annotators,
    export_campaign,
    read_selected_tile_ids,
    write_png,
)
from histocurate.cytomine.importer import import_annotations
from histocurate.cytomine.profiles import DEFAULT_PROFILES, AnnotatorProfile
from histocurate.cytomine.rest import SignedSession
from histocurate.cytomine.simulate import annotate_project, simulate_clicks
from histocurate.io import read_table
from histocurate.labels import ANNOTATION_LABELS, cell_type
from tests.test_cytomine_support import (  # noqa: F401
    ANNOTATORS,
    FAST,
    image_source,
    make_tiles,
    make_truth,
    sandbox,
    sorted_clicks,
    unique,
    write_selection,
)


def _export(sandbox, tmp_path, tiles, *, project, k=None, **kw):  # noqa: F811
    with connect(sandbox.credentials(), FAST) as conn:
        return export_campaign(
            conn, project=project, tile_ids=list(tiles["tile_id"]), tiles=tiles,
            annotators=ANNOTATORS, k=k, assignments_path=tmp_path / "assignments.parquet",
            image_source=kw.pop("source", image_source), **kw,
        )  # fmt: skip


def _import(sandbox, tmp_path, project):  # noqa: F811
    with connect(sandbox.credentials(), FAST) as conn:
        return import_annotations(
            conn, project=project, points_path=tmp_path / "points.parquet",
            rejects_path=tmp_path / "rejects.parquet",
            assignments_path=tmp_path / "assignments.parquet",
        )  # fmt: skip


def test_export_is_complete_and_rerun_adds_nothing(sandbox, tmp_path):  # noqa: F811
    tiles, name = make_tiles(4), unique()
    first = _export(sandbox, tmp_path, tiles, project=name, k=2)
    assert first.project_created and len(first.uploaded) == 4
    assert sorted(first.members_added) == ANNOTATORS
    again = _export(sandbox, tmp_path, tiles, project=name, k=2)
    assert not again.project_created and again.uploaded == [] and len(again.already_there) == 4
    with connect(sandbox.credentials(), FAST) as conn:
        info = api.project_info(conn, name)
        terms = TermCollection(filters={"project": info.id}).fetch()
        assert sorted(t.name for t in terms) == sorted(cell_type(x).name for x in ANNOTATION_LABELS)
        assert {t.name: t.color for t in terms}["Eosinophil"] == cell_type("eosinophil").color
        images = ImageInstanceCollection(filters={"project": info.id}).fetch()
        assert sorted(i.instanceFilename for i in images) == sorted(
            f"{t}.png" for t in tiles.tile_id
        )
        assert {i.physicalSizeX for i in images} == {0.25} and {i.width for i in images} == {32}
        props = api.image_properties(conn, images[0])
        assigned = props[api.ASSIGNMENT_KEY].split(",")
    table = read_table(tmp_path / "assignments.parquet", ASSIGNMENTS)
    assert len(table) == 8 and set(table.groupby("tile_id").size()) == {2}
    tile = props[api.TILE_KEY]
    assert sorted(table[table.tile_id == tile].annotator) == sorted(assigned)


def test_draw_annotators_is_stable_and_k_sized():
    people = [f"p{i}" for i in range(9)]
    picks = [draw_annotators(f"t{i}", people, 3, 0) for i in range(200)]
    assert all(len(set(p)) == 3 for p in picks)
    assert picks == [draw_annotators(f"t{i}", people, 3, 0) for i in range(200)]
    counts = pd.Series([p for pick in picks for p in pick]).value_counts()
    assert counts.min() > 40  # every annotator gets a share
    assert draw_annotators("t", people, None, 0) == people


def test_png_carries_the_resolution(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    with Image.open(write_png(rgb, tmp_path / "a.png", mpp=0.5)) as img:
        assert round(25400 / img.info["dpi"][0], 6) == 0.5


def test_selection_reader(tmp_path):
    path = write_selection(tmp_path / "sel.parquet", ["a", "b", "a"])
    assert read_selected_tile_ids(path) == ["a", "b"]
    with pytest.raises(Exception, match="tile_id"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"x": [1]}), tmp_path / "bad.parquet")
        read_selected_tile_ids(tmp_path / "bad.parquet")


def test_bad_inputs(sandbox, tmp_path):  # noqa: F811
    tiles = make_tiles(3, slide="bad")
    with connect(sandbox.credentials(), FAST) as conn:
        with pytest.raises(api.UnknownUserError, match="nobody"):
            export_campaign(conn, project=unique(), tile_ids=list(tiles.tile_id), tiles=tiles,
                            annotators=["alice", "nobody"], image_source=image_source)  # fmt: skip
        other = Ontology(unique("other-onto")).save()
        Term("Tumour", other.id, "#000000").save()
        taken = unique()
        Project(taken, other.id).save()
    with pytest.raises(api.ProjectOntologyError, match="lacks"):
        _export(sandbox, tmp_path, tiles, project=taken)

    def broken(tile):
        if tile["tile_id"] == tiles.tile_id[1]:
            return np.zeros((4, 4), np.uint8)  # not RGB: the PNG cannot be made
        return image_source(tile)

    name = unique()
    with pytest.raises(ExportIncompleteError, match=tiles.tile_id[1]):
        _export(sandbox, tmp_path, tiles, project=name, source=broken)
    done = read_table(tmp_path / "assignments.parquet", ASSIGNMENTS)
    assert set(done[done.project == name].tile_id) == {tiles.tile_id[0], tiles.tile_id[2]}


def test_server_rejects_a_damaged_png(sandbox, tmp_path):  # noqa: F811
    bad = tmp_path / "damaged.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with connect(sandbox.credentials(), FAST) as conn:
        info, _ = api.ensure_project(conn, unique())
        with pytest.raises(api.CytomineCallError) as failure:
            api.upload_image(conn, bad, storage_id=api.own_storage(conn), project_id=info.id)
    assert failure.value.status == 400 and "damaged.png" in str(failure.value)


def test_simulated_clicks_follow_the_profile():
    truth = pd.DataFrame({"x": np.linspace(5, 90, 40), "y": np.linspace(90, 5, 40),
                          "label": ["eosinophil", "lymphocyte"] * 20})  # fmt: skip
    perfect = AnnotatorProfile("p", miss_rate=0, jitter_um=0, confusion_rate=0, unknown_rate=0,
                               false_click_rate=0)  # fmt: skip
    rng = np.random.default_rng(0)
    clicks = simulate_clicks(truth, perfect, mpp=0.25, width=96, height=96, rng=rng)
    assert np.allclose(clicks.x, truth.x, atol=1 / 512) and list(clicks.label) == list(truth.label)
    assert (clicks.x * 256 == np.round(clicks.x * 256)).all()
    skipper = AnnotatorProfile("q", miss_rate=0, skip_rare_rate=1.0, unknown_rate=0,
                               false_click_rate=0, confusion_rate=0)  # fmt: skip
    clicks = simulate_clicks(truth, skipper, mpp=0.25, width=96, height=96, rng=rng)
    assert set(clicks.label) == {"lymphocyte"}
    assert len(DEFAULT_PROFILES) == 9 and len({p.username for p in DEFAULT_PROFILES}) == 9


def test_round_trip_is_exact_and_reimport_writes_nothing(sandbox, tmp_path):  # noqa: F811
    tiles, name = make_tiles(3), unique()
    _export(sandbox, tmp_path, tiles, project=name)
    truth = make_truth(tiles)
    profiles = [AnnotatorProfile(a) for a in ANNOTATORS]
    made = annotate_project(sandbox.host, sandbox.keys, project=name, truth=truth,
                            profiles=profiles, policy=FAST)  # fmt: skip
    again = annotate_project(sandbox.host, sandbox.keys, project=name, truth=truth,
                             profiles=profiles, policy=FAST)  # fmt: skip
    assert sum(again.posted.values()) == 0  # resumable: nothing posted twice
    first = _import(sandbox, tmp_path, name)
    assert first.written and first.totals["new"] == len(made.clicks) > 0
    pd.testing.assert_frame_equal(sorted_clicks(first.points), sorted_clicks(made.clicks))
    mtime = (tmp_path / "points.parquet").stat().st_mtime_ns
    second = _import(sandbox, tmp_path, name)
    assert not second.written and second.totals["unchanged"] == len(made.clicks)
    assert (tmp_path / "points.parquet").stat().st_mtime_ns == mtime


def test_edits_relabels_deletions_and_rejects(sandbox, tmp_path):  # noqa: F811
    tiles, name = make_tiles(2, slide="edit", px=40), unique()
    _export(sandbox, tmp_path, tiles, project=name)
    alice = SignedSession(sandbox.host, *sandbox.keys["alice"], policy=FAST)
    admin = SignedSession(sandbox.host, *sandbox.keys[sandbox.admin], policy=FAST)
    with connect(sandbox.credentials(), FAST) as conn:
        info = api.project_info(conn, name)
        images = {n.removesuffix(".png"): i for n, i in api.project_images(conn, info.id).items()}
    img = int(images[tiles.tile_id[0]].id)
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
    first = _import(sandbox, tmp_path, name)
    row = first.points.set_index("annotation_id").loc[centre]
    assert (row.x, row.y, row.label, row.annotator) == (10.5, 10.5, "lymphocyte", "alice")
    assert first.reject_reasons == {"not_a_point": 1, "no_term": 1, "several_terms": 1,
                                    "outside_image": 1, "unknown_term": 1}  # fmt: skip

    alice.request("PUT", f"/api/annotation/{edited}.json", body={"location": "POINT (1 21)"})
    alice.request("POST", f"/api/annotation/{relabelled}/term/{eos}/clearBefore.json", body={})
    alice.request("DELETE", f"/api/annotation/{deleted}.json")
    second = _import(sandbox, tmp_path, name)
    totals = second.totals
    assert (totals["new"], totals["changed"], totals["deleted"]) == (0, 2, 1)
    points = second.points.set_index("annotation_id")
    assert points.loc[edited, "y"] == 19.0 and points.loc[relabelled, "label"] == "eosinophil"
    assert deleted not in points.index
    stored = read_table(tmp_path / "points.parquet", POINTS)
    assert deleted not in set(stored.annotation_id)


def test_unknown_image_is_rejected(sandbox, tmp_path):  # noqa: F811
    tiles, name = make_tiles(1, slide="known"), unique()
    _export(sandbox, tmp_path, tiles, project=name)
    stray = tmp_path / "stray.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(stray)
    with connect(sandbox.credentials(), FAST) as conn:
        info = api.project_info(conn, name)
        image = api.upload_image(conn, stray, storage_id=api.own_storage(conn), project_id=info.id)
    body = {
        "location": "POINT (3 3)",
        "image": int(image.id),
        "term": [info.term_by_label["lymphocyte"]],
    }
    SignedSession(sandbox.host, *sandbox.keys["bob"]).request(
        "POST", "/api/annotation.json", body=body
    )
    result = _import(sandbox, tmp_path, name)
    assert result.reject_reasons == {"unknown_image": 1} and len(result.points) == 0
