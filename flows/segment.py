"""Prefect flow of the segment stage: one task per batch of tiles, the report as artifacts.

Each task loads the segmenter once per process (weights are not passed around) and reads
the campaign's frozen pixels itself; tiles are independent, so tasks may run on threads or
a Dask cluster.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows._stage import finish, task_mapper
from histocurate.config import load_config
from histocurate.segment.stage import run_segment


@flow(name="segment", log_prints=True)
def segment_flow(
    workspace: str,
    project: str | None = None,
    overrides: dict[str, Any] | None = None,
    force: bool = False,
) -> Any:
    """Segment every tile of the campaign whose masks are missing or out of date."""
    config = load_config(workspace, overrides or {})
    run = run_segment(config, project=project, mapper=task_mapper("segment"), force=force)
    return finish(run, key="segment")
