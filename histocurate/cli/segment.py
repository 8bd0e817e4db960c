"""`histocurate segment`: every click of points.parquet becomes a nucleus mask."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from histocurate.cli.base import (
    PrefectOption,
    WorkspaceOption,
    app,
    config_for,
    console,
    flag_overrides,
    use_prefect,
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
    force: Annotated[bool, typer.Option("--force", help="Redo tiles already up to date.")] = False,
    prefect: PrefectOption = None,
) -> None:
    """Clicks to masks: points.parquet -> masks.parquet (one file per tile, resumable);
    overlays and summary in reports/segment/."""
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
    if use_prefect(prefect):
        from flows.segment import segment_flow

        summary = segment_flow(str(config.workspace), overrides, force=force)
        console.print(f"{summary['masks']} masks written ({summary['segmenter']})")
        return
    from histocurate.cli.base import progress_bar
    from histocurate.segment.stage import plan_segment, run_segment, segmenter_for

    seg = segmenter_for(config)
    pending = len(plan_segment(config, seg.name, force=force).pending)
    with progress_bar() as bar:
        task = bar.add_task(f"segmenting ({seg.name})", total=pending)
        run = run_segment(
            config, segmenter=seg, force=force, progress=lambda n: bar.advance(task, n)
        )
    console.print(
        f"{run.masks} masks in {len(run.tiles_done)} tile(s) by {run.segmenter} "
        f"({len(run.tiles_skipped)} up to date, {len(run.tiles_removed)} stale removed) "
        f"in {run.seconds:.1f} s; {run.fallback} click(s) fell back to a disc, "
        f"{run.merged} marked a nucleus already clicked"
    )
    if run.outside:
        console.print(f"[yellow]{len(run.outside)} click(s) outside their tile left out[/]")
    if run.tiles_missing:
        console.print(
            f"[yellow]{len(run.tiles_missing)} tile(s) of points.parquet not in the tiles table: "
            f"{', '.join(run.tiles_missing[:5])}[/]"
        )
