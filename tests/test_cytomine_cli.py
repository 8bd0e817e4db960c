"""`histocurate export` / `import` from the command line and through the Prefect flows,
with a grep of every output, log, table and artifact for the private key."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from histocurate.cli.app import main
from histocurate.cytomine import export as export_module
from histocurate.cytomine.demo import annotate
from histocurate.io import write_partition
from tests.test_cytomine_support import (  # noqa: F401
    image_source,
    make_tiles,
    make_truth,
    sandbox,
    unique,
    write_selection,
)


def _workspace(tmp_path: Path, slide: str) -> tuple[Path, Path, list[str]]:
    from data_schema.tiles import TILES

    ws = tmp_path / "ws"
    assert main(["init", str(ws)]) == 0
    tiles = make_tiles(3, slide=slide)
    write_partition(tiles, ws / "tiles.parquet", slide, TILES)
    ids = list(tiles.tile_id)
    return ws, write_selection(tmp_path / "selection.parquet", ids), ids


def _grep(private: str, texts: list[str], folder: Path) -> None:
    for text in texts:
        assert private not in text
    for path in folder.rglob("*"):
        if path.is_file():
            assert private.encode() not in path.read_bytes(), path


@pytest.fixture
def env(sandbox, monkeypatch):  # noqa: F811
    for key, value in sandbox.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(export_module, "_default_source", image_source)
    return sandbox


def test_cli_export_import_and_bad_keys(env, tmp_path, capsys, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    ws, selection, _ = _workspace(tmp_path, "cli")
    name = unique("cli")
    args = ["-w", str(ws), "--project", name, "--no-prefect"]
    assert main(["export", *args, "--selection", str(selection),
                 "--annotators", "alice,bob,carol", "--k", "2"]) == 0  # fmt: skip
    made = annotate(env, project=name, truth=make_truth(make_tiles(3, slide="cli")))
    assert main(["import", *args]) == 0
    first = capsys.readouterr().out
    assert "alice" in first and "tables updated" in first
    assert main(["import", *args]) == 0
    assert "no change since the last import" in capsys.readouterr().out
    assert (ws / "points.parquet").exists() and len(made.clicks) > 0

    private = env.keys[env.admin][1]
    monkeypatch.setenv("CYTOMINE_PRIVATE_KEY", private[::-1])
    assert main(["import", *args]) == 2
    err = capsys.readouterr().err
    assert "refused the keys" in err and private[::-1] not in err
    assert (
        main(["export", *args, "--annotators", "alice,ghost", "--selection", str(selection)]) == 2
    )
    _grep(private, [first, err, caplog.text], ws)


@pytest.mark.prefect
def test_flows_report_and_never_leak_the_key(env, tmp_path, prefect_harness, caplog):
    from prefect.client.orchestration import get_client

    from flows.annotation import export_flow, import_flow

    caplog.set_level(logging.DEBUG)
    ws, selection, _ = _workspace(tmp_path, "flow")
    name = unique("flow")
    summary = export_flow(str(ws), selection=str(selection), project=name,
                          annotators=["alice", "bob"])  # fmt: skip
    assert summary["uploaded"] == 3
    annotate(env, project=name, truth=make_truth(make_tiles(3, slide="flow")))
    imported = import_flow(str(ws), project=name)
    assert imported["totals"]["new"] > 0 and imported["written"]
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts()
        runs = client.read_flow_runs()
    keys = {a.key for a in artifacts}
    assert {"cytomine-import", "cytomine-project", "cytomine-export"} <= keys
    link = next(a for a in artifacts if a.key == "cytomine-project")
    assert env.host in str(link.data) and "/#/project/" in str(link.data)
    texts = [str(a.data) + str(a.description) for a in artifacts]
    texts += [str(r.parameters) for r in runs]
    _grep(env.keys[env.admin][1], [*texts, caplog.text, str(summary), str(imported)], ws)
