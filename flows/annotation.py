"""Prefect flows of the Cytomine stages: export a campaign, import its annotations.

The network work is one task per stage (the Cytomine client is a process-wide singleton,
so there is nothing to run side by side), retried by Prefect when it fails for a reason
other than bad input. Both stages are idempotent, so a retry resumes where it stopped.
Run reports: a table artifact per import (new / changed / deleted / rejected per
annotator) and a link artifact to the Cytomine project. No key ever reaches a parameter,
a result or an artifact: the tasks read them from the environment or Secret blocks.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from histocurate.config import load_config
from histocurate.errors import UserInputError


def _retry_unless_bad_input(task: Any, task_run: Any, state: Any) -> bool:
    """Retry network and server failures; never retry what the user must fix."""
    try:
        state.result()
    except UserInputError:
        return False
    except Exception:
        return True
    return False


@task(
    name="cytomine-export",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=10,
    retry_condition_fn=_retry_unless_bad_input,
)
def export_task(workspace: str, options: dict[str, Any]) -> dict[str, Any]:
    from pathlib import Path

    from histocurate.cytomine.stage import run_export

    config = load_config(workspace)
    selection = options.pop("selection", None)
    result = run_export(config, selection=Path(selection) if selection else None, **options)
    return {
        "project": result.project_name,
        "project_id": result.project_id,
        "created": result.project_created,
        "uploaded": len(result.uploaded),
        "already_there": len(result.already_there),
        "members_added": result.members_added,
        "assignments": len(result.assignments),
        "retries": result.retries,
    }


@task(
    name="cytomine-import",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=10,
    retry_condition_fn=_retry_unless_bad_input,
)
def import_task(workspace: str, project: str | None, host: str | None) -> dict[str, Any]:
    from histocurate.cytomine.stage import run_import

    result = run_import(load_config(workspace), project=project, host=host)
    return {
        "project": result.project,
        "project_id": result.project_id,
        "images": result.images,
        "annotations": result.annotations,
        "written": result.written,
        "totals": result.totals,
        "per_annotator": result.counts.to_dict(orient="records"),
        "reject_reasons": result.reject_reasons,
        "retries": result.retries,
    }


def _link(workspace: str, host: str | None, project_id: int, name: str) -> None:
    import os

    from histocurate.cytomine.credentials import ENV_HOST
    from histocurate.cytomine.stage import project_url

    base = host or os.environ.get(ENV_HOST) or load_config(workspace).cytomine.host
    if base:
        base = base if base.startswith(("http://", "https://")) else f"http://{base}"
        create_link_artifact(
            key="cytomine-project",
            link=project_url(base, project_id),
            link_text=f"Cytomine project {name}",
            description="The campaign on Cytomine",
        )


@flow(name="cytomine-export", log_prints=True)
def export_flow(
    workspace: str,
    selection: str | None = None,
    project: str | None = None,
    annotators: list[str] | None = None,
    k: int | None = None,
    host: str | None = None,
) -> dict[str, Any]:
    """Export the selection to a Cytomine project (adds only what is missing)."""
    options = {"selection": selection, "project": project, "annotators": annotators, "k": k}
    summary = export_task(workspace, {**options, "host": host})
    create_table_artifact(
        key="cytomine-export",
        table=[{k: v for k, v in summary.items() if k != "members_added"}],
        description="What the export did",
    )
    _link(workspace, host, summary["project_id"], summary["project"])
    return summary


@flow(name="cytomine-import", log_prints=True)
def import_flow(
    workspace: str, project: str | None = None, host: str | None = None
) -> dict[str, Any]:
    """Import the project's point annotations into points.parquet (incremental)."""
    summary = import_task(workspace, project, host)
    create_table_artifact(
        key="cytomine-import",
        table=summary["per_annotator"],
        description="Points per annotator: new / changed / deleted / rejected in this import",
    )
    reasons = summary["reject_reasons"]
    create_markdown_artifact(
        key="cytomine-import-report",
        markdown=(
            f"# Import of {summary['project']}\n\n{summary['annotations']} annotations on "
            f"{summary['images']} images; totals {summary['totals']}.\n\n"
            + (
                "Rejected: " + ", ".join(f"{k}: {v}" for k, v in reasons.items())
                if reasons
                else "No rejects."
            )
            + ("\n\nTables rewritten." if summary["written"] else "\n\nNo change: nothing written.")
        ),
        description="Import run report",
    )
    _link(workspace, host, summary["project_id"], summary["project"])
    return summary
