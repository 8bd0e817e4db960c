"""`histocurate predict`: CellViT inference on dataset tiles and whole slides."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from histocurate.cli.base import (
    PrefectOption,
    WorkspaceOption,
    app,
    config_for,
    failure_summary,
    finish_run,
    flag_overrides,
    run_stage,
)

if TYPE_CHECKING:
    from histocurate.predict.stage import PredictRun


@app.command()
def predict(
    checkpoint: Annotated[
        str,
        typer.Option(
            help="Checkpoint file (ours or a bare HistoPLUS state dict), or a run name in runs/."
        ),
    ],
    dataset: Annotated[
        str | None,
        typer.Option(help="Dataset NAME or NAME@VERSION: predict its tiles (stored beside it)."),
    ] = None,
    slides: Annotated[
        str | None,
        typer.Option(help="Slide ids, comma-separated (default: every slide with tiles)."),
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="auto (cuda when present), cpu, cuda, cuda:N.")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Windows per batch (8).")] = None,
    precision: Annotated[
        Literal["auto", "bf16", "fp16", "fp32"] | None,
        typer.Option(help="auto: bf16 on a GPU that has it, fp32 on CPU."),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=0, help="Post-processing processes (CPUs - 1; 0: none).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Redo predictions up to date.")] = False,
    workspace: WorkspaceOption = Path("."),
    prefect: PrefectOption = None,
) -> None:
    """Find and type the nuclei of whole slides (overlapping windows over the tissue tiles,
    stitched) or of a dataset's tiles.

    Per slide: predictions/<model>/cells.parquet/<slide>.parquet, QuPath GeoJSON, a
    histoplus cell_masks.json, counts and densities per type, a thumbnail. A dataset's
    prediction goes to datasets/<name>/<version>/predictions/<model>/cells.parquet, ready for
    `histocurate evaluate --model ... --dataset ...`. Slides up to date are skipped;
    predictions older than the checkpoint are redone.
    """
    section = {"device": device, "batch_size": batch_size, "precision": precision,
               "workers": workers}  # fmt: skip
    overrides = flag_overrides({"predict": section})
    config = config_for(workspace, overrides)
    ids = [s.strip() for s in slides.split(",") if s.strip()] if slides else None
    from histocurate.predict.stage import run_predict

    run = run_stage(
        "predict:predict_flow",
        prefect,
        lambda progress: run_predict(
            config,
            checkpoint=checkpoint,
            dataset=dataset,
            slides=ids,
            progress=progress,
            force=force,
        ),
        workspace=str(config.workspace),
        checkpoint=checkpoint,
        dataset=dataset,
        slides=ids,
        overrides=overrides,
        force=force,
    )
    finish_run(run, predict_failure_summary)


def predict_failure_summary(run: PredictRun) -> str:
    """The last line of a run where some slides (or the dataset) failed: the shared
    `failure_summary`, in predict's words."""
    if run.dataset:  # one item: it failed
        return "the dataset failed; no prediction was written"
    return failure_summary(run, unit="slide", nothing="no prediction was written")
