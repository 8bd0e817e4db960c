"""Independent annotation: project settings stored and honoured by the server (each reader
sees only their own layer, edits only their own annotations), and per-reader isolation
(one project per reader holding only their tiles, the same uploads attached)."""

from __future__ import annotations

import pandas as pd
import pytest

from data_schema.assignments import ASSIGNMENTS
from data_schema.points import POINTS
from histocurate.cytomine.client import connect
from histocurate.cytomine.projects import INDEPENDENT, ensure_ontology, project_info
from histocurate.cytomine.rest import SignedSession
from histocurate.cytomine.retry import CytomineCallError
from histocurate.io import read_table
from tests.cytomine_support import (
    ANNOTATORS,
    FAST,
    bench,
    make_tiles,
    sorted_clicks,
    unique,
)


def test_readers_see_and_edit_only_their_own_layer(sandbox, tmp_path, monkeypatch):
    b = bench(sandbox, tmp_path, monkeypatch, make_tiles(1, slide="layers"))
    name = unique("layers")
    b.export(name)
    alice, bob = (
        SignedSession(sandbox.host, *sandbox.keys[u], policy=FAST) for u in ("alice", "bob")
    )
    with connect(sandbox.credentials(), FAST) as conn:
        info = project_info(conn, name)
        layers = conn.get(f"project/{info.id}/userlayer.json")["collection"]
    assert {u["username"] for u in layers} >= {"alice", "bob", sandbox.admin}  # a manager
    seen = alice.collection(f"/api/project/{info.id}/userlayer.json")
    assert [u["username"] for u in seen] == ["alice"]
    image = int(read_table(b.workspace.assignments, ASSIGNMENTS).image_id.iloc[0])
    body = {
        "location": "POINT (4 4)",
        "image": image,
        "project": info.id,
        "term": [info.term_by_label["lymphocyte"]],
    }
    aid = alice.request("POST", "/api/annotation.json", body=body)["annotation"]["id"]
    eos = info.term_by_label["eosinophil"]
    for attempt in (
        lambda: bob.request("DELETE", f"/api/annotation/{aid}.json"),
        lambda: bob.request("PUT", f"/api/annotation/{aid}.json", body={"location": "POINT (1 1)"}),
        lambda: bob.request("POST", f"/api/annotation/{aid}/term/{eos}.json", body={}),
    ):
        with pytest.raises(CytomineCallError) as refused:
            attempt()
        assert refused.value.status == 403 and "restricted" in refused.value.detail
    # the API still lets a member list every annotation of the project (as the real one does)
    listed = bob.collection("/api/annotation.json", project=info.id, showWKT="true")
    assert [a["id"] for a in listed] == [aid]


def test_per_reader_projects_hold_only_their_readers_tiles(sandbox, tmp_path, monkeypatch):
    tiles = make_tiles(6, slide="iso")
    b = bench(sandbox, tmp_path, monkeypatch, tiles)
    name = unique("iso")
    run = b.export(name, k=2, isolation="per-reader")
    assert run.exit_code == 0 and sorted(run.reader_projects) == ANNOTATORS
    assert run.members_added == ANNOTATORS
    assert "per-reader isolation: 3 reader project(s)" in " ".join(run.report().summary)
    table = read_table(b.workspace.assignments, ASSIGNMENTS)
    db = sandbox.server.db
    with db.lock:
        uploads = db._all(
            "SELECT original_filename FROM uploaded_files WHERE original_filename LIKE 'iso_%'"
        )
        abstract = db._one(
            "SELECT COUNT(*) FROM abstract_images a JOIN uploaded_files f ON "
            "f.id = a.uploaded_file_id WHERE f.original_filename LIKE 'iso_%'"
        )[0]
    assert len(uploads) == abstract == 6  # each tile uploaded once, attached to its readers
    with connect(sandbox.credentials(), FAST) as conn:
        main = project_info(conn, name)
        assert {u["username"] for u in conn.get(f"project/{main.id}/user.json")["collection"]} == {
            sandbox.admin
        }  # no reader in the main project
    for reader, pid in run.reader_projects.items():
        mine = table[table.annotator == reader]
        assert set(mine.project_id) == {pid}
        session = SignedSession(sandbox.host, *sandbox.keys[reader], policy=FAST)
        visible = {p["name"] for p in session.collection("/api/project.json")}
        assert f"{name} / {reader}" in visible and name not in visible
        images = session.collection(f"/api/project/{pid}/imageinstance.json")
        assert sorted(i["id"] for i in images) == sorted(mine.image_id)
    assert (
        b.export(name, k=2, isolation="per-reader")
        .report()
        .summary[0]
        .startswith("6 tile(s) of LUAD: 0 uploaded")
    )
    made = b.annotate(name)
    imported = b.import_(name)
    assert imported.rejected == {} and len(imported.project_ids) == 4
    points = read_table(b.workspace.points, POINTS)
    assert set(points.project) == {name}
    pd.testing.assert_frame_equal(sorted_clicks(points), sorted_clicks(made.clicks))
    pairs = set(zip(points.tile_id, points.annotator, strict=True))
    assert pairs <= set(zip(table.tile_id, table.annotator, strict=True))


def test_an_existing_project_without_the_settings_gets_them(sandbox, tmp_path, monkeypatch):
    b = bench(sandbox, tmp_path, monkeypatch, make_tiles(1, slide="older"))
    name = unique("older")
    with connect(sandbox.credentials(), FAST) as conn:
        oid = ensure_ontology(conn, f"histocurate cell types ({name})")
    admin = SignedSession(sandbox.host, *sandbox.keys[sandbox.admin], policy=FAST)
    made = admin.request("POST", "/api/project.json", body={"name": name, "ontology": oid})
    made = made["project"]  # made by hand (or by an older histocurate): every layer shown
    assert not any(made[k] for k in INDEPENDENT)
    run = b.export(name)
    assert run.exit_code == 0 and not run.created
    now = admin.get(f"/api/project/{made['id']}.json")
    assert {k: now[k] for k in INDEPENDENT} == dict(INDEPENDENT) and now["mode"] == "RESTRICTED"
    alice = SignedSession(sandbox.host, *sandbox.keys["alice"], policy=FAST)
    seen = alice.collection(f"/api/project/{made['id']}/userlayer.json")
    assert [u["username"] for u in seen] == ["alice"]  # honoured, not only stored
    assert b.export(name).exit_code == 0  # and a re-run changes nothing
    assert admin.get(f"/api/project/{made['id']}.json")["updated"] == now["updated"]
