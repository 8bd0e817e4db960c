"""`push-consensus`: the consensus nuclei go to Cytomine in a dedicated user's layer (terms,
or every proposed term when undetermined), a second push changes nothing, and an import
never takes that layer for clicks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import shapely

from data_schema.consensus import CONSENSUS
from histocurate.cli.app import main
from histocurate.cytomine.client import connect
from histocurate.cytomine.credentials import ENV_CONSENSUS_PRIVATE, ENV_CONSENSUS_PUBLIC
from histocurate.cytomine.projects import project_info
from histocurate.cytomine.push_stage import run_push_consensus
from histocurate.io import write_table
from tests.cytomine_support import (
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
        rows = db._all("SELECT id, location FROM annotations WHERE user_id = ?", (user_id,))
        terms = {
            r["id"]: sorted(t["term_id"] for t in db._terms_of([r["id"]])[r["id"]]) for r in rows
        }
    return [{"id": r["id"], "wkt": r["location"], "terms": terms[r["id"]]} for r in rows]


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
    db = sandbox.server.db
    if LAYER not in {u["username"] for u in db.list_users()}:
        db.create_user(LAYER)
    public, private = db.user_keys([LAYER])[LAYER]
    monkeypatch.setenv(ENV_CONSENSUS_PUBLIC, public)
    monkeypatch.setenv(ENV_CONSENSUS_PRIVATE, private)
    first = run_push_consensus(b.config, project=name)
    assert first.exit_code == 0 and first.total("posted") == 3
    layer_id = next(u["id"] for u in db.list_users() if u["username"] == LAYER)
    layer = _layer(sandbox, layer_id)
    with connect(sandbox.credentials(), FAST) as conn:
        info = project_info(conn, name)
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
    again = run_push_consensus(b.config, project=name)
    assert again.total("posted") == again.total("removed") == 0 and again.total("kept") == 3
    assert {o.status for o in again.outcomes} == {"skipped"}
    assert len(_layer(sandbox, layer_id)) == 3
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
    imported = b.import_(name)
    assert imported.rejected == {"consensus_layer": 2} and imported.points == 0
