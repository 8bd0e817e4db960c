"""`histocurate evaluate`: PQ/DQ/SQ and per-class F1 of predictions against a truth."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

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
from histocurate.errors import UserInputError


@app.command()
def evaluate(
    truth: Annotated[
        Path | None,
        typer.Option(
            help="Truth instance table (consensus.parquet or any with tile_id, "
            "polygon and/or x, y, label[, labels])."
        ),
    ] = None,
    pred: Annotated[Path | None, typer.Option(help="Prediction instance table.")] = None,
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
        Literal["auto", "masks", "points"] | None,
        typer.Option(
            help="Pair by masks (IoU) or points (distance); auto (default): masks when all "
            "rows have polygons."
        ),
    ] = None,
    multilabel: Annotated[
        Literal["each", "split"] | None,
        typer.Option(help="Nucleus with several labels, missed: FN for each label, or split."),
    ] = None,
    aggregate: Annotated[
        Literal["pooled", "tile_mean"] | None,
        typer.Option(help="DQ/SQ/PQ from counts pooled over tiles (default) or tile mean."),
    ] = None,
    extra_tiles: Annotated[
        Literal["error", "drop", "empty"] | None,
        typer.Option(
            help="Prediction tiles absent from the truth: error (default), drop them, or "
            "count them as tiles without true nuclei."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write the metrics table here (.parquet or .csv).")
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            help="A model (run name or checkpoint) to evaluate on --dataset; twice: side by "
            "side, with p-values. Predicts the dataset's tiles when needed."
        ),
    ] = None,
    dataset: Annotated[
        str | None, typer.Option(help="With --model: the dataset NAME or NAME@VERSION (its truth).")
    ] = None,
    fold: Annotated[
        int | None,
        typer.Option(help="With --model: evaluate this fold only (default: the held-out one)."),
    ] = None,
    workspace: WorkspaceOption = Path("."),
    prefect: PrefectOption = None,
) -> None:
    """Evaluate predictions against a truth: DQ, SQ, PQ and per-class F1 with 95% intervals.

    Pooled over tiles (sums of TP, FP, FN, IoU); intervals from bootstrap resamples of tiles.

    With --pred2: the paired difference (pred2 - pred) and its two-sided p-value.

    With --model and --dataset: models on a dataset, over all tiles and per indication
    (the paper's Table 2 and Figure 3a). --iou-threshold, --multilabel, --aggregate,
    --bootstrap and --seed apply there too; nuclei are paired by masks, and the options
    of instance tables (--truth, --pred, --pred2, --tile-size, --extra-tiles, --out,
    --radius, --match points) are refused.
    """
    if model or dataset:
        given = {
            "--truth": truth,
            "--pred": pred,
            "--pred2": pred2,
            "--tile-size": tile_size,
            "--extra-tiles": extra_tiles,
            "--out": out,
            "--radius": radius,
        }
        _refuse_for_models(given, match)
        section = {
            "iou_threshold": iou_threshold,
            "bootstrap": bootstrap,
            "seed": seed,
            "multilabel": multilabel,
            "aggregate": aggregate,
        }
        _evaluate_models(model or [], dataset, fold, section, workspace, prefect)
        return
    if fold is not None:
        raise UserInputError("--fold goes with --model and --dataset (a dataset's fold)")
    if truth is None or pred is None:
        raise UserInputError("give --truth and --pred (instance tables), or --model and --dataset")
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
        extra_tiles=extra_tiles or "error",
        aggregate=ev.aggregate,
        match=match or "auto",
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


# Why each option of instance tables cannot apply to `evaluate --model ... --dataset ...`.
_NOT_FOR_MODELS = {
    "--truth": "the dataset's nuclei are the truth",
    "--pred": "the models' predictions on the dataset are the predictions",
    "--pred2": "give a second --model instead",
    "--tile-size": "the tile size comes from the dataset's tiles",
    "--extra-tiles": "every tile of the dataset is evaluated (a tile without nuclei counts "
    "as one without true nuclei)",
    "--out": "the tables are written under reports/evaluate/models/",
    "--radius": "model predictions are paired with the dataset's nuclei by masks (IoU), "
    "not by centroid distance; use --iou-threshold",
}


def _refuse_for_models(given: dict[str, Any], match: str | None) -> None:
    """A clear error naming the first option of instance tables given with --model."""
    for option, value in given.items():
        if value is not None:
            raise UserInputError(
                f"{option} does not apply to --model/--dataset evaluation: "
                f"{_NOT_FOR_MODELS[option]}"
            )
    if match == "points":
        raise UserInputError(
            "--match points does not apply to --model/--dataset evaluation: model predictions "
            "are paired with the dataset's nuclei by masks (IoU); use --iou-threshold"
        )


def _evaluate_models(
    models: list[str],
    dataset: str | None,
    fold: int | None,
    section: dict[str, Any],
    workspace: Path,
    prefect: bool | None,
) -> None:
    """The --model branch: `histocurate.predict.evaluate.run_model_evaluation`, with the
    [evaluate] settings ``section`` (flags; None: not given) as overrides."""
    if not models or dataset is None:
        raise UserInputError("--model and --dataset go together (a model, and its truth)")
    from histocurate.cli.base import config_for
    from histocurate.predict.evaluate import run_model_evaluation

    overrides = flag_overrides({"evaluate": section})
    config = config_for(workspace, overrides)
    run = run_stage(
        "predict:evaluate_models_flow",
        prefect,
        lambda progress: run_model_evaluation(
            config, models=models, dataset=dataset, fold=fold, progress=progress
        ),
        workspace=str(config.workspace),
        models=models,
        dataset=dataset,
        overrides=overrides,
        fold=fold,
    )
    finish_run(run)
