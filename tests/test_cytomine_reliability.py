"""Reliability: with 10% injected faults (500/503, hangs past the client timeout, dropped
connections, before and after the server commits) the whole cycle ends with exactly the
annotations that were made. The 50-tile measurement is `benchmarks/cytomine_cycle.py`;
this test runs a smaller campaign to stay fast."""

from __future__ import annotations

import pandas as pd

from histocurate.cytomine.client import RetryPolicy, connect
from histocurate.cytomine.demo import annotate, running_sandbox
from histocurate.cytomine.export import export_campaign
from histocurate.cytomine.importer import import_annotations
from histocurate.cytomine.sandbox import FaultInjector
from tests.test_cytomine_support import image_source, make_tiles, make_truth, sorted_clicks

POLICY = RetryPolicy(
    attempts=10, backoff_s=0.01, max_backoff_s=0.1, timeout_s=1.0, connect_timeout_s=1.0,
    connect_deadline_s=5.0,
)  # fmt: skip


def test_cycle_with_ten_percent_faults_loses_and_duplicates_nothing(tmp_path):
    tiles = make_tiles(10, px=48, slide="rel")
    truth = make_truth(tiles, per_tile=15)
    faults = FaultInjector(rate=0.10, hang_s=1.2, seed=7)
    with running_sandbox(faults=faults) as sandbox:
        with connect(sandbox.credentials(), POLICY) as conn:
            export_campaign(
                conn, project="reliability", tile_ids=list(tiles.tile_id), tiles=tiles,
                annotators=sandbox.annotators, k=3, assignments_path=tmp_path / "a.parquet",
                image_source=image_source,
            )  # fmt: skip
        made = annotate(sandbox, project="reliability", truth=truth, policy=POLICY)
        with connect(sandbox.credentials(), POLICY) as conn:
            result = import_annotations(
                conn, project="reliability", points_path=tmp_path / "points.parquet",
                rejects_path=tmp_path / "rejects.parquet", assignments_path=tmp_path / "a.parquet",
            )  # fmt: skip
        db = sandbox.server.db
        with db.lock:
            n_images = db._one("SELECT COUNT(*) FROM image_instances")[0]
            n_terms = db._one("SELECT COUNT(*) FROM terms")[0]
            n_annotations = db._one("SELECT COUNT(*) FROM annotations")[0]
    injected = {k: v for k, v in faults.summary().items() if k != "requests"}
    assert sum(injected.values()) > 10  # the faults did happen, of several kinds
    assert {k.split("-")[0] for k in injected} == {"500", "503", "hang", "drop"}
    assert (n_images, n_terms) == (10, 14)  # no duplicate upload or term
    assert n_annotations == len(made.clicks) == len(result.points) > 0
    assert result.rejects.empty
    pd.testing.assert_frame_equal(sorted_clicks(result.points), sorted_clicks(made.clicks))
