"""The shared flow layer without a Prefect server: retry rules, parameter names in messages,
the workspace check, typed parameters (schema and validation), rounding, names and tags."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from histocurate.errors import UserInputError, WorkspaceError

LAYER = ["flows._artifacts", "flows._hooks", "flows._naming", "flows._params", "flows._pipeline",
         "flows._retry", "flows._stage", "flows._tasks", "flows._deploy"]  # fmt: skip


@pytest.mark.parametrize("module", LAYER)
def test_docstring_examples(module: str) -> None:
    """flows/ is not among the doctest paths; its examples run here."""
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def _http_error(status: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"HTTP {status}", response=response)


def test_only_transient_failures_are_retried() -> None:
    from prefect.task_engine import TaskRunTimeoutError

    from flows._retry import is_transient
    from histocurate.cytomine.client import CytomineUnreachable
    from histocurate.cytomine.retry import CytomineCallError

    transient = [
        ConnectionResetError("reset"),
        TimeoutError("read timed out"),
        requests.ConnectionError("refused"),
        _http_error(503),
        _http_error(429),
        OSError(5, "Input/output error"),
        CytomineCallError("image list", None, "no answer"),
        CytomineCallError("image list", 502, "bad gateway"),
    ]
    lasting = [
        UserInputError("--n-tiles must be >= 1"),
        CytomineUnreachable("does not answer"),  # a UserInputError: never retried
        CytomineCallError("image list", 404, "not found"),
        _http_error(404),
        FileNotFoundError("a.svs"),
        PermissionError("a.svs"),
        ValueError("bad value"),
        KeyError("tile_id"),
        requests.exceptions.InvalidURL("nope"),
        TaskRunTimeoutError("Scope timed out after 10 second(s)."),
    ]
    assert [is_transient(e) for e in transient] == [True] * len(transient)
    assert [is_transient(e) for e in lasting] == [False] * len(lasting)


def test_flags_become_parameter_names_outside_commands() -> None:
    from flows._params import name_parameters

    message = (
        "indication LUAD has 19 tiles with features but 100 were asked; lower --n-tiles / "
        "--n-uncertain; or run `histocurate embed --force` and pass --weights"
    )
    renamed = name_parameters(message, {"n_tiles", "n_uncertain", "force"})
    assert "lower parameter 'n_tiles' / parameter 'n_uncertain'" in renamed
    assert "`histocurate embed --force`" in renamed  # a command stays a command
    assert "pass --weights" in renamed  # not a parameter of this flow: left as it is


def test_unset_deployment_workspace_names_the_variable(tmp_path: Path) -> None:
    from flows._params import checked_workspace

    for unset in ("{{ $HISTOCURATE_WORKSPACE }}", "", None):
        with pytest.raises(WorkspaceError, match="HISTOCURATE_WORKSPACE"):
            checked_workspace(unset)
    with pytest.raises(WorkspaceError, match=r"no histocurate\.toml"):
        checked_workspace(str(tmp_path))
    (tmp_path / "histocurate.toml").write_text("")
    assert checked_workspace(str(tmp_path)) == str(tmp_path)


def test_unset_checkpoint_is_refused_before_any_work_naming_the_variable(tmp_path: Path) -> None:
    from flows._params import checked_checkpoint
    from flows._pipeline import workspace_files
    from flows.predict import predict_flow, predict_new_slides_flow
    from histocurate.cli.app import main

    for unset in ("{{ $HISTOCURATE_CHECKPOINT }}", "", "  ", None):
        with pytest.raises(UserInputError, match="HISTOCURATE_CHECKPOINT"):
            checked_checkpoint(unset)
    assert checked_checkpoint("runs/lung-1") == "runs/lung-1"
    ws = tmp_path / "ws"
    assert main(["init", str(ws)]) == 0
    (ws / "slides.csv").write_text("slide_id,path,indication\na,a.tiff,LUAD\n")
    before = workspace_files(ws)
    for flow in (predict_new_slides_flow, predict_flow):  # the bodies, outside any run
        with pytest.raises(UserInputError, match="parameter 'checkpoint' is not set"):
            flow.fn(workspace=str(ws), checkpoint="")
    assert workspace_files(ws) == before  # nothing tiled, nothing written


def test_config_errors_of_a_deployment_run_name_parameters_not_flags(tmp_path: Path) -> None:
    from flows._stage import _FROM_DEPLOYMENT, for_this_run
    from histocurate.config import load_config

    (tmp_path / "histocurate.toml").write_text("")
    with pytest.raises(WorkspaceError) as raised:
        load_config(tmp_path, {"tiling": {"tile_size": 56}}, environ={})
    message = str(raised.value)
    assert "variables, flags)" in message  # the CLI's wording
    assert for_this_run(message) == message  # not from a deployment: unchanged
    token = _FROM_DEPLOYMENT.set(True)
    try:
        renamed = for_this_run(message)
    finally:
        _FROM_DEPLOYMENT.reset(token)
    assert "flags" not in renamed and "parameters/overrides)" in renamed
    assert "unknown key 'tiling.tile_size'" in renamed


def test_typed_parameters_win_over_overrides_and_none_keeps_the_workspace() -> None:
    from flows._params import settings

    merged = settings(
        {"selection": {"n_tiles": 12, "seed": None, "labels": Path("/l.csv")}},
        {"selection": {"n_tiles": 50, "epochs": 3}, "tiling": {"tile_size_um": 56}},
    )
    assert merged == {
        "selection": {"n_tiles": 12, "epochs": 3, "labels": "/l.csv"},
        "tiling": {"tile_size_um": 56},
    }


FLOWS = [
    ("flows.tile", "tile_flow"),
    ("flows.embed", "embed_flow"),
    ("flows.select", "select_flow"),
    ("flows.segment", "segment_flow"),
    ("flows.consensus", "consensus_flow"),
    ("flows.evaluate", "evaluate_flow"),
    ("flows.pipeline", "prepare_campaign_flow"),
    ("flows.pipeline", "refresh_annotations_flow"),
    ("flows.demo", "demo_flow"),
    ("flows.predict", "predict_flow"),
    ("flows.predict", "predict_new_slides_flow"),
]


@pytest.mark.parametrize(("module", "name"), FLOWS, ids=[n for _, n in FLOWS])
def test_every_parameter_is_described_in_the_schema(module: str, name: str) -> None:
    from prefect.utilities.callables import parameter_schema

    flow = getattr(importlib.import_module(module), name)
    properties = parameter_schema(flow).model_dump_for_openapi()["properties"]
    undescribed = [p for p, spec in properties.items() if not spec.get("description")]
    assert undescribed == []


def test_the_run_form_offers_choices_and_refuses_bad_values_before_the_run() -> None:
    from prefect.exceptions import ParameterTypeError
    from prefect.utilities.callables import parameter_schema

    from flows.segment import segment_flow
    from flows.select import select_flow

    schema = parameter_schema(segment_flow).model_dump_for_openapi()
    text = str(schema)
    assert "'nuclick'" in text and "'watershed'" in text  # the segmenter's choices
    sel = parameter_schema(select_flow).model_dump_for_openapi()["properties"]
    assert {"minimum": 1, "type": "integer"} in sel["n_tiles"]["anyOf"]
    ok = select_flow.validate_parameters({"workspace": "w", "indication": "LUAD", "n_tiles": 12})
    assert ok["n_tiles"] == 12
    with pytest.raises(ParameterTypeError, match="n_tiles"):
        select_flow.validate_parameters({"workspace": "w", "indication": "LUAD", "n_tiles": 0})
    with pytest.raises(ParameterTypeError, match="segmenter"):
        segment_flow.validate_parameters({"workspace": "w", "segmenter": "cellpose"})
    with pytest.raises(ParameterTypeError, match="arms"):
        select_flow.validate_parameters({"workspace": "w", "indication": "L", "arms": ["x"]})


def test_table_artifact_values_are_rounded_plain_json() -> None:
    from flows._artifacts import records

    frame = pd.DataFrame(
        {
            "f64": [0.9596984633227023, np.nan],
            "f32": np.array([0.123456, 2.5], dtype=np.float32),
            "n": pd.array([3, None], dtype="Int64"),
            "s": ["a", None],
        }
    )
    assert records(frame) == [
        {"f64": 0.96, "f32": 0.123, "n": 3, "s": "a"},
        {"f64": None, "f32": 2.5, "n": None, "s": None},
    ]


def test_failure_notice_block_comes_from_the_workspace(tmp_path: Path, monkeypatch) -> None:
    from flows._hooks import notify_block_name

    (tmp_path / "histocurate.toml").write_text('[prefect]\nnotify_block = "slack-webhook/ops"\n')
    assert notify_block_name({"workspace": str(tmp_path)}) == "slack-webhook/ops"
    monkeypatch.setenv("HISTOCURATE_PREFECT__NOTIFY_BLOCK", "email/oncall")
    assert notify_block_name({"workspace": "{{ $HISTOCURATE_WORKSPACE }}"}) == "email/oncall"
