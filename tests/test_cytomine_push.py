"""`push-consensus`: the consensus nuclei go to Cytomine in a dedicated user's layer (terms,
or every proposed term when undetermined) in the campaign's review project, where the
readers see it (and cannot edit it), the same images attached; a second push changes
nothing, and an import never takes that layer for clicks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import shapely

from data_schema.assignments import ASSIGNMENTS
from data_schema.consensus import CONSENSUS
from histocurate.cli.app import main
from histocurate.cytomine.client import connect
from histocurate.cytomine.credentials import ENV_CONSENSUS_PRIVATE, ENV_CONSENSUS_PUBLIC
from histocurate.cytomine.projects import REVIEW, project_info
from histocurate.cytomine.push_stage import review_project, run_push_consensus
from histocurate.cytomine.rest import SignedSession
from histocurate.cytomine.retry import CytomineCallError
from histocurate.io import read_table, write_table
from tests.cytomine_support import (
    ANNOTATORS,
    FAST,
    bench,
    make_tiles,
    unique,
)

LAYER = "histocurate-consensus"


def consensus_rows(project: str, tiles: pd.DataFrame) -> pd.DataFrame:
    """Three nuclei: two on the first tile (one undetermined), one on the second."""
    specs = [
        (0, 8.0, 10.0, "lymphocyte", ["lymphocyte"]),
        (0, 20.0, 12.0, None, ["eosinophil", "neutrophil"]),
        (1, 15.0, 15.0, None, ["unknown"]),
    ]
    rows = []
    for i, (tile, x, y, label, labels) in enumerate(specs):
        square = shapely.box(x - 3, y - 3, x + 3, y + 3)
        rows.append(
            {
                "project": project,
                "consensus_id": 100 + i,
                "tile_id": tiles.tile_id[tile],
                "x": x,
                "y": y,
                "label": label,
                "labels": labels,
                "label_majority": label,
                "label_dawid_skene": label,
                "dawid_skene_probability": 0.9,
                "label_rule": "majority",
                "annotators": ["alice", "bob"],
                "members": [1, 2],
                "member_labels": labels * 2 if len(labels) == 1 else labels,
                "n_annotators": np.int32(2),
                "mean_iou": 0.8,
                "polygon": shapely.to_wkb(square),
                "polygon_source": "resegmented",
                "segmenter": "watershed",
                "area": 36.0,
            }
        )
    return pd.DataFrame(rows)


def _layer(sandbox, user_id: int) -> list[dict]:
    db = sandbox.server.db
    with db.lock:
        rows = db._all(
            "SELECT id, project_id, location FROM annotations WHERE user_id = ?", (user_id,)
        )
        terms = {
            r["id"]: sorted(t["term_id"] for t in db._terms_of([r["id"]])[r["id"]]) for r in rows
        }
    return [
        {"id": r["id"], "project": r["project_id"], "wkt": r["location"], "terms": terms[r["id"]]}
        for r in rows
    ]


def _layer_keys(sandbox, monkeypatch) -> int:
    """The consensus user's keys in the environment; its user id."""
    db = sandbox.server.db
    if LAYER not in {u["username"] for u in db.list_users()}:
        db.create_user(LAYER)
    public, private = db.user_keys([LAYER])[LAYER]
    monkeypatch.setenv(ENV_CONSENSUS_PUBLIC, public)
    monkeypatch.setenv(ENV_CONSENSUS_PRIVATE, private)
    return next(u["id"] for u in db.list_users() if u["username"] == LAYER)


def _counts(sandbox) -> tuple[int, int]:
    db = sandbox.server.db
    with db.lock:
        return (
            db._one("SELECT COUNT(*) FROM uploaded_files")[0],
            db._one("SELECT COUNT(*) FROM abstract_images")[0],
        )


def _seen_by_reader(sandbox, reader: str, review_id: int) -> tuple[list[str], list[dict]]:
    """What a reader's viewer offers in the review project: the layers, and the layer's
    annotations (listed as the viewer lists them)."""
    session = SignedSession(sandbox.host, *sandbox.keys[reader], policy=FAST)
    layers = [u["username"] for u in session.collection(f"/api/project/{review_id}/userlayer.json")]
    layer_id = next(u["id"] for u in sandbox.server.db.list_users() if u["username"] == LAYER)
    shown = session.collection(
        "/api/annotation.json", project=review_id, user=layer_id, showWKT="true"
    )
    return layers, shown


def test_push_consensus_writes_a_separate_layer_once(sandbox, tmp_path, monkeypatch):
    tiles = make_tiles(2, slide="push", px=40)
    b = bench(sandbox, tmp_path, monkeypatch, tiles)
    name = unique("push")
    b.export(name)
    nuclei = consensus_rows(name, tiles)
    write_table(nuclei, b.workspace.campaign(name).consensus, CONSENSUS)
    monkeypatch.setenv(ENV_CONSENSUS_PUBLIC, sandbox.keys[sandbox.admin][0])
    monkeypatch.setenv(ENV_CONSENSUS_PRIVATE, sandbox.keys[sandbox.admin][1])
    same = run_push_consensus(b.config, project=name)  # the manager's keys: refused
    assert same.exit_code == 2 and "needs a user of its own" in (same.outcomes[0].error or "")
    layer_id = _layer_keys(sandbox, monkeypatch)
    uploads = _counts(sandbox)
    first = run_push_consensus(b.config, project=name)
    assert first.exit_code == 0 and first.total("posted") == 3
    assert first.review_project == review_project(name) == f"{name} (review)"
    assert f"in project '{name} (review)'" in first.report().summary[0]
    assert first.readers == ANNOTATORS
    assert _counts(sandbox) == uploads  # the images attached, not uploaded again
    layer = _layer(sandbox, layer_id)
    with connect(sandbox.credentials(), FAST) as conn:
        info = project_info(conn, name)
        review = project_info(conn, review_project(name))
        settings = conn.get(f"project/{review.id}.json")
        main_bases = sorted(
            i["baseImage"] for i in conn.get(f"project/{info.id}/imageinstance.json")["collection"]
        )
        review_bases = sorted(
            i["baseImage"]
            for i in conn.get(f"project/{review.id}/imageinstance.json")["collection"]
        )
        members = {u["username"] for u in conn.get(f"project/{review.id}/user.json")["collection"]}
    assert {k: settings[k] for k in REVIEW} == dict(REVIEW)
    assert review_bases == main_bases and review.ontology_id == info.ontology_id
    assert members >= {*ANNOTATORS, LAYER}
    assert {a["project"] for a in layer} == {review.id}  # nothing in the readers' project
    t = info.term_by_label
    assert sorted(a["terms"] for a in layer) == sorted(
        [[t["lymphocyte"]], sorted([t["eosinophil"], t["neutrophil"]]), [t["unknown"]]]
    )
    centroids = sorted(
        (
            round(shapely.from_wkt(a["wkt"]).centroid.x, 3),
            round(shapely.from_wkt(a["wkt"]).centroid.y, 3),
        )
        for a in layer
    )
    assert centroids == sorted([(8.0, 30.0), (20.0, 28.0), (15.0, 25.0)])  # y from the bottom
    layers, shown = _seen_by_reader(sandbox, "alice", review.id)
    assert LAYER in layers and len(shown) == 3  # the pathologists see the consensus layer
    alice = SignedSession(sandbox.host, *sandbox.keys["alice"], policy=FAST)
    with pytest.raises(CytomineCallError) as refused:  # and cannot edit it
        alice.request("DELETE", f"/api/annotation/{layer[0]['id']}.json")
    assert refused.value.status == 403
    again = run_push_consensus(b.config, project=name)
    assert again.total("posted") == again.total("removed") == 0 and again.total("kept") == 3
    assert {o.status for o in again.outcomes} == {"skipped"}
    assert len(_layer(sandbox, layer_id)) == 3 and _counts(sandbox) == uploads
    with connect(sandbox.credentials(), FAST) as conn:
        n_images = len(conn.get(f"project/{review.id}/imageinstance.json")["collection"])
    assert n_images == 2  # nothing attached twice
    write_table(nuclei.iloc[:2], b.workspace.campaign(name).consensus, CONSENSUS)
    fewer = run_push_consensus(b.config, project=name)
    assert fewer.total("removed") == 1 and len(_layer(sandbox, layer_id)) == 2
    assert (
        main(
            [
                "push-consensus",
                "-w",
                str(b.workspace.root),
                "--project",
                name,
                "--as",
                "points",
                "--no-prefect",
            ]
        )
        == 0
    )
    kinds = {shapely.from_wkt(a["wkt"]).geom_type for a in _layer(sandbox, layer_id)}
    assert kinds == {"Point"} and len(_layer(sandbox, layer_id)) == 2
    imported = b.import_(name)  # the review project is not one of the campaign's
    assert imported.rejected == {} and imported.points == 0


def test_per_reader_campaign_gets_its_consensus_back(sandbox, tmp_path, monkeypatch):
    """In a per-reader campaign the readers are not members of the main project: they see
    the consensus in the review project."""
    tiles = make_tiles(2, slide="pushiso", px=40)
    b = bench(sandbox, tmp_path, monkeypatch, tiles)
    name = unique("pushiso")
    assert b.export(name, k=2, isolation="per-reader").exit_code == 0
    write_table(consensus_rows(name, tiles), b.workspace.campaign(name).consensus, CONSENSUS)
    _layer_keys(sandbox, monkeypatch)
    run = run_push_consensus(b.config, project=name)
    assert run.exit_code == 0 and run.total("posted") == 3, run.failure_lines()
    with connect(sandbox.credentials(), FAST) as conn:
        review = project_info(conn, review_project(name))
    for reader in run.readers:
        layers, shown = _seen_by_reader(sandbox, reader, review.id)
        assert LAYER in layers and len(shown) == 3
    assigned = read_table(b.workspace.assignments, ASSIGNMENTS)
    assert run.readers == sorted(set(assigned[assigned.project == name].annotator))
    imported = b.import_(name)
    assert imported.rejected == {} and imported.points == 0
