"""`histocurate consensus`: match annotators' masks into nuclei, vote labels, report agreement."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.table import Table

from histocurate.cli.base import (
    PrefectOption,
    WorkspaceOption,
    app,
    config_for,
    console,
    flag_overrides,
    use_prefect,
)


class LabelRuleChoice(StrEnum):
    majority = "majority"
    dawid_skene = "dawid-skene"


def _rich(frame: pd.DataFrame, title: str) -> Table:
    table = Table(*map(str, frame.columns), title=title)
    for row in frame.itertuples(index=False):
        table.add_row(
            *(f"{v:.3f}" if isinstance(v, float) else ("" if v is None else str(v)) for v in row)
        )
    return table


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
    prefect: PrefectOption = None,
) -> None:
    """Consensus of the annotators: masks.parquet -> consensus.parquet, QuPath GeoJSON,
    overlays and the agreement report (reports/consensus/)."""
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
    if use_prefect(prefect):
        from flows.consensus import consensus_flow

        summary = consensus_flow(str(config.workspace), overrides, segment=False)
        console.print(f"{summary['nuclei']} consensus nuclei written to {summary['table']}")
        return
    from histocurate.consensus.stage import run_consensus

    with console.status("matching masks, voting labels, re-segmenting"):
        run = run_consensus(config)
    report = run.report
    for key, value in report.summary.items():
        console.print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
    console.print(_rich(report.per_annotator, "per annotator"))
    console.print(_rich(report.pairwise, "pairwise Cohen's kappa (typed votes on shared nuclei)"))
    console.print(_rich(report.fleiss, "Fleiss' kappa per tile set"))
    console.print(_rich(report.dropped, "annotations in no consensus nucleus, per type"))
    if report.single_annotator_tiles:
        console.print(
            f"[yellow]{len(report.single_annotator_tiles)} tile(s) with one annotator: no "
            f"consensus possible ({', '.join(report.single_annotator_tiles[:10])})[/]"
        )
    if run.tiles_without_pixels:
        console.print(
            f"[yellow]{len(run.tiles_without_pixels)} tile(s) without readable pixels kept "
            "their members' masks[/]"
        )
    console.print(
        f"{len(run.nuclei)} nuclei ({run.resegmented} re-segmented) -> {run.table}; "
        f"{len(run.geojson)} GeoJSON, {len(run.overlays)} overlays; report: "
        f"{config.workspace / 'reports' / 'consensus' / 'agreement.md'}"
    )
