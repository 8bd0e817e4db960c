"""Prefect flows of the Cytomine stages: export a campaign, import its annotations, push
the consensus back. Each is `stage_flow` + `stage_run` + ``finish`` over the stage's run
function (`histocurate.cytomine.stage`): the network work is one task per project (the
Cytomine client is a process-wide singleton), its per-tile outcomes the run's. No key ever
reaches a parameter, a result or an artifact: the tasks read them where they run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from flows._params import Count, Indication
from flows._stage import stage_flow, stage_run
from histocurate.config.cytomine import Isolation, LabelBy, PolygonMode, PushShape, ReviewedMode

Username = Annotated[str, Field(min_length=1, pattern=r"^\S+$")]
Host = Annotated[str, Field(min_length=1, pattern=r"^\S+$")]


@stage_flow("export")
def export_flow(
    workspace: str,
    project: str | None = None,
    indication: Indication | None = None,
    annotators: list[Username] | None = None,
    k: Count | None = None,
    isolation: Isolation | None = None,
    selection: str | None = None,
    host: Host | None = None,
    overrides: dict[str, Any] | None = None,
) -> Any:
    """Export one indication's selection to a Cytomine campaign (adds only what is missing).

    Args:
        workspace: Workspace folder (holds histocurate.toml) on the machine running the flow.
        project: Cytomine project name of the campaign. Empty: [cytomine] project.
        indication: Indication whose selection is exported. Empty: the only one selected.
        annotators: Usernames of the annotators (existing users). Empty: [cytomine].
        k: Validation sets: annotators drawn per tile (paper: 3 of 9). Empty: all of them.
        isolation: shared (one project, other readers' layers hidden) or per-reader (one
            project per reader, enforced by the server). Empty: the workspace's.
        selection: Another selection table than the workspace's (a path on the worker).
        host: Cytomine URL. Empty: CYTOMINE_HOST, then [cytomine] host.
        overrides: Any other setting, nested like histocurate.toml.
    """
    from histocurate.cytomine.stage import run_export

    with stage_run("export", workspace, overrides, campaign=project,
                   indication=indication) as stage:  # fmt: skip
        run = run_export(
            stage.config,
            mapper=stage.mapper,
            progress=stage.progress,
            selection=Path(selection) if selection else None,
            indication=indication,
            project=project,
            annotators=annotators,
            k=k,
            isolation=isolation,
            host=host,
        )
        return stage.finish(run, key="cytomine-export")


@stage_flow("import")
def import_flow(
    workspace: str,
    project: str | None = None,
    reviewed: ReviewedMode | None = None,
    label_by: LabelBy | None = None,
    polygons: PolygonMode | None = None,
    keep_unassigned: bool | None = None,
    host: Host | None = None,
    overrides: dict[str, Any] | None = None,
) -> Any:
    """Import the campaign's annotations into points.parquet (incremental).

    Args:
        workspace: Workspace folder (holds histocurate.toml) on the machine running the flow.
        project: Cytomine project name of the campaign. Empty: [cytomine] project.
        reviewed: Reviewed annotations: exclude, include (a reviewed copy replaces the
            annotation it reviews) or only. Empty: the workspace's (exclude).
        label_by: When another user added a term: creator (the author's own term) or
            reviewer. Empty: the workspace's (creator).
        polygons: Polygon annotations: reject them, or take their centroid as a click.
        keep_unassigned: Keep clicks by readers not assigned the tile (open campaigns).
        host: Cytomine URL. Empty: CYTOMINE_HOST, then [cytomine] host.
        overrides: Any other setting, nested like histocurate.toml.
    """
    from histocurate.cytomine.stage import run_import

    with stage_run("import", workspace, overrides, campaign=project) as stage:
        run = run_import(
            stage.config,
            mapper=stage.mapper,
            progress=stage.progress,
            project=project,
            host=host,
            reviewed=reviewed,
            label_by=label_by,
            polygons=polygons,
            keep_unassigned=keep_unassigned,
        )
        return stage.finish(run, key="cytomine-import")


@stage_flow("push-consensus")
def push_consensus_flow(
    workspace: str,
    project: str | None = None,
    shape: PushShape | None = None,
    host: Host | None = None,
    overrides: dict[str, Any] | None = None,
) -> Any:
    """Write the campaign's consensus nuclei to Cytomine as a separate layer (idempotent).

    Args:
        workspace: Workspace folder (holds histocurate.toml) on the machine running the flow.
        project: Cytomine project name of the campaign. Empty: [cytomine] project.
        shape: polygons (the consensus outlines) or points (their centroids).
        host: Cytomine URL. Empty: CYTOMINE_HOST, then [cytomine] host.
        overrides: Any other setting, nested like histocurate.toml.
    """
    from histocurate.cytomine.push_stage import run_push_consensus

    with stage_run("push-consensus", workspace, overrides, campaign=project) as stage:
        run = run_push_consensus(stage.config, mapper=stage.mapper, project=project,
                                 shape=shape, host=host)  # fmt: skip
        return stage.finish(run, key="cytomine-push-consensus")
