"""The stages table (histocurate/stages.py) stays true to the code: run functions, flows,
configuration sections and CLI commands exist under the names it gives."""

from __future__ import annotations

import importlib

import pytest

from histocurate.config import HistocurateConfig
from histocurate.stages import STAGES


@pytest.mark.parametrize("row", STAGES, ids=[s.command for s in STAGES])
def test_every_name_of_a_stage_exists(row) -> None:  # type: ignore[no-untyped-def]
    module, function = row.run.split(":")
    assert module.startswith(row.package)
    assert callable(getattr(importlib.import_module(module), function))
    path, name = row.flow.split(":")
    flow_module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    assert hasattr(getattr(flow_module, name), "fn")  # a Prefect flow
    assert row.config_section in HistocurateConfig.model_fields


def test_every_stage_is_a_command() -> None:
    from typer.main import get_command

    from histocurate.cli.app import app

    cli = get_command(app)
    for row in STAGES:
        words = row.command.split()
        node = cli
        for word in words:
            assert word in node.commands, f"`histocurate {row.command}` missing"  # type: ignore[attr-defined]
            node = node.commands[word]  # type: ignore[attr-defined]
