"""Prefect flows of the Cytomine stages: export a campaign, import its annotations, push
the consensus back. Each is ``@flow`` + `task_mapper` + `finish` over the stage's run
function (`histocurate.cytomine.stage`): the network work is one task per project (the
Cytomine client is a process-wide singleton), its per-tile outcomes the run's. No key ever
reaches a parameter, a result or an artifact: the tasks read them where they run.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows._stage import finish, task_mapper
from histocurate.config import load_config


@flow(name="cytomine-export", log_prints=True)
def export_flow(
    workspace: str,
    selection: str | None = None,
    indication: str | None = None,
    project: str | None = None,
    annotators: list[str] | None = None,
    k: int | None = None,
    isolation: str | None = None,
    host: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> Any:
    """Export one indication's selection to a Cytomine campaign (adds only what is missing)."""
    from pathlib import Path

    from histocurate.cytomine.stage import run_export

    run = run_export(
        load_config(workspace, overrides),
        mapper=task_mapper("export"),
        selection=Path(selection) if selection else None,
        indication=indication,
        project=project,
        annotators=annotators,
        k=k,
        isolation=isolation,
        host=host,
    )
    return finish(run, key="cytomine-export")


@flow(name="cytomine-import", log_prints=True)
def import_flow(
    workspace: str,
    project: str | None = None,
    host: str | None = None,
    reviewed: str | None = None,
    label_by: str | None = None,
    polygons: str | None = None,
    keep_unassigned: bool | None = None,
    overrides: dict[str, Any] | None = None,
) -> Any:
    """Import the campaign's annotations into points.parquet (incremental)."""
    from histocurate.cytomine.stage import run_import

    run = run_import(
        load_config(workspace, overrides),
        mapper=task_mapper("import"),
        project=project,
        host=host,
        reviewed=reviewed,
        label_by=label_by,
        polygons=polygons,
        keep_unassigned=keep_unassigned,
    )
    return finish(run, key="cytomine-import")


@flow(name="cytomine-push-consensus", log_prints=True)
def push_consensus_flow(
    workspace: str,
    project: str | None = None,
    shape: str | None = None,
    host: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> Any:
    """Write the campaign's consensus nuclei to Cytomine as a separate layer (idempotent)."""
    from histocurate.cytomine.push_stage import run_push_consensus

    run = run_push_consensus(
        load_config(workspace, overrides),
        mapper=task_mapper("push-consensus"),
        project=project,
        shape=shape,
        host=host,
    )
    return finish(run, key="cytomine-push-consensus")
