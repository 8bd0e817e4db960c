"""Prefect flow of the dataset stage: one task per slide, the card and class plot as artifacts.

Thin wiring over `histocurate.dataset.build.run_dataset_build`: each slide's tiles are one
task (rasterise, encode, write a part of the staging folder); the plan (checks, folds,
version) and the assembly run in the flow. The report's body is the dataset card, so the
markdown artifact is the card, with the class distribution plot inline.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from flows._params import Count, settings
from flows._stage import stage_flow, stage_run
from histocurate.dataset.build import run_dataset_build

DatasetName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


@stage_flow("dataset")
def dataset_flow(
    workspace: str,
    name: DatasetName,
    project: str | None = None,
    source: Literal["consensus", "masks"] | None = None,
    folds: Count | None = None,
    seed: int | None = None,
    overrides: dict[str, Any] | None = None,
) -> Any:
    """Build dataset ``name`` from a campaign (a new version only when its inputs changed).

    Args:
        workspace: Workspace folder (holds histocurate.toml) on the machine running the flow.
        name: Dataset name (letters, digits, '.', '_', '-'): datasets/<name>/<version>/.
        project: Campaign (Cytomine project name). Empty: [cytomine] project, else the only
            campaign with clicks.
        source: consensus (validation sets: HistoVAL) or masks (one annotator per tile:
            HistoTRAIN). Empty: the workspace's [dataset] source.
        folds: Folds, stratified by cell type, grouped by slide. Empty: the workspace's (3).
        seed: Seed of the fold assignment. Empty: the workspace's (111).
        overrides: Any other setting, nested like histocurate.toml.
    """
    typed = settings({"dataset": {"folds": folds, "seed": seed}}, overrides)
    with stage_run("dataset", workspace, typed, campaign=project) as stage:
        run = run_dataset_build(stage.config, name=name, project=project, source=source,
                                mapper=stage.mapper, progress=stage.progress)  # fmt: skip
        return stage.finish(run, key=f"dataset-{name}")
