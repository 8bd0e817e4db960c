"""`histocurate consensus`: match annotators' masks into nuclei, vote labels, report agreement."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from histocurate.cli.base import (
    PrefectOption,
    ProjectOption,
    WorkspaceOption,
    app,
    config_for,
    finish_run,
    flag_overrides,
    run_stage,
)


class LabelRuleChoice(StrEnum):
    majority = "majority"
    dawid_skene = "dawid-skene"


@app.command()
def consensus(
    workspace: WorkspaceOption = Path("."),
    iou_threshold: Annotated[
        float | None, typer.Option(help="Masks match when IoU exceeds this (0.4).")
    ] = None,
    min_annotators: Annotated[
        int | None, typer.Option(help="Keep nuclei found by at least this many annotators (2).")
    ] = None,
    label_rule: Annotated[
        LabelRuleChoice | None,
        typer.Option(help="Rule for the label column; both are always reported (majority)."),
    ] = None,
    resegment: Annotated[
        bool | None,
        typer.Option(
            "--resegment/--no-resegment",
            help="Re-segment consensus centroids with the configured segmenter (yes).",
            show_default=False,
        ),
    ] = None,
    overlays: Annotated[
        int | None, typer.Option(help="Overlay PNGs for at most this many tiles (25).")
    ] = None,
    project: ProjectOption = None,
    force: Annotated[bool, typer.Option("--force", help="Redo even when up to date.")] = False,
    prefect: PrefectOption = None,
) -> None:
    """Consensus of a campaign's annotators: its masks -> campaigns/<project>/
    consensus.parquet, QuPath GeoJSON, overlays and the agreement report (reports/consensus/
    in the campaign folder). Does nothing when nothing changed since the last run."""
    overrides = flag_overrides(
        {
            "consensus": {
                "iou_threshold": iou_threshold,
                "min_annotators": min_annotators,
                "label_rule": label_rule.value if label_rule else None,
                "resegment": resegment,
                "overlays": overlays,
            }
        }
    )
    config = config_for(workspace, overrides)
    from histocurate.consensus.stage import run_consensus

    run = run_stage(
        "consensus:consensus_flow",
        prefect,
        lambda progress: run_consensus(config, project=project, progress=progress, force=force),
        workspace=str(config.workspace),
        project=project,
        overrides=overrides,
        force=force,
    )
    finish_run(run)
