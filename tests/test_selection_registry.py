"""The arms are one table (data_schema.selection.ARMS): the config and the CLI derive theirs."""

from __future__ import annotations

from typing import get_args

import pytest
from pydantic import ValidationError

from data_schema import SELECTION
from data_schema.selection import ARMS
from histocurate.cli import select as select_cli
from histocurate.config import SelectionArm, SelectionConfig


def test_config_choices_are_the_schema_arms() -> None:
    assert get_args(SelectionArm) == ARMS
    assert tuple(SelectionConfig().arms) == ARMS
    assert SELECTION.column("arm").choices == ARMS
    with pytest.raises(ValidationError, match="diversity"):
        SelectionConfig(arms=["novelty"])


def test_cli_arms_are_the_schema_arms() -> None:
    assert select_cli.ARMS is ARMS
    assert select_cli._split("rare, uncertainty", what="--arms", allowed=ARMS) == [
        "rare",
        "uncertainty",
    ]
