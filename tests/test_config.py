"""Configuration: file < environment < flags; unknown keys are errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from histocurate.config import load_config, render_toml
from histocurate.errors import WorkspaceError
from histocurate.workspace import init_workspace


def test_priority_file_then_environment_then_flags(tmp_path: Path) -> None:
    (tmp_path / "histocurate.toml").write_text(
        "[tiling]\ntissue_threshold = 0.2\ntile_size_um = 100\n"
    )
    env = {"HISTOCURATE_TILING__TISSUE_THRESHOLD": "0.3", "HISTOCURATE_TILING__THUMBNAIL_MPP": "4"}
    cfg = load_config(tmp_path, environ=env)
    assert (cfg.tiling.tissue_threshold, cfg.tiling.tile_size_um) == (0.3, 100.0)
    assert cfg.tiling.thumbnail_mpp == 4.0
    cfg = load_config(tmp_path, {"tiling": {"tissue_threshold": 0.9}}, environ=env)
    assert cfg.tiling.tissue_threshold == 0.9
    assert cfg.workspace == tmp_path.resolve()


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ("[tiling]\ntile_size_umm = 3\n", {}, "unknown key 'tiling.tile_size_umm'"),
        ("[tilling]\n", {}, "unknown key 'tilling'"),
        ("", {"HISTOCURATE_TILING__FOO": "1"}, "unknown key 'tiling.foo'"),
        ("[tiling]\ntissue_threshold = 2\n", {}, "tiling.tissue_threshold"),
        ("[tiling\n", {}, "not valid TOML"),
    ],
)
def test_bad_configuration_is_an_error(tmp_path: Path, toml: str, env: dict, message: str) -> None:
    (tmp_path / "histocurate.toml").write_text(toml)
    with pytest.raises(WorkspaceError, match=message):
        load_config(tmp_path, environ=env)


def test_workspace_without_config_file_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="histocurate init"):
        load_config(tmp_path, environ={})


def test_init_writes_a_config_that_loads_back_and_never_overwrites(tmp_path: Path) -> None:
    cfg = load_config(tmp_path, {"cohort": {"name": "tcga"}}, environ={}, require_file=False)
    workspace = init_workspace(tmp_path / "ws", cfg)
    text = workspace.config_file.read_text()
    assert text == render_toml(cfg)
    assert load_config(workspace.root, environ={}).cohort.name == "tcga"
    with pytest.raises(WorkspaceError, match="already exists"):
        init_workspace(tmp_path / "ws", cfg)
    assert workspace.config_file.read_text() == text


@pytest.mark.parametrize(
    "bad",
    [
        {"hidden_sizes": [[0]]},
        {"hidden_sizes": [[]]},
        {"hidden_sizes": []},
        {"scalers": []},
        {"uncertainty_clusters": (0, 0)},
        {"uncertainty_clusters": (20, 5)},
        {"weight_clip": (2.0, 0.5)},
        {"weight_clip": (-1.0, 2.0)},
    ],
)
def test_selection_settings_that_cannot_run_are_refused(bad: dict[str, object]) -> None:
    from pydantic import ValidationError

    from histocurate.config import SelectionConfig

    with pytest.raises(ValidationError, match=next(iter(bad))):
        SelectionConfig(**bad)  # type: ignore[arg-type]
