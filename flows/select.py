"""Prefect flow of the select stage: per-slide passes as tasks, the report as artifacts.

The algorithm is `histocurate.selection.pipeline.run_selection`; this flow only gives it a
mapper that runs each per-slide step (scan, then score) as one task per slide, and
publishes the report: the markdown text the CLI prints, its tables, and the mosaic.
Tasks get a `FeatureSource` (a workspace path and encoder names), never feature arrays.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows._stage import finish, task_mapper
from histocurate.config import load_config
from histocurate.selection.run import run_select


@flow(name="select", log_prints=True)
def select_flow(workspace: str, indication: str, overrides: dict[str, Any] | None = None) -> Any:
    """Select tiles of ``indication`` for annotation (diversity, rare cells, uncertainty)."""
    config = load_config(workspace, overrides or {})
    run = run_select(config, indication, mapper=task_mapper("select"))
    return finish(run, key=f"select-{indication.lower()}")
