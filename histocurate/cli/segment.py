"""`histocurate segment`: every click of a campaign becomes a nucleus mask."""

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


class SegmenterChoice(StrEnum):
    auto = "auto"
    nuclick = "nuclick"
    watershed = "watershed"


@app.command()
def segment(
    workspace: WorkspaceOption = Path("."),
    segmenter: Annotated[
        SegmenterChoice | None,
        typer.Option(help="nuclick (needs --checkpoint), watershed (no weights), or auto."),
    ] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="NuClick weights (ours, or the public PyTorch layout).")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="Torch device (auto: cuda if present).")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="NuClick patches per forward (64).")
    ] = None,
    project: ProjectOption = None,
    force: Annotated[bool, typer.Option("--force", help="Redo tiles already up to date.")] = False,
    prefect: PrefectOption = None,
) -> None:
    """Clicks to masks: a campaign's clicks (points.parquet) -> campaigns/<project>/
    masks.parquet (one file per tile, resumable), drawn on the exported pixels; overlays and
    summary in campaigns/<project>/reports/segment/."""
    overrides = flag_overrides(
        {
            "segment": {
                "segmenter": segmenter.value if segmenter else None,
                "checkpoint": checkpoint.resolve() if checkpoint else None,
                "device": device,
                "batch_size": batch_size,
            }
        }
    )
    config = config_for(workspace, overrides)
    from histocurate.segment.stage import run_segment

    run = run_stage(
        "segment:segment_flow",
        prefect,
        lambda progress: run_segment(config, project=project, progress=progress, force=force),
        workspace=str(config.workspace),
        project=project,
        overrides=overrides,
        force=force,
    )
    finish_run(run)
