"""`histocurate export` / `import` from the command line and through the Prefect flows: the
same report on both paths, flow == plain on one workspace, and a grep of every output,
log, table and artifact for the private key."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from data_schema.assignments import ASSIGNMENTS
from data_schema.points import POINTS
from histocurate.cli.app import main
from histocurate.cytomine import stage as stage_module
from histocurate.io import read_table
from tests.cytomine_support import (
    bench,
    image_source,
    make_tiles,
    unique,
)


def _grep(private: str, texts: list[str], folder: Path) -> None:
    for text in texts:
        assert private not in text
    for path in folder.rglob("*"):
        if path.is_file():
            assert private.encode() not in path.read_bytes(), path


@pytest.fixture
def env(sandbox, monkeypatch):
    monkeypatch.setattr(stage_module, "default_source", image_source)
    return sandbox


def test_cli_export_import_and_bad_keys(env, tmp_path, capsys, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    b = bench(env, tmp_path, monkeypatch, make_tiles(3, slide="cli"))
    ws = str(b.workspace.root)
    name = unique("cli")
    args = ["-w", ws, "--project", name, "--no-prefect"]
    assert (
        main(
            [
                "export",
                *args,
                "--selection",
                str(b.selection),
                "--annotators",
                "alice,bob,carol",
                "--k",
                "2",
            ]
        )
        == 0
    )
    exported = capsys.readouterr().out
    assert "3 uploaded" in exported and "cli_x0_y0" in exported
    made = b.annotate(name)
    assert main(["import", *args]) == 0
    first = capsys.readouterr().out
    assert "alice" in first and "tables updated" in first
    assert main(["import", *args]) == 0
    assert "no change since the last import" in capsys.readouterr().out
    assert len(read_table(b.workspace.points, POINTS)) == len(made.clicks) > 0

    private = env.keys[env.admin][1]
    monkeypatch.setenv("CYTOMINE_PRIVATE_KEY", private[::-1])
    assert main(["import", *args]) == 2
    out = capsys.readouterr()
    assert "refused the keys" in out.err + out.out and private[::-1] not in out.err + out.out
    monkeypatch.setenv("CYTOMINE_PRIVATE_KEY", private)
    code = main(
        ["export", *args, "--annotators", "alice,ghost,phantom", "--selection", str(b.selection)]
    )
    out = capsys.readouterr()
    assert code == 2 and "'ghost', 'phantom' do not exist" in out.out + out.err
    _grep(private, [first, exported, out.err, out.out, caplog.text], b.workspace.root)


@pytest.mark.prefect
def test_flows_match_the_plain_runs_and_never_leak_the_key(
    env, tmp_path, prefect_harness, caplog, monkeypatch
):
    from prefect.client.orchestration import get_client

    from flows._stage import run_flow
    from flows.annotation import export_flow, import_flow
    from histocurate.cytomine.stage import run_export, run_import

    caplog.set_level(logging.DEBUG)
    b = bench(env, tmp_path, monkeypatch, make_tiles(3, slide="flow"))
    ws = str(b.workspace.root)
    by_flow, by_plain = unique("flow"), unique("plain")
    flow_run = run_flow(
        export_flow,
        workspace=ws,
        selection=str(b.selection),
        project=by_flow,
        annotators=["alice", "bob"],
        k=1,
    )
    plain_run = run_export(
        b.config,
        selection=b.selection,
        project=by_plain,
        annotators=["alice", "bob"],
        k=1,
        image_source=image_source,
    )
    assert type(flow_run) is type(plain_run)

    def comparable(run) -> pd.DataFrame:
        return run.report().table.drop(columns=["seconds"])

    pd.testing.assert_frame_equal(comparable(flow_run), comparable(plain_run))
    table = read_table(b.workspace.assignments, ASSIGNMENTS)
    cols = ["tile_id", "annotator", "image_sha256", "tiles_token", "k"]
    pd.testing.assert_frame_equal(
        table[table.project == by_flow][cols].reset_index(drop=True),
        table[table.project == by_plain][cols].reset_index(drop=True),
    )
    b.annotate(by_flow)
    imported = run_flow(import_flow, workspace=ws, project=by_flow)
    assert imported.written and imported.totals["new"] > 0
    points = read_table(b.workspace.points, POINTS)
    again = run_import(b.config, project=by_flow)  # the plain run finds the flow's tables
    assert not again.written and again.totals["unchanged"] == imported.totals["new"]
    pd.testing.assert_frame_equal(read_table(b.workspace.points, POINTS), points)
    pd.testing.assert_frame_equal(
        again.counts[["annotator", "points"]], imported.counts[["annotator", "points"]]
    )
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts()
        runs = client.read_flow_runs()
    keys = {a.key for a in artifacts}
    assert {"cytomine-export-report", "cytomine-import-report", "cytomine-export-items"} <= keys
    report = next(a for a in artifacts if a.key == "cytomine-export-report")
    assert env.host in str(report.data) and "/#/project/" in str(report.data)
    texts = [str(a.data) + str(a.description) for a in artifacts]
    texts += [str(r.parameters) for r in runs]
    _grep(env.keys[env.admin][1], [*texts, caplog.text], b.workspace.root)
