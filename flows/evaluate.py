"""Prefect flow of `histocurate evaluate`: the metrics as table and markdown artifacts.

Thin: one task evaluates (reads the tables by path, counts tile by tile, bootstraps) and
writes the table; the run's report carries the same tables as the terminal.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from flows._params import Aggregate, Amount, Count, ExtraTiles, Match, Multilabel, Threshold
from flows._stage import stage_flow, stage_run
from histocurate.metrics.evaluate import EvaluationOptions
from histocurate.metrics.stage import run_evaluate


@stage_flow("evaluate")
def evaluate_flow(
    truth: str,
    predictions: Annotated[list[str], Field(min_length=1, max_length=2)],
    iou_threshold: Threshold | None = None,
    radius: Annotated[float, Field(gt=0)] | None = None,
    tile_size: Count | None = None,
    n_boot: Amount | None = None,
    seed: int | None = None,
    multilabel: Multilabel | None = None,
    aggregate: Aggregate | None = None,
    match: Match | None = None,
    extra_tiles: ExtraTiles | None = None,
    options: dict[str, Any] | None = None,
    out: str | None = None,
) -> Any:
    """Evaluate one or two prediction tables against a truth (paths in, report out).

    Args:
        truth: Truth instance table (consensus.parquet or any with tile_id, polygon and/or
            x, y, label) on the machine running the flow.
        predictions: One prediction table, or two for a paired comparison with p-values.
        iou_threshold: Pair two nuclei when their IoU exceeds this (0.5).
        radius: Point matching: max centroid distance in px (12; 6 at 20x).
        tile_size: Tile side in px. Empty: from the truth polygons.
        n_boot: Bootstrap resamples of tiles (1000; 0: none).
        seed: Seed of the resamples (0).
        multilabel: A missed nucleus with several labels: FN for each label, or split.
        aggregate: DQ/SQ/PQ from counts pooled over tiles, or the tile mean (pooled).
        match: Pair by masks (IoU) or points (distance); auto: masks when every row has a
            polygon.
        extra_tiles: Prediction tiles absent from the truth: error, drop, or empty.
        options: Any other option of histocurate.metrics.evaluate.EvaluationOptions, e.g.
            {"confidence": 0.9}.
        out: Write the metrics table here (.parquet or .csv).
    """
    typed = {"iou_threshold": iou_threshold, "radius": radius, "tile_size": tile_size,
             "n_boot": n_boot, "seed": seed, "multilabel": multilabel, "aggregate": aggregate,
             "match": match, "extra_tiles": extra_tiles}  # fmt: skip
    opts = {**(options or {}), **{k: v for k, v in typed.items() if v is not None}}
    if isinstance(opts.get("weights"), list):
        opts["weights"] = tuple(opts["weights"])
    with stage_run("evaluate", None) as stage:
        run = run_evaluate(
            truth=truth,
            predictions=predictions,
            options=EvaluationOptions(**opts),
            out=out,
            mapper=stage.mapper,
        )
        return stage.finish(run, key="evaluation")
