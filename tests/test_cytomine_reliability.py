"""Reliability: with 10% injected faults (500/503, hangs past the client timeout, dropped
connections, before and after the server commits) on the current server profile, with
PIMS importing uploads asynchronously, the whole cycle ends with exactly the annotations
that were made, each tile uploaded once. The 50-tile measurement is
`benchmarks/cytomine_cycle.py`; this test runs a smaller campaign to stay fast."""

from __future__ import annotations

import pandas as pd
import pytest

from data_schema.points import POINTS
from histocurate.cytomine.retry import RetryPolicy
from histocurate.demo.annotation import running_sandbox
from histocurate.demo.sandbox import FaultInjector
from histocurate.io import read_table
from tests.cytomine_support import bench, make_tiles, make_truth, sorted_clicks

POLICY = RetryPolicy(
    attempts=10,
    backoff_s=0.01,
    max_backoff_s=0.1,
    timeout_s=1.0,
    connect_timeout_s=1.0,
    connect_deadline_s=5.0,
    upload_wait_s=30.0,
    poll_s=0.02,
)
CONFIG = {"retries": 10, "backoff_s": 0.01, "timeout_s": 1.0, "connect_deadline_s": 5.0}


@pytest.mark.slow
def test_cycle_with_ten_percent_faults_loses_and_duplicates_nothing(tmp_path, monkeypatch):
    tiles = make_tiles(10, px=48, slide="rel")
    truth = make_truth(tiles, per_tile=15)
    faults = FaultInjector(rate=0.10, hang_s=1.2, seed=7)
    with running_sandbox(faults=faults, import_delay_s=0.05) as sandbox:
        b = bench(sandbox, tmp_path, monkeypatch, tiles, **CONFIG)
        exported = b.export("reliability", annotators=sandbox.annotators, k=3)
        assert exported.exit_code == 0, exported.failure_lines()
        from histocurate.demo.annotation import annotate

        made = annotate(sandbox, project="reliability", truth=truth, policy=POLICY)
        imported = b.import_("reliability")
        db = sandbox.server.db
        with db.lock:
            n_files = db._one("SELECT COUNT(*) FROM uploaded_files")[0]
            n_images = db._one("SELECT COUNT(*) FROM image_instances")[0]
            n_terms = db._one("SELECT COUNT(*) FROM terms")[0]
            n_annotations = db._one("SELECT COUNT(*) FROM annotations")[0]
    injected = {k: v for k, v in faults.summary().items() if k != "requests"}
    assert sum(injected.values()) > 10  # the faults did happen, of several kinds
    assert {k.split("-")[0] for k in injected} == {"500", "503", "hang", "drop"}
    assert (n_files, n_images, n_terms) == (10, 10, 14)  # no second upload, image or term
    points = read_table(b.workspace.points, POINTS)
    assert n_annotations == len(made.clicks) == len(points) == imported.points > 0
    assert imported.rejected == {}
    pd.testing.assert_frame_equal(sorted_clicks(points), sorted_clicks(made.clicks))
