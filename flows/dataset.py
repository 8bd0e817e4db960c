"""Prefect flow of the dataset stage: one task per slide, the card and class plot as artifacts.

Thin wiring over `histocurate.dataset.build.run_dataset_build`: each slide's tiles are one
task (rasterise, encode, write a part of the staging folder); the plan (checks, folds,
version) and the assembly run in the flow. The report's body is the dataset card, so the
markdown artifact is the card, with the class distribution plot inline.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows._stage import finish, task_mapper
from histocurate.config import load_config
from histocurate.dataset.build import run_dataset_build


@flow(name="dataset-build", log_prints=True)
def dataset_flow(
    workspace: str,
    name: str,
    project: str | None = None,
    source: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> Any:
    """Build dataset ``name`` from a campaign (a new version only when its inputs changed)."""
    config = load_config(workspace, overrides or {})
    run = run_dataset_build(
        config, name=name, project=project, source=source, mapper=task_mapper("dataset")
    )
    return finish(run, key=f"dataset-{name}")
