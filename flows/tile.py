"""Prefect flow of the tile stage: one task per slide, the tiling report as artifacts."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows._stage import finish, task_mapper
from histocurate.config import load_config
from histocurate.tiling import run_tile


@flow(name="tile", log_prints=True)
def tile_flow(workspace: str, overrides: dict[str, Any] | None = None, force: bool = False) -> Any:
    """Tile every slide of the workspace's manifest; slides already tiled are skipped."""
    config = load_config(workspace, overrides or {})
    return finish(run_tile(config, mapper=task_mapper("tile"), force=force), key="tile")
