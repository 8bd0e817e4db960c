"""`histocurate evaluate`: PQ/DQ/SQ and per-class F1 of predictions against a truth."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from histocurate.cli.base import (
    PrefectOption,
    WorkspaceOption,
    app,
    finish_run,
    flag_overrides,
    run_stage,
)
from histocurate.config import load_config


@app.command()
def evaluate(
    truth: Annotated[
        Path,
        typer.Option(
            help="Truth instance table (consensus.parquet or any with tile_id, "
            "polygon and/or x, y, label[, labels])."
        ),
    ],
    pred: Annotated[Path, typer.Option(help="Prediction instance table.")],
    pred2: Annotated[
        Path | None, typer.Option(help="Second prediction: paired comparison with p-values.")
    ] = None,
    tile_size: Annotated[
        int | None, typer.Option(min=1, help="Tile side in px (default: from the truth polygons).")
    ] = None,
    bootstrap: Annotated[
        int | None, typer.Option(min=0, help="Bootstrap resamples of tiles (1000; 0: none).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the resamples (0).")] = None,
    iou_threshold: Annotated[
        float | None, typer.Option(min=0.0, max=0.999, help="Pair when IoU exceeds this (0.5).")
    ] = None,
    radius: Annotated[
        float | None, typer.Option(min=0.0, help="Point matching: max distance, px (12; 6 at 20x).")
    ] = None,
    match: Annotated[
        Literal["auto", "masks", "points"],
        typer.Option(
            help="Pair by masks (IoU) or points (distance); auto: masks when all "
            "rows have polygons."
        ),
    ] = "auto",
    multilabel: Annotated[
        Literal["each", "split"] | None,
        typer.Option(help="Nucleus with several labels, missed: FN for each label, or split."),
    ] = None,
    aggregate: Annotated[
        Literal["pooled", "tile_mean"] | None,
        typer.Option(help="DQ/SQ/PQ from counts pooled over tiles (default) or tile mean."),
    ] = None,
    extra_tiles: Annotated[
        Literal["error", "drop", "empty"],
        typer.Option(
            help="Prediction tiles absent from the truth: error, drop them, or count "
            "them as tiles without true nuclei."
        ),
    ] = "error",
    out: Annotated[
        Path | None, typer.Option(help="Write the metrics table here (.parquet or .csv).")
    ] = None,
    workspace: WorkspaceOption = Path("."),
    prefect: PrefectOption = None,
) -> None:
    """Evaluate predictions against a truth: DQ, SQ, PQ and per-class F1 with 95% intervals.

    Pooled over tiles (sums of TP, FP, FN, IoU); intervals from bootstrap resamples of tiles.

    With --pred2: the paired difference (pred2 - pred) and its two-sided p-value.
    """
    from histocurate.metrics.evaluate import EvaluationOptions

    section = {
        "iou_threshold": iou_threshold,
        "match_radius_px": radius,
        "bootstrap": bootstrap,
        "seed": seed,
        "multilabel": multilabel,
        "aggregate": aggregate,
    }
    config = load_config(workspace, flag_overrides({"evaluate": section}), require_file=False)
    ev = config.evaluate
    options = EvaluationOptions(
        iou_threshold=ev.iou_threshold,
        radius=ev.match_radius_px,
        tile_size=tile_size,
        n_boot=ev.bootstrap,
        seed=ev.seed,
        confidence=ev.confidence,
        multilabel=ev.multilabel,
        extra_tiles=extra_tiles,
        aggregate=ev.aggregate,
        match=match,
    )
    preds = [pred] if pred2 is None else [pred, pred2]
    from histocurate.metrics.stage import run_evaluate

    run = run_stage(
        "evaluate:evaluate_flow",
        prefect,
        lambda progress: run_evaluate(truth=truth, predictions=preds, options=options, out=out),
        truth=str(truth),
        predictions=[str(p) for p in preds],
        options=options.__dict__,
        out=str(out) if out else None,
    )
    finish_run(run)
