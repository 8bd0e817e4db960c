"""Import loses nothing silently: the assignment is enforced (not_assigned), blind mode and
duplicate images are read through the tile property, a relabel by another user is resolved
by who gave which term, reviewed annotations are taken on request, polygons as centroids on
request; every annotation is a point or a reject and the totals add up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import pytest

from data_schema.assignments import ASSIGNMENTS
from data_schema.import_rejects import IMPORT_REJECTS
from data_schema.points import POINTS
from histocurate.cytomine.client import connect
from histocurate.cytomine.projects import ProjectInfo, project_info
from histocurate.cytomine.rest import SignedSession
from histocurate.cytomine.upload import post_upload, wait_deployed
from histocurate.io import read_table
from tests.cytomine_support import (
    ANNOTATORS,
    FAST,
    Bench,
    bench,
    make_tiles,
    sorted_clicks,
    unique,
)


@dataclass
class Scene:
    """An exported campaign (one reader per tile) and a way to click as anyone."""

    b: Bench
    name: str
    info: ProjectInfo
    assigned: pd.DataFrame  # tile_id, annotator, image_id

    def session(self, user: str) -> SignedSession:
        return SignedSession(self.b.sandbox.host, *self.b.sandbox.keys[user], policy=FAST)

    def reader(self, tile: int) -> str:
        return str(self.assigned.annotator.iloc[tile])

    def other(self, tile: int) -> str:
        return next(a for a in ANNOTATORS if a != self.reader(tile))

    def image(self, tile: int) -> int:
        return int(self.assigned.image_id.iloc[tile])

    def click(self, user: str, tile: int, location: str, label: str = "lymphocyte") -> int:
        body = {"location": location, "image": self.image(tile), "project": self.info.id,
                "term": [self.info.term_by_label[label]]}  # fmt: skip
        return int(self.session(user).request("POST", "/api/annotation.json",
                                              body=body)["annotation"]["id"])  # fmt: skip

    def import_(self, **kw: Any) -> Any:
        run = self.b.import_(self.name, **kw)
        assert run.annotations == run.points + sum(run.rejected.values())  # nothing unaccounted
        return run

    def points(self) -> pd.DataFrame:
        table = read_table(self.b.workspace.points, POINTS)
        return table[table.project == self.name].set_index("annotation_id")

    def rejects(self) -> pd.DataFrame:
        table = read_table(self.b.workspace.import_rejects, IMPORT_REJECTS)
        return table[table.project == self.name].set_index("annotation_id")


@pytest.fixture
def scene(sandbox, tmp_path, monkeypatch) -> Scene:
    name = unique("import")
    b = bench(sandbox, tmp_path, monkeypatch, make_tiles(3, slide=name.replace("-", "")))
    assert b.export(name, k=1).exit_code == 0
    table = read_table(b.workspace.assignments, ASSIGNMENTS)
    with connect(sandbox.credentials(), FAST) as conn:
        info = project_info(conn, name)
    return Scene(b, name, info, table[table.project == name].reset_index(drop=True))


def test_points_of_unassigned_users_and_of_the_manager_are_set_aside(scene):
    mine = scene.click(scene.reader(0), 0, "POINT (5 5)")
    theirs = scene.click(scene.other(0), 0, "POINT (6 6)")
    manager = scene.click(scene.b.sandbox.admin, 0, "POINT (7 7)")
    run = scene.import_()
    assert run.rejected == {"not_assigned": 2} and run.points == 1
    assert list(scene.points().index) == [mine]
    assert set(scene.rejects().index) == {theirs, manager}
    kept = scene.import_(keep_unassigned=True)
    assert kept.rejected == {} and kept.points == 3
    points = scene.points()
    assert points.loc[mine, "assigned"] and not points.loc[theirs, "assigned"]
    assert not points.loc[manager, "assigned"]


def test_blind_mode_and_a_duplicate_image_are_read_through_the_tile_property(scene):
    admin = scene.session(scene.b.sandbox.admin)
    project = admin.get(f"/api/project/{scene.info.id}.json")
    admin.request("PUT", f"/api/project/{scene.info.id}.json", body={**project, "blindMode": True})
    images = admin.collection(f"/api/project/{scene.info.id}/imageinstance.json")
    assert all(not str(i["instanceFilename"]).endswith(".png") for i in images)  # blinded
    made = scene.b.annotate(scene.name)
    with connect(scene.b.sandbox.credentials(), FAST) as conn:  # the same tile uploaded again
        path = scene.b.workspace.campaign(scene.name).image_path(scene.assigned.tile_id[0])
        from histocurate.cytomine.images import own_storage

        params = {"storage": own_storage(conn), "projects": scene.info.id, "sync": "false"}
        base = wait_deployed(conn, post_upload(conn, path, params), path.name)
    project = admin.get(f"/api/project/{scene.info.id}.json")
    admin.request("PUT", f"/api/project/{scene.info.id}.json", body={**project, "blindMode": False})
    twin = next(i for i in admin.collection(f"/api/project/{scene.info.id}/imageinstance.json")
                if i["baseImage"] == base)  # fmt: skip
    body = {"location": "POINT (3 3)", "image": twin["id"], "project": scene.info.id,
            "term": [scene.info.term_by_label["eosinophil"]]}  # fmt: skip
    extra = scene.session(scene.reader(0)).request("POST", "/api/annotation.json", body=body)
    run = scene.import_()
    assert run.rejected == {} and run.points == len(made.clicks) + 1
    point = scene.points().loc[extra["annotation"]["id"]]
    assert point.tile_id == scene.assigned.tile_id[0] and point.image_id == twin["id"]
    assert any("2 images" in note for note in run.notes)


def test_an_import_and_a_re_export_with_blind_mode_left_on(scene):
    admin = scene.session(scene.b.sandbox.admin)
    project = admin.get(f"/api/project/{scene.info.id}.json")
    admin.request("PUT", f"/api/project/{scene.info.id}.json", body={**project, "blindMode": True})
    made = scene.b.annotate(scene.name)
    run = scene.import_()  # blind mode still on: images found by their tile property
    assert run.rejected == {} and run.points == len(made.clicks)
    pd.testing.assert_frame_equal(
        sorted_clicks(scene.points().reset_index()), sorted_clicks(made.clicks)
    )
    again = scene.b.export(scene.name, k=1)
    assert again.exit_code == 0 and again.actions()["uploaded"] == 0
    assert admin.get(f"/api/project/{scene.info.id}.json")["blindMode"] is True  # kept


def test_a_relabel_by_another_user_is_resolved_by_who_gave_the_term(scene):
    aid = scene.click(scene.reader(0), 0, "POINT (5 5)", "lymphocyte")
    eos = scene.info.term_by_label["eosinophil"]
    admin = scene.session(scene.b.sandbox.admin)
    admin.request("POST", f"/api/annotation/{aid}/term/{eos}/clearBefore.json", body={})
    listed = admin.get(f"/api/annotation/{aid}.json")
    assert sorted(listed["term"]) == sorted([scene.info.term_by_label["lymphocyte"], eos])
    scene.import_()
    point = scene.points().loc[aid]  # clearBefore removed only the reviewer's own terms
    assert (point.label, point.labelled_by) == ("lymphocyte", scene.reader(0))
    scene.import_(label_by="reviewer")
    point = scene.points().loc[aid]
    assert (point.label, point.labelled_by) == ("eosinophil", scene.b.sandbox.admin)
    assert sorted(point.term_ids) == sorted(listed["term"])


def test_reviewed_annotations_are_imported_on_request(scene):
    kept = scene.click(scene.reader(0), 0, "POINT (5 5)", "lymphocyte")
    other = scene.click(scene.reader(1), 1, "POINT (6 6)", "fibroblast")
    admin = scene.session(scene.b.sandbox.admin)
    eos = scene.info.term_by_label["eosinophil"]
    copy = admin.request("POST", f"/api/annotation/{kept}/review.json", body={"terms": [eos]})
    reviewed = int(copy["reviewedannotation"]["id"])
    excluded = scene.import_()
    assert excluded.points == 2 and any("1 reviewed annotation" in n for n in excluded.notes)
    assert scene.points().loc[kept, "label"] == "lymphocyte"
    included = scene.import_(reviewed="include")
    assert included.rejected == {"superseded_by_review": 1} and included.points == 2
    points = scene.points()
    assert points.loc[reviewed, "reviewed"] and points.loc[reviewed, "label"] == "eosinophil"
    assert points.loc[reviewed, "annotator"] == scene.reader(0)
    assert points.loc[reviewed, "labelled_by"] == scene.b.sandbox.admin
    assert kept not in points.index and other in points.index
    only = scene.import_(reviewed="only")
    assert only.points == 1 and only.rejected == {"superseded_by_review": 1, "not_reviewed": 1}
    assert list(scene.points().index) == [reviewed]


def test_polygons_rejected_or_taken_as_their_centroid(scene):
    square = "POLYGON ((2 2, 6 2, 6 6, 2 6, 2 2))"
    aid = scene.click(scene.reader(0), 0, square)
    assert scene.import_().rejected == {"not_a_point": 1}
    assert scene.rejects().loc[aid, "detail"] == "Polygon"
    run = scene.import_(polygons="centroid")
    assert run.rejected == {} and run.totals["changed"] == 1
    point = scene.points().loc[aid]
    height = float(scene.b.tiles.tile_px.iloc[0])
    assert (point.x, point.y, point["shape"]) == (4.0, height - 4.0, "centroid")
